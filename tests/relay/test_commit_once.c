/* A committed event reaches Redis exactly once (crash-free), as a valid
 * CloudEvents 1.0 document whose id, type, subject and data match. */
#include "relay_common.h"

int main(void)
{
    RELAY_TEST_OPEN("relay_commit_once");
    const char *stream = tu_unique("orders");

    char err[512], id[OUTBOX_UUID_STRLEN + 1];
    PQclear(tu_exec(c, "BEGIN"));
    outbox_event_t ev = {.topic = stream,
                         .type = "OrderCreated",
                         .key = "order-1",
                         .payload = "{\"order_id\":\"order-1\",\"amount\":1000}",
                         .traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"};
    CHECK(outbox_enqueue(c, &ev, id, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    CHECK(outbox_uuid_valid(id) && id[14] == '7', "generated id %s is not a v7 UUID", id);
    PQclear(tu_exec(c, "COMMIT"));

    outbox_relay_t *relay = outbox_relay_new(relay_conf(ci, host, port), err, sizeof(err));
    CHECK(relay, "%s", err);
    CHECK(outbox_relay_start(relay, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    wait_drained(c, 20000);
    tu_sleep_ms(300); /* give a wrong second publish the chance to show */
    outbox_relay_destroy(relay);

    redisReply *rep = redisCommand(r, "XRANGE %s - +", stream);
    CHECK(rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 1, "want 1 entry, got %zu",
          rep ? rep->elements : 0);
    redisReply *f = rep->element[0]->element[1];
    const char *doc = NULL;
    size_t len = 0;
    for (size_t j = 0; j + 1 < f->elements; j += 2)
        if (!strcmp(f->element[j]->str, "event")) {
            doc = f->element[j + 1]->str;
            len = f->element[j + 1]->len;
        }
    CHECK(doc, "no event field");
    outbox_envelope_t env;
    CHECK(outbox_envelope_parse(doc, len, &env, err, sizeof(err)) == OUTBOX_OK, "%s: %s", err, doc);
    CHECK(!strcmp(env.id, id), "id %s != %s", env.id, id);
    CHECK(!strcmp(env.type, "OrderCreated") && !strcmp(env.subject, "order-1") &&
              !strcmp(env.partitionkey, "order-1"),
          "attributes wrong: %s", doc);
    CHECK(env.time && strlen(env.time) >= 20 && env.time[strlen(env.time) - 1] == 'Z', "time: %s",
          env.time);
    CHECK(env.traceparent && !strcmp(env.traceparent, ev.traceparent), "traceparent not carried");
    CHECK(!strcmp(env.data, "{\"order_id\":\"order-1\",\"amount\":1000}"), "data: %s", env.data);
    CHECK(strstr(doc, "\"specversion\":\"1.0\"") &&
              strstr(doc, "\"datacontenttype\":\"application/json\""),
          "envelope: %s", doc);
    outbox_envelope_term(&env);
    freeReplyObject(rep);
    CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox") == 0, "delivered row not removed");
    redisFree(r);
    PQfinish(c);
    printf("PASS relay_commit_publishes_once: event %s published once as CloudEvents 1.0\n", id);
    return 0;
}
