/* Redis down under the pizza pipeline: orders placed while the Redis server
 * is stopped are paid and delivered, their publish fails (pizza-job answers
 * the relay 503: retried with backoff, never dead-lettered early), and once
 * Redis is back every order reaches pizza-consumer and is logged once. The
 * job's own XADD reconnects; the consumer recreates its group. */
#include <string.h>

#include "pizza_testlib.h"

#define N 30

int main(void)
{
    char *job_env[] = {"PIZZA_PAYMENT_DELAY=5ms",     "PIZZA_DELIVERY_DELAY=5ms",
                       "PIZZA_PAYMENT_FAIL_RATE=0.1", "PIZZA_DELIVERY_FAIL_RATE=0.1",
                       "OUTBOX_BACKOFF_BASE=50ms",    "OUTBOX_BACKOFF_MAX=500ms",
                       "OUTBOX_MAX_ATTEMPTS=1000",    NULL};
    pz_t p;
    pz_start(&p, "pizza_redis_down", job_env);
    tu_stop(p.redis_pid);
    p.redis_pid = 0;

    static char ids[N][40];
    pz_post_orders(&p, N, ids);
    /* Paid and delivered, but not published: the job says why. */
    int fails = wait_count(p.job_log, "publish_failed", 1, 30000);
    CHECK(fails >= 1, "pizza-job never reported the failed publish; see %s", p.job_log);
    long long delivered =
        wait_ll(p.conn, "SELECT count(*) FROM pizza_orders WHERE status = 'delivered'", N, 30000);
    CHECK(delivered == N, "%lld of %d orders delivered while Redis is down; see %s", delivered, N,
          p.job_log);
    CHECK(tu_query_ll(p.conn, "SELECT count(*) FROM pizza_order_outbox_dead_letter") == 0,
          "dead letters while Redis is down");
    printf("ok Redis down: %d orders delivered and waiting, %d failed publishes logged\n", N,
           fails);

    p.redis_pid = tu_redis_server_start(p.redis_port);
    long long got = wait_ll(p.conn, "SELECT count(*) FROM pizza_received", N, 60000);
    CHECK(got == N, "pizza-consumer logged %lld of %d orders after Redis came back; see %s, %s",
          got, N, p.job_log, p.cons_log);
    for (int i = 0; i < N; i++) {
        char needle[80];
        snprintf(needle, sizeof(needle), "Received order %s", ids[i]);
        int n = count_in_file(p.cons_log, needle);
        CHECK(n == 1, "order %s logged %d times; see %s", ids[i], n, p.cons_log);
    }
    CHECK(wait_ll(p.conn, "SELECT count(*) FROM pizza_order_events WHERE status = 'completed'", N,
                  20000) == N,
          "not every event completed");
    printf("ok Redis back: every order logged once\n");

    pz_stop(&p, &p.job, "pizza-job", p.job_log);
    pz_stop(&p, &p.consumer, "pizza-consumer", p.cons_log);
    pz_stop(&p, &p.api, "pizza-api", p.api_log);
    pz_teardown(&p);
    printf("PASS pizza_redis_down\n");
    return 0;
}
