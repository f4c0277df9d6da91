/* 100 concurrent orders (each with its own key) -> exactly 100 orders, 100
 * OrderCreated events published, stock deducted exactly once per order,
 * 100 emails, every order confirmed. */
#include <string.h>

#include "orders_testlib.h"

#define N 100

int main(void)
{
    svc_t s;
    svc_start(&s, "orders_concurrent", NULL);
    PGconn *db = tu_connect(s.db);
    static char bodies[N][256], keys[N][64];
    const char *bp[N], *kp[N];
    long long want_sku1 = 0, want_sku2 = 0;
    for (int i = 0; i < N; i++) {
        int q1 = 1 + i % 3, q2 = 1 + i % 2;
        want_sku1 += q1;
        want_sku2 += q2;
        snprintf(bodies[i], sizeof(bodies[i]),
                 "{\"user_id\":\"user-%d\",\"items\":[{\"sku\":\"SKU-1\",\"quantity\":%d},{\"sku\":"
                 "\"SKU-2\","
                 "\"quantity\":%d}],\"amount\":%d}",
                 i, q1, q2, 100 + i);
        snprintf(keys[i], sizeof(keys[i]), "concurrent-%d", i);
        bp[i] = bodies[i];
        kp[i] = keys[i];
    }
    char url[128];
    snprintf(url, sizeof(url), "%s/orders", s.url);
    static http_resp_t out[N];
    long long t0 = tu_now_ms();
    http_post_many(url, N, bp, kp, out);
    long long ms = tu_now_ms() - t0;
    for (int i = 0; i < N; i++)
        CHECK(out[i].status == 201, "request %d: %ld %s", i, out[i].status, out[i].body);
    printf("100 concurrent POST /orders: %lld ms\n", ms);

    CHECK(tu_query_ll(db, "SELECT count(*) FROM orders") == N, "orders");
    CHECK(tu_query_ll(db, "SELECT count(DISTINCT id) FROM orders") == N, "distinct orders");
    CHECK(wait_ll(db, "SELECT count(*) FROM orders WHERE status = 'confirmed'", N, 30000) == N,
          "not every order confirmed; see %s", s.log);
    CHECK(wait_ll(db, "SELECT count(*) FROM outbox", 0, 10000) == 0, "outbox not drained");
    /* Published: 100 OrderCreated + 100 OrderConfirmed. */
    redisContext *rc = tu_redis_connect("127.0.0.1", s.redis_port);
    redisReply *x = redisCommand(rc, "XLEN orders");
    CHECK(x && x->integer == 2 * N, "stream length %lld, want %d", x ? x->integer : -1, 2 * N);
    freeReplyObject(x);
    redisFree(rc);
    CHECK(tu_query_ll(db, "SELECT count(*) FROM inventory_reservations") == 2 * N,
          "one reservation per order and sku");
    CHECK(tu_query_ll(db, "SELECT 1000000 - stock FROM inventory WHERE sku = 'SKU-1'") == want_sku1,
          "SKU-1 stock");
    CHECK(tu_query_ll(db, "SELECT 1000000 - stock FROM inventory WHERE sku = 'SKU-2'") == want_sku2,
          "SKU-2 stock");
    CHECK(tu_query_ll(db, "SELECT count(*) FROM outbox_inbox WHERE consumer = 'inventory'") == N,
          "inventory inbox");
    CHECK(wait_count(s.log, "[EMAIL] Sending confirmation email for Order", N, 15000) == N,
          "emails");
    CHECK(count_in_file(s.log, "[EMAIL] \xE2\x9C\x93 Email sent successfully!") == N,
          "email sent lines");
    /* Every order has its own email. */
    PGresult *r = tu_exec(db, "SELECT id FROM orders");
    for (int i = 0; i < PQntuples(r); i++) {
        char line[128];
        snprintf(line, sizeof(line), "Sending confirmation email for Order %s",
                 PQgetvalue(r, i, 0));
        CHECK(count_in_file(s.log, line) == 1, "order %s: emails != 1", PQgetvalue(r, i, 0));
    }
    PQclear(r);
    /* The relay's pool did the publishing (log names worker-N). */
    CHECK(count_in_file(s.log, "batch_published") >= 1, "no batch_published lines");
    svc_teardown(&s);
    PQfinish(db);
    printf("PASS orders_concurrent\n");
    return 0;
}
