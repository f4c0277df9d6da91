/* CloudEvents envelope: build → parse round trip, required attributes,
 * exact member set and order, payloads carried byte for byte (decimals,
 * big integers, 1e400, -0.0, \u0000), bad payloads and bad documents. */
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
    m.payload = "{\"order_id\":\"order-42\",\"amount\":1000,\"items\":[{\"sku\":\"SKU-1\","
                "\"quantity\":2}]}";
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
    const char *want[][2] = {{"specversion", "1.0"},
                             {"id", m.id},
                             {"source", "/orders-service"},
                             {"type", "OrderCreated"},
                             {"subject", "order-42"},
                             {"time", m.time},
                             {"datacontenttype", "application/json"},
                             {"partitionkey", "order-42"},
                             {"traceparent", m.traceparent}};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const char *v = json_string_value(json_object_get(o, want[i][0]));
        CHECK(v && !strcmp(v, want[i][1]), "attribute %s = %s, want %s", want[i][0],
              v ? v : "(missing)", want[i][1]);
    }
    CHECK(json_object_size(o) == 10, "unexpected members: %zu in %s", json_object_size(o), doc);
    json_t *data = json_object_get(o, "data");
    CHECK(json_is_object(data) && json_integer_value(json_object_get(data, "amount")) == 1000,
          "data not embedded as JSON: %s", doc);
    json_decref(o);

    outbox_envelope_t env;
    CHECK(outbox_envelope_parse(doc, len, &env, err, sizeof(err)) == OUTBOX_OK, "parse: %s", err);
    CHECK(!strcmp(env.id, m.id) && !strcmp(env.type, "OrderCreated") &&
              !strcmp(env.subject, "order-42"),
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
    CHECK(doc && !strstr(doc, "traceparent") && strstr(doc, "\"source\":\"/outbox\""),
          "defaults: %s", doc);
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

    /* Payloads are carried as written: never parsed into numbers and
     * re-encoded. Build splices them in (whitespace outside strings
     * dropped); parse hands back the data member's text. */
    static const struct {
        const char *payload, *want;
    } faithful[] = {
        {"0.1", "0.1"},
        {"19.99", "19.99"},
        {"123456789012345678901234567890", "123456789012345678901234567890"},
        {"-123456789012345678901234567890.000000000000000000001",
         "-123456789012345678901234567890.000000000000000000001"},
        {"1e400", "1e400"},
        {"-0.0", "-0.0"},
        {"\"a\\u0000b\"", "\"a\\u0000b\""},
        {"{\"price\":19.99,\"qty\":0.1,\"big\":18446744073709551616}",
         "{\"price\":19.99,\"qty\":0.1,\"big\":18446744073709551616}"},
        {"{\"a\":[1,{\"b\":[true,false,null,\"\\ud83d\\ude00\"]}],\"c\":{\"d\":-1.5E-3}}",
         "{\"a\":[1,{\"b\":[true,false,null,\"\\ud83d\\ude00\"]}],\"c\":{\"d\":-1.5E-3}}"},
        {" \n{ \"x\" : [ 1 , 2.50 ] ,\r\n\t\"s\" : \"a  b\\t\\\"}\" } \n",
         "{\"x\":[1,2.50],\"s\":\"a  b\\t\\\"}\"}"},
        {"\"caf\xc3\xa9 \xe2\x82\xac\"", "\"caf\xc3\xa9 \xe2\x82\xac\""},
        {"[]", "[]"},
        {"{}", "{}"},
    };
    m.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for (size_t i = 0; i < sizeof(faithful) / sizeof(faithful[0]); i++) {
        m.payload = faithful[i].payload;
        doc = outbox__envelope_build(&m, &len, err, sizeof(err));
        CHECK(doc, "payload %s refused: %s", m.payload, err);
        char tail[512];
        snprintf(tail, sizeof(tail), ",\"data\":%s}", faithful[i].want);
        CHECK(len == strlen(doc) && len > strlen(tail) && !strcmp(doc + len - strlen(tail), tail),
              "payload %s not carried verbatim: %s", m.payload, doc);
        const char *head = "{\"specversion\":\"1.0\",\"id\":\"";
        CHECK(!strncmp(doc, head, strlen(head)) &&
                  strstr(doc,
                         "\"datacontenttype\":\"application/json\",\"partitionkey\":\"order-42\","
                         "\"traceparent\":"),
              "member order changed: %s", doc);
        CHECK(outbox_envelope_parse(doc, len, &env, err, sizeof(err)) == OUTBOX_OK, "parse %s: %s",
              doc, err);
        CHECK(!strcmp(env.data, faithful[i].want), "parse changed data of %s: %s", m.payload,
              env.data);
        CHECK(!strcmp(env.id, m.id) && !strcmp(env.type, m.type) &&
                  !strcmp(env.partitionkey, m.key),
              "attributes lost next to payload %s", m.payload);
        outbox_envelope_term(&env);
        free(doc);
    }

    /* Parse gives the data member's text as it stands in any producer's
     * document: inner whitespace kept, wherever the member is, whatever the
     * spelling of its name. */
    static const struct {
        const char *doc, *want;
    } parsed[] = {
        {"{ \"data\" : { \"n\" : 0.1 , \"m\" : [ 1e400 ] } , "
         "\"specversion\":\"1.0\",\"type\":\"T\",\"source\":\"/x\","
         "\"id\":\"0190b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b\" }\n",
         "{ \"n\" : 0.1 , \"m\" : [ 1e400 ] }"},
        {"{\"specversion\":\"1.0\",\"type\":\"T\",\"source\":\"/"
         "x\",\"id\":\"0190b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b\","
         "\"d\\u0061ta\":123456789012345678901234567890}",
         "123456789012345678901234567890"},
        {"{\"specversion\":\"1.0\",\"type\":\"T\",\"source\":\"/"
         "x\",\"id\":\"0190b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b\"}",
         "null"},
    };
    for (size_t i = 0; i < sizeof(parsed) / sizeof(parsed[0]); i++) {
        CHECK(outbox_envelope_parse(parsed[i].doc, strlen(parsed[i].doc), &env, err, sizeof(err)) ==
                  OUTBOX_OK,
              "parse %s: %s", parsed[i].doc, err);
        CHECK(!strcmp(env.data, parsed[i].want), "data %s, want %s", env.data, parsed[i].want);
        CHECK(!strcmp(env.type, "T") && !strcmp(env.source, "/x"), "attributes of %s",
              parsed[i].doc);
        outbox_envelope_term(&env);
    }

    /* Truly invalid payloads are still refused, with the event, the reason
     * and the byte offset. */
    static const struct {
        const char *payload, *reason;
    } invalid[] = {
        {"", "byte 0"},         {"{\"a\":1,}", "byte 7"},
        {"[1,2", "byte 4"},     {"01", "byte 1"},
        {"1.", "byte 2"},       {"-", "byte 1"},
        {"1e+", "byte 3"},      {"NaN", "byte 0"},
        {"{'a':1}", "byte 1"},  {"\"tab\there\"", "byte 4"},
        {"\"\\x\"", "byte 2"},  {"\"\\u12G4\"", "byte 5"},
        {"\"\xff\"", "byte 1"}, {"\"\xc0\xaf\"", "byte 1"},
        {"[1] [2]", "byte 4"},  {"{\"a\" 1}", "byte 5"},
    };
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        m.payload = invalid[i].payload;
        err[0] = '\0';
        doc = outbox__envelope_build(&m, &len, err, sizeof(err));
        CHECK(!doc, "invalid payload %zu accepted: %s", i, doc);
        CHECK(strstr(err, m.id) && strstr(err, "not valid JSON") && strstr(err, invalid[i].reason),
              "payload %zu (%s): error %s does not say '%s'", i, m.payload, err, invalid[i].reason);
    }

    /* payload_len, when set, is the payload's length: nothing past it is
     * read, and a NUL byte inside it is not JSON. */
    m.payload = "[1,2]garbage";
    m.payload_len = 5;
    doc = outbox__envelope_build(&m, &len, err, sizeof(err));
    CHECK(doc && !strcmp(doc + len - strlen(",\"data\":[1,2]}"), ",\"data\":[1,2]}"),
          "payload_len ignored: %s", doc ? doc : err);
    free(doc);
    m.payload = "[1]\0[2]";
    m.payload_len = 7;
    CHECK(!outbox__envelope_build(&m, &len, err, sizeof(err)) && strstr(err, "byte 3"),
          "NUL byte inside payload_len accepted: %s", err);
    m.payload_len = 0;

    /* Attributes are unescaped as JSON strings; members may be written with
     * escapes and in any order; members it does not know are skipped. */
    const char *escaped = "{\"t\\u0079pe\":\"Order\\u00e9 \\\"x\\\"\",\"extra\":[{\"id\":1}],"
                          "\"source\":\"\\/inv\",\"id\":\"0190b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b\","
                          "\"specversion\":\"1.0\",\"traceparent\":null,\"time\":7}";
    CHECK(outbox_envelope_parse(escaped, strlen(escaped), &env, err, sizeof(err)) == OUTBOX_OK,
          "escaped attributes: %s", err);
    CHECK(!strcmp(env.type, "Order\xc3\xa9 \"x\"") && !strcmp(env.source, "/inv") &&
              !env.traceparent && !env.time && !strcmp(env.data, "null"),
          "escaped attributes read as type=%s source=%s", env.type, env.source);
    outbox_envelope_term(&env);

    /* Parser rejects what is not CloudEvents 1.0. */
    const char *bad[] = {
        "",
        "[]",
        "{\"specversion\":\"0.3\",\"id\":\"0190b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b\",\"source\":\"/"
        "x\",\"type\":\"T\"}",
        "{\"specversion\":\"1.0\",\"id\":\"not-a-uuid\",\"source\":\"/x\",\"type\":\"T\"}",
        "{\"specversion\":\"1.0\",\"id\":\"0190b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b\",\"type\":\"T\"}",
        "{\"specversion\":\"1.0\",\"id\":\"0190b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b\",\"source\":\"/"
        "x\"}",
        /* two data members: which one would a consumer get? */
        "{\"specversion\":\"1.0\",\"id\":\"0190b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b\",\"source\":\"/"
        "x\",\"type\":\"T\","
        "\"data\":1,\"data\":2}",
        /* data not JSON */
        "{\"specversion\":\"1.0\",\"id\":\"0190b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b\",\"source\":\"/"
        "x\",\"type\":\"T\","
        "\"data\":01}",
        "{\"specversion\":\"1.0\",\"id\":\"0190b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b\",\"source\":\"/"
        "x\",\"type\":\"T\"} x",
        /* a NUL inside an attribute: a C string would end there */
        "{\"specversion\":\"1.0\",\"id\":\"0190b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b\",\"source\":\"/"
        "x\",\"type\":\"T\\u0000rusted\"}",
        /* a lone surrogate is no UTF-8 text */
        "{\"specversion\":\"1.0\",\"id\":\"0190b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b\",\"source\":\"/"
        "x\",\"type\":\"\\ud800\"}",
        /* two ids: which event is it? */
        "{\"specversion\":\"1.0\",\"id\":\"0190b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b\",\"source\":\"/"
        "x\",\"type\":\"T\",\"id\":\"0190b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7c\"}",
        /* id not a string */
        "{\"specversion\":\"1.0\",\"id\":1,\"source\":\"/x\",\"type\":\"T\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        outbox_err_t e = outbox_envelope_parse(bad[i], strlen(bad[i]), &env, err, sizeof(err));
        CHECK(e == OUTBOX_ERR_INVALID_ARG, "bad document %zu accepted: %s", i, bad[i]);
        CHECK(err[0], "no error message for bad document %zu", i);
    }
    printf("PASS unit_envelope\n");
    return 0;
}
