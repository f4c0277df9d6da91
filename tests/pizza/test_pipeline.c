/* The pizza pipeline end to end (seed 004), three processes:
 *   - bad input is refused with a clear problem+json and writes nothing;
 *   - N orders in, with payment and delivery failures injected (the job's
 *     failure rates), come out as N orders logged by pizza-consumer, once
 *     each; every order ends "completed", every event row "completed" in
 *     the view pizza_order_events; failures were retried (attempts > N);
 *   - SIGTERM stops every program with exit status 0. */
#include <string.h>

#include "pizza_testlib.h"

#define N 60

typedef struct bad_s {
    const char *name, *body;
    long status;
    const char *type, *detail; /* substrings of the problem's type and detail */
} bad_t;

static void bad_requests(pz_t *p)
{
    const bad_t cases[] = {
        {"no body", NULL, 400, "body-required", "JSON object"},
        {"not JSON", "{\"flavor\":", 400, "malformed-json", "not valid JSON"},
        {"missing flavor", "{\"size\":\"Large\"}", 400, "validation-error", "flavor is required"},
        {"bad size",
         "{\"flavor\":\"F\",\"size\":\"Huge\",\"quantity\":1,\"price\":1,\"address\":\"a\","
         "\"user_name\":\"u\"}",
         400, "validation-error", "size must be"},
        {"quantity 0",
         "{\"flavor\":\"F\",\"size\":\"Large\",\"quantity\":0,\"price\":1,\"address\":\"a\","
         "\"user_name\":\"u\"}",
         400, "validation-error", "quantity must be"},
        {"price as text",
         "{\"flavor\":\"F\",\"size\":\"Large\",\"quantity\":1,\"price\":\"9.99\",\"address\":"
         "\"a\",\"user_name\":\"u\"}",
         400, "validation-error", "price must be"},
        {"price with 3 decimals",
         "{\"flavor\":\"F\",\"size\":\"Large\",\"quantity\":1,\"price\":9.999,\"address\":\"a\","
         "\"user_name\":\"u\"}",
         400, "validation-error", "two decimals"},
        {"empty user_name",
         "{\"flavor\":\"F\",\"size\":\"Large\",\"quantity\":1,\"price\":9.99,\"address\":\"a\","
         "\"user_name\":\"\"}",
         400, "validation-error", "user_name must be"},
    };
    char url[128];
    snprintf(url, sizeof(url), "%s/pizza", p->url);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const bad_t *c = &cases[i];
        http_resp_t r;
        http_do("POST", url, "application/json", NULL, c->body, c->body ? strlen(c->body) : 0, &r);
        CHECK(r.status == c->status, "[%s] status %ld, want %ld: %s", c->name, r.status, c->status,
              r.body);
        CHECK(!strcmp(r.content_type, "application/problem+json"), "[%s] content type %s", c->name,
              r.content_type);
        CHECK(strstr(r.body, c->type) && strstr(r.body, c->detail), "[%s] want %s / %s in %s",
              c->name, c->type, c->detail, r.body);
        printf("ok bad request: %-22s %ld\n", c->name, r.status);
    }
    CHECK(tu_query_ll(p->conn, "SELECT count(*) FROM pizza_orders") == 0, "bad input was written");
    CHECK(tu_query_ll(p->conn, "SELECT count(*) FROM pizza_order_outbox") == 0,
          "bad input wrote events");
}

int main(void)
{
    char *job_env[] = {"PIZZA_PAYMENT_DELAY=10ms",    "PIZZA_DELIVERY_DELAY=20ms",
                       "PIZZA_PAYMENT_FAIL_RATE=0.3", "PIZZA_DELIVERY_FAIL_RATE=0.2",
                       "OUTBOX_BACKOFF_BASE=20ms",    "OUTBOX_BACKOFF_MAX=200ms",
                       "OUTBOX_MAX_ATTEMPTS=60",      NULL};
    pz_t p;
    pz_start(&p, "pizza_pipeline", job_env);
    bad_requests(&p);

    static char ids[N][40];
    long long t0 = tu_now_ms();
    pz_post_orders(&p, N, ids);
    long long got = wait_ll(p.conn, "SELECT count(*) FROM pizza_received", N, 120000);
    CHECK(got == N, "pizza-consumer logged %lld of %d orders in 120 s; see %s and %s", got, N,
          p.job_log, p.cons_log);
    printf("ok %d orders logged in %lld ms\n", N, tu_now_ms() - t0);
    for (int i = 0; i < N; i++) {
        char needle[80];
        snprintf(needle, sizeof(needle), "Received order %s", ids[i]);
        int n = count_in_file(p.cons_log, needle);
        CHECK(n == 1, "order %s logged %d times; see %s", ids[i], n, p.cons_log);
    }
    CHECK(wait_ll(p.conn, "SELECT count(*) FROM pizza_orders WHERE status = 'completed'", N,
                  10000) == N,
          "not every order completed");
    CHECK(wait_ll(p.conn, "SELECT count(*) FROM pizza_order_events WHERE status = 'completed'", N,
                  10000) == N,
          "not every event row marked completed (ack_mode=mark)");
    CHECK(tu_query_ll(p.conn, "SELECT count(*) FROM pizza_order_outbox WHERE status <> "
                              "'processed'") == 0,
          "outbox rows not processed");
    CHECK(tu_query_ll(p.conn, "SELECT count(*) FROM pizza_order_outbox_dead_letter") == 0,
          "dead letters");
    long long pay = tu_query_ll(p.conn, "SELECT sum(payment_attempts) FROM pizza_orders");
    long long del = tu_query_ll(p.conn, "SELECT sum(delivery_attempts) FROM pizza_orders");
    CHECK(pay > N && del > N, "no failure was injected: %lld payment, %lld delivery attempts", pay,
          del);
    CHECK(count_in_file(p.job_log, "payment_failed") > 0, "no payment failure in the job log");
    printf("ok failures retried: %lld payment and %lld delivery attempts for %d orders\n", pay, del,
           N);

    /* The order's own page tells where it is. */
    char url[160];
    snprintf(url, sizeof(url), "%s/pizza/%s", p.url, ids[0]);
    http_resp_t r;
    CHECK(http_do("GET", url, NULL, NULL, NULL, 0, &r) == 200, "GET /pizza/{id}: %ld", r.status);
    CHECK(strstr(r.body, "\"status\":\"completed\""), "GET /pizza/{id}: %s", r.body);
    snprintf(url, sizeof(url), "%s/pizza/not-a-uuid", p.url);
    CHECK(http_do("GET", url, NULL, NULL, NULL, 0, &r) == 400, "GET bad id: %ld", r.status);

    pz_stop(&p, &p.job, "pizza-job", p.job_log);
    pz_stop(&p, &p.consumer, "pizza-consumer", p.cons_log);
    pz_stop(&p, &p.api, "pizza-api", p.api_log);
    pz_teardown(&p);
    printf("PASS pizza_pipeline\n");
    return 0;
}
