/* A COMMIT whose outcome is unknown is not "nothing was written".
 *
 * orders-service talks to PostgreSQL through pgproxy, which cuts both
 * connections when the service sends COMMIT for an order:
 *
 *   after forwarding it  the order is committed, the answer lost;
 *   before forwarding it the order is rolled back.
 *
 * Either way the client gets 503 commit-outcome-unknown (not "nothing was
 * written"), with the order id and Retry-After, and the server logs
 * commit_outcome_unknown. A retry with the same Idempotency-Key then tells
 * the truth: the stored 201 (replayed) when the commit landed, a fresh 201
 * when it did not; the order exists exactly once. Without a key, the order
 * id in the problem tells through GET /orders/{id}. The pipelined
 * idempotency check (BEGIN, lock, lookup in one round trip) is cut before
 * and after the server ran it: 503 database-unavailable, nothing written. */
#include <string.h>

#include "orders_testlib.h"
#include "pgproxy.h"

static const char *body_for(const char *user, char *buf, size_t size)
{
    snprintf(buf, size,
             "{\"user_id\":\"%s\",\"items\":[{\"sku\":\"SKU-1\",\"quantity\":1}],\"amount\":700}",
             user);
    return buf;
}

static long long orders_of(PGconn *db, const char *user)
{
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM orders WHERE user_id = '%s'", user);
    return tu_query_ll(db, sql);
}

/* POST once through the armed proxy; checks the unknown-outcome answer and
 * copies its order_id into order_id. */
static void post_cut(svc_t *s, pgproxy_t *px, pgproxy_mode_t mode, const char *key,
                     const char *body, char *order_id, size_t order_id_size)
{
    char url[128];
    snprintf(url, sizeof(url), "%s/orders", s->url);
    int cuts = pgproxy_cuts(px);
    pgproxy_arm(px, mode);
    http_resp_t r;
    long st = http_do("POST", url, "application/json", key, body, strlen(body), &r);
    pgproxy_arm(px, PGPROXY_PASS);
    const char *how = mode == PGPROXY_CUT_AFTER_COMMIT ? "after COMMIT" : "before COMMIT";
    CHECK(pgproxy_cuts(px) == cuts + 1, "%s: the proxy saw no COMMIT to cut (status %ld %s)", how,
          st, r.body);
    CHECK(st == 503, "%s, key %s: want 503, got %ld %s", how, key ? key : "(none)", st, r.body);
    CHECK(strstr(r.content_type, "application/problem+json"), "%s: content type %s", how,
          r.content_type);
    CHECK(strstr(r.body, "\"type\":\"urn:outbox:problem:commit-outcome-unknown\""), "%s: %s", how,
          r.body);
    CHECK(!strstr(r.body, "nothing was written"), "%s: claims nothing was written: %s", how,
          r.body);
    CHECK(strstr(r.body, "may or may not"), "%s: detail should say the outcome is unknown: %s", how,
          r.body);
    if (key)
        CHECK(strstr(r.body, "retry with the same Idempotency-Key"),
              "%s: detail should say how to retry: %s", how, r.body);
    json_member(r.body, "order_id", order_id, order_id_size);
    CHECK(outbox_uuid_valid(order_id), "%s: no order_id member: %s", how, r.body);
    if (mode == PGPROXY_CUT_AFTER_COMMIT)
        CHECK(pgproxy_last_commit_answer(px) == 1,
              "the server did not confirm the dropped COMMIT (%d)", pgproxy_last_commit_answer(px));
    printf("cut %s, key %s: 503 commit-outcome-unknown, order %s\n", how, key ? key : "(none)",
           order_id);
}

/* Retries with the key until the in-flight lock of the dead session is gone. */
static long retry(svc_t *s, const char *key, const char *body, http_resp_t *r)
{
    char url[128];
    snprintf(url, sizeof(url), "%s/orders", s->url);
    long st = 0;
    for (int i = 0; i < 100; i++) {
        st = http_do("POST", url, "application/json", key, body, strlen(body), r);
        if (st != 409)
            break;
        tu_sleep_ms(100);
    }
    return st;
}

