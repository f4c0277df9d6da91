/* The order system's consumers answer with the consumer contract: an
 * OrderCreated that can never be applied (no order id as subject, data that
 * is not a JSON object) is rejected by both the inventory and the email
 * consumer -> one dead letter per group at once (reason "rejected", the
 * handler's reason in last_error), visible through outboxctl consumer-dlq;
 * the next, valid order flows through (nothing stalled). */
#include <hiredis/hiredis.h>
#include <string.h>
#include <unistd.h>

#include "orders_testlib.h"

int main(void)
{
    svc_t s;
    svc_start(&s, "consumer_orders_reject", NULL);
    PGconn *db = tu_connect(s.db);

    /* A malformed OrderCreated written straight into the stream. */
    char bad_id[40], doc[512];
    outbox_uuid_v7(bad_id);
    snprintf(doc, sizeof(doc),
             "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"/orders\",\"type\":"
             "\"OrderCreated\",\"subject\":\"not-an-order-id\",\"datacontenttype\":"
             "\"application/json\",\"data\":[1,2,3]}",
             bad_id);
    const char *colon = strrchr(s.redis_addr, ':');
    char host[64];
    snprintf(host, sizeof(host), "%.*s", (int)(colon - s.redis_addr), s.redis_addr);
    redisContext *rc = tu_redis_connect(host, atoi(colon + 1));
    redisReply *x = redisCommand(rc, "XADD orders * id %s event %s", bad_id, doc);
    CHECK(x && x->type == REDIS_REPLY_STRING, "XADD");
    freeReplyObject(x);
    redisFree(rc);

    /* Then a valid order. */
    char url[128];
    snprintf(url, sizeof(url), "%s/orders", s.url);
    const char *body =
        "{\"user_id\":\"user-7\",\"items\":[{\"sku\":\"SKU-1\",\"quantity\":1}],\"amount\":700}";
    http_resp_t r;
    CHECK(http_do("POST", url, "application/json", "reject-key-1", body, strlen(body), &r) == 201,
          "create: %ld %s", r.status, r.body);
    char id[64], q[512];
    json_member(r.body, "order_id", id, sizeof(id));
    snprintf(q, sizeof(q), "SELECT count(*) FROM orders WHERE id = '%s' AND status = 'confirmed'",
             id);
    CHECK(wait_ll(db, q, 1, 20000) == 1, "valid order not confirmed after a bad one; see %s",
          s.log);

    snprintf(q, sizeof(q),
             "SELECT count(*) FROM outbox_consumer_dead_letter WHERE message_id = '%s'"
             " AND reason = 'rejected' AND attempts = 1 AND ("
             " (group_name = 'inventory' AND last_error LIKE '%%without an order id subject%%')"
             " OR (group_name = 'email' AND last_error LIKE '%%not a JSON object%%'))",
             bad_id);
    CHECK(wait_ll(db, q, 2, 20000) == 2, "dead letters of the bad message: %lld (see %s)",
          tu_query_ll(db, "SELECT count(*) FROM outbox_consumer_dead_letter"), s.log);
    CHECK(tu_query_ll(db, "SELECT count(*) FROM outbox_consumer_attempt") == 0, "attempts left");

    /* outboxctl sees both. */
    char e1[1200], out[256];
    snprintf(e1, sizeof(e1), "DATABASE_URL=%s", s.db);
    snprintf(out, sizeof(out), "%s.ctl", s.log);
    char *env[] = {e1, "OUTBOX_LOG_LEVEL=warn", NULL};
    char *argv[] = {(char *)tu_bin("outboxctl"), "consumer-dlq", "list", NULL};
    CHECK(tu_wait(tu_spawn(argv, env, out), 20000) == 0, "outboxctl consumer-dlq list (%s)", out);
    CHECK(count_in_file(out, bad_id) == 2 && count_in_file(out, "(2 consumer dead letters)") == 1,
          "outboxctl consumer-dlq list output: see %s", out);
    unlink(out);

    PQfinish(db);
    svc_teardown(&s);
    printf("PASS consumer_orders_reject\n");
    return 0;
}
