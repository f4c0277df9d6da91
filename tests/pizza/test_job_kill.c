/* pizza-job SIGKILLed mid-run and restarted (seed 004's "even if a service
 * crashes"). The job is killed while some events are published to
 * pizza-orders but not yet marked (fault_ack_delay widens that window), with
 * payment failures injected. After the restart it publishes those again with
 * the same event ids; pizza-consumer logs every order exactly once and says
 * "SKIPPING duplicate message" for the copies. */
#include <signal.h>
#include <string.h>

#include "pizza_testlib.h"

#define N 60

int main(void)
{
    char *job_env[] = {"PIZZA_PAYMENT_DELAY=5ms",
                       "PIZZA_DELIVERY_DELAY=5ms",
                       "PIZZA_PAYMENT_FAIL_RATE=0.2",
                       "PIZZA_DELIVERY_FAIL_RATE=0.1",
                       "OUTBOX_BACKOFF_BASE=20ms",
                       "OUTBOX_BACKOFF_MAX=200ms",
                       "OUTBOX_MAX_ATTEMPTS=60",
                       "OUTBOX_FAULT_ACK_DELAY=500ms",
                       NULL};
    pz_t p;
    pz_start(&p, "pizza_job_kill", job_env);
    static char ids[N][40];
    pz_post_orders(&p, N, ids);

    /* Kill when events are in the stream but their rows are not marked yet. */
    long long end = tu_now_ms() + 60000, published = 0, marked = 0;
    while (tu_now_ms() < end) {
        marked = tu_query_ll(p.conn,
                             "SELECT count(*) FROM pizza_order_outbox WHERE status = 'processed'");
        published = pz_stream_len(&p);
        if (published > marked && marked >= 3)
            break;
        tu_sleep_ms(20);
    }
    CHECK(published > marked,
          "never saw a published but unmarked event (%lld published, %lld "
          "marked); see %s",
          published, marked, p.job_log);
    kill(p.job, SIGKILL);
    CHECK(tu_wait(p.job, 5000) == 128 + SIGKILL, "pizza-job did not die");
    p.job = 0;
    marked =
        tu_query_ll(p.conn, "SELECT count(*) FROM pizza_order_outbox WHERE status = 'processed'");
    published = pz_stream_len(&p);
    printf("ok SIGKILL with %lld events published and %lld marked\n", published, marked);
    CHECK(published > marked, "the kill left no event to publish again (%lld/%lld)", published,
          marked);

    pz_spawn_job(&p, job_env);
    long long got = wait_ll(p.conn, "SELECT count(*) FROM pizza_received", N, 120000);
    CHECK(got == N, "pizza-consumer logged %lld of %d orders; see %s and %s", got, N, p.job_log,
          p.cons_log);
    CHECK(wait_ll(p.conn, "SELECT count(*) FROM pizza_order_events WHERE status = 'completed'", N,
                  20000) == N,
          "not every event row completed after the restart");
    for (int i = 0; i < N; i++) {
        char needle[80];
        snprintf(needle, sizeof(needle), "Received order %s", ids[i]);
        int n = count_in_file(p.cons_log, needle);
        CHECK(n == 1, "order %s logged %d times; see %s", ids[i], n, p.cons_log);
    }
    long long total = pz_stream_len(&p);
    CHECK(total > N, "the restarted job published nothing again (%lld entries for %d orders)",
          total, N);
    int dups = wait_count(p.cons_log, "SKIPPING duplicate message", 1, 10000);
    CHECK(dups >= 1, "the consumer saw no copy; see %s", p.cons_log);
    printf("ok %lld stream entries for %d orders, %d copies skipped, each order logged once\n",
           total, N, dups);

    pz_stop(&p, &p.job, "pizza-job", p.job_log);
    pz_stop(&p, &p.consumer, "pizza-consumer", p.cons_log);
    pz_stop(&p, &p.api, "pizza-api", p.api_log);
    pz_teardown(&p);
    printf("PASS pizza_job_kill\n");
    return 0;
}