int main(void)
{
    svc_t s;
    /* The relay and the consumers commit too: only the API runs here, so
     * the COMMIT the proxy sees is the order's. */
    char *env[] = {"OUTBOX_RUN_RELAY=false", "OUTBOX_RUN_CONSUMERS=false", NULL};
    svc_start(&s, "orders_commit_unknown", env); /* direct: creates and migrates the database */
    svc_stop(&s);

    char direct[1024];
    snprintf(direct, sizeof(direct), "%s", s.db);
    pgproxy_t *px = pgproxy_start_for(direct);
    snprintf(s.db, sizeof(s.db), "%s host=127.0.0.1 port=%d sslmode=disable gssencmode=disable",
             direct, pgproxy_port(px));
    svc_spawn(&s, env);
    PGconn *db = tu_connect(direct);

    char body[256], order_id[64], url[160];
    http_resp_t r;

    /* 1. Committed, answer lost: the retry replays the stored 201. */
    body_for("user-after", body, sizeof(body));
    post_cut(&s, px, PGPROXY_CUT_AFTER_COMMIT, "key-after", body, order_id, sizeof(order_id));
    CHECK(orders_of(db, "user-after") == 1, "the commit should have landed");
    CHECK(retry(&s, "key-after", body, &r) == 201, "retry after: %ld %s", r.status, r.body);
    CHECK(r.replayed, "retry after a landed commit must replay the stored answer: %s", r.body);
    char got[64];
    json_member(r.body, "order_id", got, sizeof(got));
    CHECK(!strcmp(got, order_id), "replayed order %s, the cut request's was %s", got, order_id);
    CHECK(orders_of(db, "user-after") == 1, "order exists %lld times", orders_of(db, "user-after"));
    CHECK(tu_query_ll(db, "SELECT count(*) FROM outbox WHERE type = 'OrderCreated' AND key = "
                          "(SELECT id::text FROM orders WHERE user_id = 'user-after')") == 1,
          "OrderCreated events for the landed order");

    /* 2. Not committed: the retry creates the order, once. */
    body_for("user-before", body, sizeof(body));
    post_cut(&s, px, PGPROXY_CUT_BEFORE_COMMIT, "key-before", body, order_id, sizeof(order_id));
    CHECK(wait_ll(db, "SELECT count(*) FROM orders WHERE user_id = 'user-before'", 0, 1000) == 0,
          "the cut transaction should have rolled back");
    CHECK(retry(&s, "key-before", body, &r) == 201, "retry before: %ld %s", r.status, r.body);
    CHECK(!r.replayed, "nothing was stored, yet the retry replayed: %s", r.body);
    CHECK(orders_of(db, "user-before") == 1, "order exists %lld times",
          orders_of(db, "user-before"));
    CHECK(retry(&s, "key-before", body, &r) == 201 && r.replayed, "second retry: %ld replayed=%d",
          r.status, r.replayed);
    CHECK(orders_of(db, "user-before") == 1, "order exists %lld times after two retries",
          orders_of(db, "user-before"));

    /* 3. No key: the order id in the problem tells the truth. */
    body_for("user-nokey", body, sizeof(body));
    post_cut(&s, px, PGPROXY_CUT_AFTER_COMMIT, NULL, body, order_id, sizeof(order_id));
    snprintf(url, sizeof(url), "%s/orders/%s", s.url, order_id);
    CHECK(http_do("GET", url, NULL, NULL, NULL, 0, &r) == 200, "landed order %s: %ld", order_id,
          r.status);
    post_cut(&s, px, PGPROXY_CUT_BEFORE_COMMIT, NULL, body, order_id, sizeof(order_id));
    snprintf(url, sizeof(url), "%s/orders/%s", s.url, order_id);
    CHECK(http_do("GET", url, NULL, NULL, NULL, 0, &r) == 404, "rolled back order %s: %ld",
          order_id, r.status);
    CHECK(orders_of(db, "user-nokey") == 1, "orders without a key: %lld",
          orders_of(db, "user-nokey"));

    /* 4. The idempotency check is one pipeline (BEGIN, the key's lock, its
     * lookup: one round trip). Cut before it reaches the server, and after
     * the server ran it with its answers lost: nothing was written, the
     * client hears 503 database-unavailable, the same key then creates the
     * order once, and the broken session is not handed to a later request. */
    const pgproxy_mode_t pmodes[2] = {PGPROXY_CUT_BEFORE_PIPELINED_BEGIN,
                                      PGPROXY_CUT_AFTER_PIPELINED_BEGIN};
    for (int m = 0; m < 2; m++) {
        char user[32], key[32];
        snprintf(user, sizeof(user), "user-pipe-%d", m);
        snprintf(key, sizeof(key), "key-pipe-%d", m);
        body_for(user, body, sizeof(body));
        snprintf(url, sizeof(url), "%s/orders", s.url);
        int cuts = pgproxy_cuts(px);
        pgproxy_arm(px, pmodes[m]);
        long st = http_do("POST", url, "application/json", key, body, strlen(body), &r);
        pgproxy_arm(px, PGPROXY_PASS);
        CHECK(pgproxy_cuts(px) == cuts + 1, "pipeline %d: the proxy cut nothing (%ld %s)", m, st,
              r.body);
        CHECK(st == 503 && strstr(r.body, "database-unavailable"),
              "pipeline cut %d: want 503 database-unavailable, got %ld %s", m, st, r.body);
        CHECK(orders_of(db, user) == 0, "pipeline cut %d wrote an order", m);
        CHECK(retry(&s, key, body, &r) == 201 && !r.replayed, "pipeline cut %d, retry: %ld %s", m,
              r.status, r.body);
        CHECK(orders_of(db, user) == 1, "pipeline cut %d: order exists %lld times", m,
              orders_of(db, user));
        /* More requests than the pool has sessions: none gets the cut one. */
        for (int i = 0; i < 40; i++) {
            char k[48];
            snprintf(k, sizeof(k), "key-pipe-%d-%d", m, i);
            CHECK(http_do("POST", url, "application/json", k, body, strlen(body), &r) == 201,
                  "pipeline cut %d, order %d after it: %ld %s", m, i, r.status, r.body);
        }
        CHECK(orders_of(db, user) == 41, "pipeline cut %d: %lld orders after 41 posts", m,
              orders_of(db, user));
        printf("cut %s the pipelined idempotency check: 503, then one order per key\n",
               m ? "after" : "before");
    }

    /* The service stays healthy, and said what happened. */
    body_for("user-after-all", body, sizeof(body));
    CHECK(retry(&s, "key-healthy", body, &r) == 201 && !r.replayed,
          "normal order after the cuts: %ld %s", r.status, r.body);
    CHECK(count_in_file(s.log, "\"event\":\"commit_outcome_unknown\"") == 4,
          "commit_outcome_unknown log lines: %d",
          count_in_file(s.log, "\"event\":\"commit_outcome_unknown\""));
    CHECK(count_in_file(s.log, "nothing was written") == 0,
          "a cut was logged or answered as nothing written");

    svc_teardown(&s);
    PQfinish(db);
    pgproxy_stop(px);
    printf("PASS orders_commit_unknown\n");
    return 0;
}
