/* The whole order flow through one orders-service process: startup lines,
 * create (with key, traceparent), replayed repeat, relay -> Redis stream ->
 * inventory (confirmed / rejected) and email consumers, GET, metrics, a
 * broker replay (outboxctl replay) that changes nothing, graceful stop. */
#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include <string.h>

#include "orders_testlib.h"

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static void run_replay(const svc_t *s)
{
    char e1[1200], e2[128], e3[64];
    snprintf(e1, sizeof(e1), "DATABASE_URL=%s", s->db);
    snprintf(e2, sizeof(e2), "REDIS_ADDR=%s", s->redis_addr);
    snprintf(e3, sizeof(e3), "OUTBOX_LOG_LEVEL=warn");
    char *env[] = {e1, e2, e3, NULL};
    char *argv[] = {
        (char *)tu_bin("outboxctl"), "replay", "--topic", "orders", "--count", "100", NULL};
    char log[300];
    snprintf(log, sizeof(log), "%s.replay", s->log);
    pid_t pid = tu_spawn(argv, env, log);
    int rc = tu_wait(pid, 20000);
    CHECK(rc == 0, "outboxctl replay exited %d (see %s)", rc, log);
}

int main(void)
{
    svc_t s;
    svc_start(&s, "orders_flow", NULL);
    PGconn *db = tu_connect(s.db);
    http_resp_t r, r2;
    char url[128];

    /* Startup lines of the seed. */
    static const char *const lines[] = {"Connected to database successfully",
                                        "Connected to Redis successfully", "Outbox worker started",
                                        "Email consumer started", "Server starting on port"};
    for (int i = 0; i < 5; i++)
        CHECK(wait_count(s.log, lines[i], 1, 5000) == 1, "startup line \"%s\" missing from %s",
              lines[i], s.log);

    /* The relay's own defaults in this service (seed 000's five workers; the
     * watcher every 10 ms), in its startup config line. */
    CHECK(wait_count(s.log, " workers=5 ", 1, 5000) == 1 &&
              wait_count(s.log, " poll_min_interval=10ms ", 1, 5000) == 1,
          "config line without workers=5 and poll_min_interval=10ms: see %s", s.log);

    snprintf(url, sizeof(url), "%s/healthz", s.url);
    CHECK(http_do("GET", url, NULL, NULL, NULL, 0, &r) == 200, "healthz %ld", r.status);

    /* Create, then repeat with the same key: replayed, same body. */
    const char *body =
        "{\"user_id\":\"user-456\",\"items\":[{\"sku\":\"SKU-1\",\"quantity\":2}],\"amount\":1000}";
    snprintf(url, sizeof(url), "%s/orders", s.url);
    CHECK(http_do("POST", url, "application/json", "flow-key-1", body, strlen(body), &r) == 201,
          "create: %ld %s", r.status, r.body);
    char id[64], status[32];
    json_member(r.body, "order_id", id, sizeof(id));
    json_member(r.body, "status", status, sizeof(status));
    CHECK(outbox_uuid_valid(id) && !strcmp(status, "success"), "create body: %s", r.body);
    CHECK(!r.replayed, "first response marked replayed");
    CHECK(http_do("POST", url, "application/json", "flow-key-1", body, strlen(body), &r2) == 201,
          "repeat: %ld", r2.status);
    CHECK(r2.replayed && !strcmp(r.body, r2.body), "repeat not replayed identically:\n%s\n%s",
          r.body, r2.body);
    /* Same key, different body: 422, nothing created. */
    const char *other =
        "{\"user_id\":\"user-456\",\"items\":[{\"sku\":\"SKU-1\",\"quantity\":3}],\"amount\":1000}";
    CHECK(http_do("POST", url, "application/json", "flow-key-1", other, strlen(other), &r2) == 422,
          "reuse: %ld", r2.status);
    CHECK(tu_query_ll(db, "SELECT count(*) FROM orders") == 1, "one order expected");

    /* The event flows: confirmed, stock deducted once, one email. */
    char q[512];
    snprintf(q, sizeof(q), "SELECT count(*) FROM orders WHERE id = '%s' AND status = 'confirmed'",
             id);
    CHECK(wait_ll(db, q, 1, 15000) == 1, "order not confirmed; see %s", s.log);
    CHECK(tu_query_ll(db, "SELECT stock FROM inventory WHERE sku = 'SKU-1'") == 1000000 - 2,
          "stock");
    CHECK(tu_query_ll(db, "SELECT count(*) FROM inventory_reservations") == 1, "reservations");
    char line[160];
    snprintf(line, sizeof(line), "[EMAIL] Sending confirmation email for Order %s", id);
    CHECK(wait_count(s.log, line, 1, 10000) == 1, "email line missing");
    CHECK(count_in_file(s.log, "[EMAIL] -> User: user-456") == 1, "email user line");
    CHECK(count_in_file(s.log, "[EMAIL] -> Amount: 1000") == 1, "email amount line");
    CHECK(count_in_file(s.log, "[EMAIL] \xE2\x9C\x93 Email sent successfully!") == 1,
          "email sent line");
    snprintf(url, sizeof(url), "%s/orders/%s", s.url, id);
    CHECK(http_do("GET", url, NULL, NULL, NULL, 0, &r) == 200, "get: %ld", r.status);
    json_member(r.body, "status", status, sizeof(status));
    CHECK(!strcmp(status, "confirmed"), "GET status: %s", r.body);

    /* The stream holds OrderCreated (with the traceparent) and OrderConfirmed. */
    CHECK(wait_ll(db, "SELECT count(*) FROM outbox", 0, 10000) == 0, "outbox not drained");
    redisContext *rc = tu_redis_connect("127.0.0.1", s.redis_port);
    redisReply *x = redisCommand(rc, "XRANGE orders - +");
    CHECK(x && x->type == REDIS_REPLY_ARRAY && x->elements == 2, "stream entries: %zu",
          x ? x->elements : 0);
    freeReplyObject(x);
    redisFree(rc);

    /* Traceparent reaches the event. */
    const char *body2 = "{\"user_id\":\"user-789\",\"items\":[{\"sku\":\"SKU-RARE\",\"quantity\":5}"
                        "],\"amount\":250}";
    snprintf(url, sizeof(url), "%s/orders", s.url);
    CHECK(http_do("POST", url, "application/json", NULL, body2, strlen(body2), &r) == 201,
          "rare: %ld", r.status);
    char id2[64];
    json_member(r.body, "order_id", id2, sizeof(id2));
    snprintf(q, sizeof(q), "SELECT count(*) FROM orders WHERE id = '%s' AND status = 'rejected'",
             id2);
    CHECK(wait_ll(db, q, 1, 15000) == 1, "order with too little stock not rejected; see %s", s.log);
    CHECK(tu_query_ll(db, "SELECT stock FROM inventory WHERE sku = 'SKU-RARE'") == 3,
          "rejected order took stock");
    CHECK(wait_ll(db, "SELECT count(*) FROM outbox", 0, 10000) == 0, "outbox not drained");
    CHECK(wait_count(s.log, "[EMAIL] Sending confirmation email", 2, 10000) == 2, "second email");

    /* Replay everything the broker has: consumers skip, nothing changes. */
    int skips_before = count_in_file(s.log, "SKIPPING duplicate message");
    run_replay(&s);
    CHECK(wait_count(s.log, "SKIPPING duplicate message", skips_before + 4, 15000) >=
              skips_before + 4,
          "expected 4 SKIPPING lines (2 OrderCreated x inventory, email); see %s", s.log);
    tu_sleep_ms(500);
    CHECK(count_in_file(s.log, "[EMAIL] Sending confirmation email") == 2,
          "replay sent an email again");
    CHECK(tu_query_ll(db, "SELECT stock FROM inventory WHERE sku = 'SKU-1'") == 1000000 - 2,
          "replay moved stock");
    CHECK(tu_query_ll(db, "SELECT count(*) FROM inventory_reservations") == 1,
          "replay reserved again");
    CHECK(tu_query_ll(db, "SELECT count(*) FROM orders") == 2, "orders");

    /* Traceparent from the request header is carried by the event. */
    const char *body3 =
        "{\"user_id\":\"user-1\",\"items\":[{\"sku\":\"SKU-2\",\"quantity\":1}],\"amount\":10}";
    {
        /* curl helper has no custom headers: send it by hand with redis check */
        CURL *e = curl_easy_init();
        struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
        h = curl_slist_append(h, "traceparent: " TP);
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body3);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
        FILE *devnull = fopen("/dev/null", "w");
        curl_easy_setopt(e, CURLOPT_WRITEDATA, devnull);
        long code = 0;
        CHECK(curl_easy_perform(e) == CURLE_OK, "traceparent post");
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
        CHECK(code == 201, "traceparent post status %ld", code);
        curl_easy_cleanup(e);
        curl_slist_free_all(h);
        fclose(devnull);
    }
    CHECK(wait_ll(db, "SELECT count(*) FROM orders WHERE status = 'confirmed'", 2, 15000) == 2,
          "third order");
    rc = tu_redis_connect("127.0.0.1", s.redis_port);
    x = redisCommand(rc, "XREVRANGE orders + - COUNT 20");
    int seen = 0;
    for (size_t i = 0; x && i < x->elements; i++) {
        redisReply *f = x->element[i]->element[1];
        for (size_t k = 0; k + 1 < f->elements; k += 2)
            if (!strcmp(f->element[k]->str, "event") && strstr(f->element[k + 1]->str, TP))
                seen++;
    }
    freeReplyObject(x);
    redisFree(rc);
    CHECK(seen >= 1, "traceparent not found in any published event");

    /* Metrics count requests by route and status. */
    snprintf(url, sizeof(url), "%s/metrics", s.url);
    CHECK(http_do("GET", url, NULL, NULL, NULL, 0, &r) == 200, "metrics %ld", r.status);
    CHECK(strstr(r.body, "outbox_http_requests_total{service=\"orders\",method=\"POST\",route=\"/"
                         "orders\",status=\"201\"}"),
          "metrics lack the POST /orders 201 series:\n%s", r.body);
    CHECK(strstr(r.body, "outbox_http_request_duration_seconds_bucket"), "no latency histogram");

    svc_teardown(&s);
    CHECK(count_in_file(s.log, "stopped cleanly") == 1, "no clean stop line");
    PQfinish(db);
    printf("PASS orders_flow\n");
    return 0;
}
