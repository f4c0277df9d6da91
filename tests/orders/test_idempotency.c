/* Idempotency-Key: 100 concurrent requests with one key -> exactly one
 * order; every response is the stored 201 (replayed, identical body) or 409.
 * Then: retries replay; a different body is 422; a required key is enforced;
 * an expired key is purged and may be reused. */
#include <string.h>

#include "orders_testlib.h"

#define N 100

int main(void)
{
    svc_t s;
    svc_start(&s, "orders_idempotency", NULL);
    PGconn *db = tu_connect(s.db);
    const char *body =
        "{\"user_id\":\"user-1\",\"items\":[{\"sku\":\"SKU-3\",\"quantity\":1}],\"amount\":500}";
    const char *bp[N], *kp[N];
    for (int i = 0; i < N; i++)
        bp[i] = body, kp[i] = "one-key-for-all";
    char url[128];
    snprintf(url, sizeof(url), "%s/orders", s.url);
    static http_resp_t out[N];
    http_post_many(url, N, bp, kp, out);
    int created = 0, replayed = 0, conflicts = 0;
    const char *first = NULL;
    for (int i = 0; i < N; i++) {
        if (out[i].status == 201) {
            if (out[i].replayed)
                replayed++;
            else
                created++;
            if (!first)
                first = out[i].body;
            CHECK(!strcmp(first, out[i].body), "201 bodies differ:\n%s\n%s", first, out[i].body);
        } else {
            CHECK(out[i].status == 409, "request %d: %ld %s", i, out[i].status, out[i].body);
            CHECK(strstr(out[i].content_type, "application/problem+json"), "409 content type %s",
                  out[i].content_type);
            conflicts++;
        }
    }
    printf("one key x %d concurrent: %d created, %d replayed, %d x 409\n", N, created, replayed,
           conflicts);
    CHECK(created == 1, "created %d orders", created);
    CHECK(tu_query_ll(db, "SELECT count(*) FROM orders") == 1, "orders");
    CHECK(tu_query_ll(db, "SELECT count(*) FROM outbox_http_idempotency") == 1, "key rows");
    CHECK(wait_ll(db, "SELECT count(*) FROM orders WHERE status = 'confirmed'", 1, 15000) == 1,
          "not confirmed");
    CHECK(wait_count(s.log, "[EMAIL] Sending confirmation email", 1, 10000) == 1, "emails");

    /* Sequential retries: always the replay. */
    http_resp_t r;
    for (int i = 0; i < 3; i++) {
        CHECK(http_do("POST", url, "application/json", "one-key-for-all", body, strlen(body), &r) ==
                  201,
              "retry %ld", r.status);
        CHECK(r.replayed && first && !strcmp(r.body, first), "retry not a replay: %s", r.body);
    }
    /* Whitespace and member order do not change the fingerprint. */
    const char *body_ws = "{ \"amount\": 500, \"items\": [ {\"quantity\": 1, \"sku\": \"SKU-3\"} "
                          "], \"user_id\": \"user-1\" }";
    CHECK(http_do("POST", url, "application/json", "one-key-for-all", body_ws, strlen(body_ws),
                  &r) == 201,
          "reformatted body: %ld %s", r.status, r.body);
    CHECK(r.replayed, "reformatted body not replayed");
    /* Quoted (Structured Field) form of the same key is the same key. */
    CHECK(http_do("POST", url, "application/json", "\"one-key-for-all\"", body, strlen(body), &r) ==
                  201 &&
              r.replayed,
          "sf-string key: %ld", r.status);
    /* Different payload, same key: 422. */
    const char *other =
        "{\"user_id\":\"user-2\",\"items\":[{\"sku\":\"SKU-3\",\"quantity\":1}],\"amount\":500}";
    CHECK(http_do("POST", url, "application/json", "one-key-for-all", other, strlen(other), &r) ==
              422,
          "mismatch %ld", r.status);
    CHECK(strstr(r.body, "idempotency-key-reused"), "422 type: %s", r.body);
    /* A rejected (4xx) request stores no key: fixing it and retrying works. */
    const char *badsku =
        "{\"user_id\":\"user-3\",\"items\":[{\"sku\":\"NOPE\",\"quantity\":1}],\"amount\":5}";
    const char *goodsku =
        "{\"user_id\":\"user-3\",\"items\":[{\"sku\":\"SKU-4\",\"quantity\":1}],\"amount\":5}";
    CHECK(http_do("POST", url, "application/json", "fix-me", badsku, strlen(badsku), &r) == 422,
          "unknown sku %ld", r.status);
    CHECK(http_do("POST", url, "application/json", "fix-me", goodsku, strlen(goodsku), &r) == 201 &&
              !r.replayed,
          "fixed retry %ld %s", r.status, r.body);
    CHECK(tu_query_ll(db, "SELECT count(*) FROM orders") == 2, "orders after fixed retry");
    svc_stop(&s);

    /* Key required + short retention: missing key 400; expired key purged. */
    char *env[] = {"OUTBOX_IDEMPOTENCY_KEY_REQUIRED=true", "OUTBOX_IDEMPOTENCY_RETENTION=1s", NULL};
    svc_spawn(&s, env);
    CHECK(http_do("POST", url, "application/json", NULL, body, strlen(body), &r) == 400,
          "missing key %ld", r.status);
    CHECK(strstr(r.body, "idempotency-key-required"), "missing-key type: %s", r.body);
    CHECK(http_do("POST", url, "application/json", "short-lived", body, strlen(body), &r) == 201 &&
              !r.replayed,
          "short-lived %ld", r.status);
    CHECK(wait_ll(db, "SELECT count(*) FROM outbox_http_idempotency WHERE key = 'short-lived'", 0,
                  10000) == 0,
          "expired key not purged");
    CHECK(http_do("POST", url, "application/json", "short-lived", body, strlen(body), &r) == 201 &&
              !r.replayed,
          "expired key should start afresh: %ld replayed=%d", r.status, r.replayed);
    CHECK(tu_query_ll(db, "SELECT count(*) FROM orders") == 4, "orders at the end");
    svc_teardown(&s);
    PQfinish(db);
    printf("PASS orders_idempotency\n");
    return 0;
}
