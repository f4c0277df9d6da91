/* CloudEvents envelope: build → parse round trip, required attributes,
 * exact member set, bad payloads and bad documents. */
#include <jansson.h>
#include <string.h>

#include "core/message.h"
#include "outbox/envelope.h"
#include "testutil.h"

int main(void)
{
    outbox_msg_t m;
    memset(&m, 0, sizeof(m));
    snprintf(m.id, sizeof(m.id), "%s", "0190b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b");
    m.topic = "orders";
    m.type = "OrderCreated";
    m.key = "order-42";
    m.source = "/orders-service";
    m.payload = "{\"order_id\":\"order-42\",\"amount\":1000,\"items\":[{\"sku\":\"SKU-1\",\"quantity\":2}]}";
    m.time = "2026-11-22T10:00:00.123456Z";
    m.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    char err[256];
    size_t len = 0;
    char *doc = outbox__envelope_build(&m, &len, err, sizeof(err));
    CHECK(doc, "build failed: %s", err);
    CHECK(len == strlen(doc), "length mismatch");

    json_error_t jerr;
    json_t *o = json_loads(doc, 0, &jerr);
    CHECK(o && json_is_object(o), "not a JSON object: %s", doc);
    const char *want[][2] = {{"specversion", "1.0"},           {"id", m.id},
                             {"source", "/orders-service"},    {"type", "OrderCreated"},
                             {"subject", "order-42"},          {"time", m.time},
                             {"datacontenttype", "application/json"}, {"partitionkey", "order-42"},
                             {"traceparent", m.traceparent}};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const char *v = json_string_value(json_object_get(o, want[i][0]));
        CHECK(v && !strcmp(v, want[i][1]), "attribute %s = %s, want %s", want[i][0], v ? v : "(missing)", want[i][1]);
    }
    CHECK(json_object_size(o) == 10, "unexpected members: %zu in %s", json_object_size(o), doc);
    json_t *data = json_object_get(o, "data");
    CHECK(json_is_object(data) && json_integer_value(json_object_get(data, "amount")) == 1000,
          "data not embedded as JSON: %s", doc);
    json_decref(o);

    outbox_envelope_t env;
    CHECK(outbox_envelope_parse(doc, len, &env, err, sizeof(err)) == OUTBOX_OK, "parse: %s", err);
    CHECK(!strcmp(env.id, m.id) && !strcmp(env.type, "OrderCreated") && !strcmp(env.subject, "order-42"),
          "round trip lost attributes");
    CHECK(!strcmp(env.data, m.payload), "data changed in round trip: %s", env.data);
    CHECK(!strcmp(env.traceparent, m.traceparent), "traceparent lost");
    outbox_envelope_term(&env);
    outbox_envelope_term(&env); /* twice is safe */
    free(doc);

    /* No traceparent → member absent; default source. */
    m.traceparent = NULL;
    m.source = NULL;
    doc = outbox__envelope_build(&m, &len, err, sizeof(err));
    CHECK(doc && !strstr(doc, "traceparent") && strstr(doc, "\"source\":\"/outbox\""), "defaults: %s", doc);
    free(doc);

    /* Non-object payloads are valid JSON data too. */
    m.payload = "[1,2,3]";
    doc = outbox__envelope_build(&m, &len, err, sizeof(err));
    CHECK(doc && strstr(doc, "\"data\":[1,2,3]"), "array payload: %s", doc ? doc : err);
    free(doc);

    /* Invalid payload → NULL with a reason naming the event. */
    m.payload = "{not json";
    CHECK(outbox__envelope_build(&m, &len, err, sizeof(err)) == NULL, "accepted bad payload");
    CHECK(strstr(err, m.id) != NULL, "error does not name the event: %s", err);

    /* Parser rejects what is not CloudEvents 1.0. */
    const char *bad[] = {
        "",
        "[]",
        "{\"specversion\":\"0.3\",\"id\":\"0190b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b\",\"source\":\"/x\",\"type\":\"T\"}",
        "{\"specversion\":\"1.0\",\"id\":\"not-a-uuid\",\"source\":\"/x\",\"type\":\"T\"}",
        "{\"specversion\":\"1.0\",\"id\":\"0190b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b\",\"type\":\"T\"}",
        "{\"specversion\":\"1.0\",\"id\":\"0190b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b\",\"source\":\"/x\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        outbox_err_t e = outbox_envelope_parse(bad[i], strlen(bad[i]), &env, err, sizeof(err));
        CHECK(e == OUTBOX_ERR_INVALID_ARG, "bad document %zu accepted: %s", i, bad[i]);
        CHECK(err[0], "no error message for bad document %zu", i);
    }
    printf("PASS unit_envelope\n");
    return 0;
}
