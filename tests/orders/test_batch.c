/* POST /orders in batches (services/orders/batch.c): one wave of 60
 * concurrent requests against a service with one batch slot
 * (OUTBOX_DB_POOL_SIZE=8), so that orders queue and are written many to a
 * transaction, each with its own answer:
 *   no key                  -> 201
 *   a new key               -> 201
 *   an unknown sku          -> 422 unknown-sku, nothing written, key not recorded
 *   a recorded key, same body      -> the stored 201, replayed
 *   a recorded key, another body   -> 422 idempotency-key-reused
 *   one new key twice in the wave  -> one order: 201, and a replay or 409
 * Then: every order once, its event published once (the inventory consumer
 * confirms each exactly once), the key records, and fewer transactions than
 * orders (orders.xmin). And the key lookup of a batch stays an index probe
 * per key after the table grew under the sessions' prepared plan. */
#include <string.h>

#include "orders_testlib.h"

#define N 60

static void body_of(char *out, size_t size, int i, const char *sku)
{
    snprintf(out, size,
             "{\"user_id\":\"batch-user-%d\",\"items\":[{\"sku\":\"%s\",\"quantity\":%d}],"
             "\"amount\":%d}",
             i, sku, 1 + i % 3, 500 + i);
}

int main(void)
{
    svc_t s;
    char *env[] = {"OUTBOX_DB_POOL_SIZE=8", NULL}; /* 8 / 8: one batch slot */
    svc_start(&s, "orders_batch", env);
    PGconn *db = tu_connect(s.db);
    char url[128];
    snprintf(url, sizeof(url), "%s/orders", s.url);

    static char bodies[N][256], keys[N][64], stored[N][8192];
    const char *bp[N], *kp[N];
    /* The recorded keys first, one at a time. */
    for (int i = 0; i < N; i++) {
        bp[i] = bodies[i];
        kp[i] = keys[i];
        switch (i % 6) {
        case 0:
            body_of(bodies[i], sizeof(bodies[i]), i, "SKU-1");
            kp[i] = NULL;
            break;
        case 1:
            body_of(bodies[i], sizeof(bodies[i]), i, "SKU-2");
            snprintf(keys[i], sizeof(keys[i]), "batch-new-%d", i);
            break;
        case 2:
            body_of(bodies[i], sizeof(bodies[i]), i, "NO-SUCH-SKU");
            snprintf(keys[i], sizeof(keys[i]), "batch-badsku-%d", i);
            break;
        case 3:
        case 4: {
            body_of(bodies[i], sizeof(bodies[i]), i, "SKU-3");
            snprintf(keys[i], sizeof(keys[i]), "batch-old-%d", i);
            http_resp_t r;
            CHECK(http_do("POST", url, "application/json", keys[i], bodies[i], strlen(bodies[i]),
                          &r) == 201,
                  "pre-created %d: %ld %s", i, r.status, r.body);
            snprintf(stored[i], sizeof(stored[i]), "%s", r.body);
            if (i % 6 == 4) /* the same key with another body */
                body_of(bodies[i], sizeof(bodies[i]), i + 1000, "SKU-3");
            break;
        }
        case 5:
            body_of(bodies[i], sizeof(bodies[i]), i - i % 12, "SKU-1");
            snprintf(keys[i], sizeof(keys[i]), "batch-dup-%d", i / 12);
            break;
        }
    }
    long long before = tu_query_ll(db, "SELECT count(*) FROM orders");
    CHECK(before == 20, "%lld orders before the wave, want 20", before);
    char mark[64];
    PGresult *mr = tu_exec(db, "SELECT max(created_at)::text FROM orders");
    snprintf(mark, sizeof(mark), "%s", PQgetvalue(mr, 0, 0));
    PQclear(mr);

    static http_resp_t out[N];
    http_post_many(url, N, bp, kp, out);
    int created = 0, dup_created = 0;
    for (int i = 0; i < N; i++) {
        http_resp_t *r = &out[i];
        switch (i % 6) {
        case 0:
        case 1:
            CHECK(r->status == 201 && !r->replayed, "request %d: %ld %s", i, r->status, r->body);
            created++;
            break;
        case 2:
            CHECK(r->status == 422 && strstr(r->body, "unknown-sku") &&
                      strstr(r->body, "NO-SUCH-SKU"),
                  "request %d (unknown sku): %ld %s", i, r->status, r->body);
            break;
        case 3:
            CHECK(r->status == 201 && r->replayed && !strcmp(r->body, stored[i]),
                  "request %d (replay): %ld replayed=%d %s", i, r->status, r->replayed, r->body);
            break;
        case 4:
            CHECK(r->status == 422 && strstr(r->body, "idempotency-key-reused"),
                  "request %d (reused key): %ld %s", i, r->status, r->body);
            break;
        case 5: {
            /* Its twin is i + 6 (i % 12 == 5) or i - 6. */
            int twin = i % 12 == 5 ? i + 6 : i - 6;
            CHECK(r->status == 201 || r->status == 409, "request %d (twin): %ld %s", i, r->status,
                  r->body);
            if (r->status == 201 && !r->replayed)
                dup_created++;
            if (r->status == 201 && out[twin].status == 201) {
                char a[64], b[64];
                json_member(r->body, "order_id", a, sizeof(a));
                json_member(out[twin].body, "order_id", b, sizeof(b));
                CHECK(!strcmp(a, b), "key %s made two orders: %s and %s", keys[i], a, b);
            }
            break;
        }
        }
    }
    CHECK(dup_created == N / 12, "%d orders from the %d twin keys", dup_created, N / 12);
    created += dup_created;
    long long total = tu_query_ll(db, "SELECT count(*) FROM orders");
    CHECK(total == before + created, "%lld orders, want %lld", total, before + created);
    CHECK(tu_query_ll(db, "SELECT count(*) FROM orders WHERE user_id = 'batch-user-2'") == 0,
          "the unknown-sku order was written");
    CHECK(tu_query_ll(db, "SELECT count(*) FROM outbox_http_idempotency WHERE key LIKE "
                          "'batch-badsku-%'") == 0,
          "a key of an unknown-sku order was recorded");
    /* pre-created 20 + new keys 10 + twin keys 5 */
    CHECK(tu_query_ll(db, "SELECT count(*) FROM outbox_http_idempotency") == 20 + N / 6 + N / 12,
          "key records");
    /* Every order's event went out once: each is confirmed, once. */
    CHECK(wait_ll(db, "SELECT count(*) FROM orders WHERE status = 'confirmed'", total, 30000) ==
              total,
          "not every order confirmed; see %s", s.log);
    CHECK(wait_ll(db, "SELECT count(*) FROM outbox_inbox WHERE consumer = 'inventory'", total,
                  10000) == total,
          "inventory effects");
    CHECK(tu_query_ll(db, "SELECT count(*) FROM inventory_reservations") == total,
          "one reservation per order");
    /* Written together: the wave's orders came in fewer transactions than
     * orders (the xmin of their items: the inventory step updates the
     * orders themselves). */
    char q[256];
    snprintf(q, sizeof(q),
             "SELECT count(DISTINCT i.xmin::text) FROM order_items i JOIN orders o ON o.id = "
             "i.order_id WHERE o.created_at > '%s'",
             mark);
    long long wave_txs = tu_query_ll(db, q);
    printf("%d orders in the wave, written in %lld transactions\n", created, wave_txs);
    CHECK(wave_txs < created, "no order of the wave shared a transaction (%lld for %d)", wave_txs,
          created);

    /* The key lookup stays one index probe per key (batch.c, lookup_sql),
     * though the pool's sessions prepared it while the table held a few
     * dozen records: 20,000 more records of the scope, then a wave of new
     * keys on the plans kept since (not analyzed: an ANALYZE would make
     * the sessions plan again). A plan that read the scope's records, the
     * keys only a filter, would read 20,000 index entries a batch. */
    PQclear(tu_exec(db, "INSERT INTO outbox_http_idempotency (scope, key, fingerprint, status,"
                        " content_type, body, expires_at)"
                        " SELECT 'orders', 'bulk-' || g, 'x', 201, 'application/json', '{}',"
                        "        now() + interval '1 day' FROM generate_series(1, 20000) g"));
    for (int i = 0; i < N; i++) {
        body_of(bodies[i], sizeof(bodies[i]), 2000 + i, "SKU-1");
        snprintf(keys[i], sizeof(keys[i]), "batch-probe-%d", i);
        kp[i] = keys[i];
    }
    PGresult *mr2 = tu_exec(db, "SELECT max(created_at)::text FROM orders");
    snprintf(mark, sizeof(mark), "%s", PQgetvalue(mr2, 0, 0));
    PQclear(mr2);
    http_post_many(url, N, bp, kp, out);
    for (int i = 0; i < N; i++)
        CHECK(out[i].status == 201 && !out[i].replayed, "probe request %d: %ld %s", i,
              out[i].status, out[i].body);
    snprintf(q, sizeof(q),
             "SELECT count(DISTINCT i.xmin::text) FROM order_items i JOIN orders o ON o.id = "
             "i.order_id WHERE o.created_at > '%s'",
             mark);
    long long probe_txs = tu_query_ll(db, q);
    CHECK(probe_txs < N, "the probe wave was not batched (%lld transactions for %d orders)",
          probe_txs, N);
    svc_teardown(&s);
    /* A session's statistics reach the server when it ends. */
    CHECK(wait_ll(db,
                  "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                  "'orders-service api'",
                  0, 10000) == 0,
          "the API's sessions did not end");
    long long read = tu_query_ll(db, "SELECT idx_tup_read FROM pg_stat_user_indexes"
                                     " WHERE indexrelname = 'outbox_http_idempotency_pkey'");
    printf("key lookups: %lld index entries read in all; the probe wave in %lld transactions\n",
           read, probe_txs);
    CHECK(read < 20000, "the key lookups read %lld index entries: a scan of the scope", read);
    PQfinish(db);
    printf("PASS orders_batch\n");
    return 0;
}
