/* A pizza-job frozen in the middle of a step, past its relay transaction:
 * another job takes the event and does every step; the frozen one, thawed,
 * must not do (nor log) a step again.
 *
 * Found by chaos_pizza (relays frozen with SIGSTOP, then thawed): two jobs
 * logged "pizza delivered" for one order. The database kept one effect (each
 * step's UPDATE is guarded by the order's status), but the thawed job took
 * its UPDATE that changed nothing for a step done, and logged the payment
 * and the delivery again.
 *
 * Here: job 1 alone takes the one order's event; once its step handler has
 * read the order (status pending) and sleeps in the payment, it is frozen
 * (SIGSTOP). PostgreSQL ends its relay session after publish_timeout (idle
 * in transaction), job 2 starts, takes the event and completes the order.
 * Job 1 is thawed: it finds the order moved on and says so (step_taken);
 * "payment accepted" and "pizza delivered" appear once each for the order. */
#include <signal.h>
#include <string.h>

#include "pizza_testlib.h"

int main(void)
{
    char *job_env[] = {"PIZZA_PAYMENT_DELAY=1500ms",
                       "PIZZA_DELIVERY_DELAY=10ms",
                       "PIZZA_PAYMENT_FAIL_RATE=0",
                       "PIZZA_DELIVERY_FAIL_RATE=0",
                       "OUTBOX_PUBLISH_TIMEOUT=2s",
                       "OUTBOX_BACKOFF_BASE=20ms",
                       "OUTBOX_BACKOFF_MAX=200ms",
                       "OUTBOX_WORKERS=1",
                       "OUTBOX_POLL_MIN_INTERVAL=10ms",
                       "OUTBOX_LOG_FORMAT=json",
                       NULL};
    pz_t p;
    pz_start(&p, "pizza_job_freeze", job_env);
    static char ids[1][40];
    pz_post_orders(&p, 1, ids);

    /* Job 1's handler has read the order and sleeps in the payment. */
    static const char reading[] =
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'pizza-job steps'"
        " AND query LIKE 'SELECT status FROM pizza_orders%'";
    CHECK(wait_ll(p.conn, reading, 1, 30000) == 1, "job 1 never read the order; see %s", p.job_log);
    pid_t job1 = p.job;
    CHECK(kill(job1, SIGSTOP) == 0, "SIGSTOP job 1");

    /* Its relay session ends (idle in transaction past publish_timeout);
     * job 2 takes the event and completes the order. */
    pz_spawn_job(&p, job_env);
    CHECK(wait_ll(p.conn, "SELECT count(*) FROM pizza_orders WHERE status = 'completed'", 1,
                  30000) == 1,
          "job 2 did not complete the order while job 1 was frozen; see %s", p.job_log);

    char pay[96], deliv[96];
    snprintf(pay, sizeof(pay), "\"msg\":\"payment accepted\",\"order_id\":\"%s\"", ids[0]);
    snprintf(deliv, sizeof(deliv), "\"msg\":\"pizza delivered\",\"order_id\":\"%s\"", ids[0]);
    CHECK(count_in_file(p.job_log, pay) == 1, "job 2 logged no payment");

    /* Thawed, job 1 ends its step: either it notices (step_taken) or it
     * pays again (a second "payment accepted"). */
    CHECK(kill(job1, SIGCONT) == 0, "SIGCONT job 1");
    long long end = tu_now_ms() + 20000;
    while (tu_now_ms() < end && count_in_file(p.job_log, "\"event\":\"step_taken\"") == 0 &&
           count_in_file(p.job_log, pay) < 2)
        tu_sleep_ms(20);
    CHECK(count_in_file(p.job_log, pay) == 1, "the thawed job logged the payment again; see %s",
          p.job_log);
    CHECK(count_in_file(p.job_log, "\"event\":\"step_taken\"") == 1,
          "the thawed job did not say another job had done the step; see %s", p.job_log);
    CHECK(wait_ll(p.conn, "SELECT count(*) FROM pizza_received", 1, 20000) == 1,
          "pizza-consumer did not log the order; see %s", p.cons_log);
    CHECK(count_in_file(p.job_log, deliv) == 1, "\"pizza delivered\" %d times for one order",
          count_in_file(p.job_log, deliv));
    CHECK(tu_query_ll(p.conn, "SELECT payment_attempts FROM pizza_orders") == 1,
          "payment attempts: %lld",
          tu_query_ll(p.conn, "SELECT payment_attempts FROM pizza_orders"));
    printf("ok the thawed job found the order moved on: one payment, one delivery\n");

    pz_stop(&p, &job1, "pizza-job 1", p.job_log);
    pz_stop(&p, &p.job, "pizza-job 2", p.job_log);
    pz_stop(&p, &p.consumer, "pizza-consumer", p.cons_log);
    pz_stop(&p, &p.api, "pizza-api", p.api_log);
    pz_teardown(&p);
    printf("PASS pizza_job_freeze\n");
    return 0;
}
