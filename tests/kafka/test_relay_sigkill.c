/* The outbox-relay daemon publishing to Kafka is SIGKILLed in the middle of
 * batches (a 300 ms pause between Kafka's delivery reports and the
 * acknowledgement in the database makes the kill land there), then started
 * again: every event reaches Kafka, per-key order holds, and the only
 * damage is duplicates of the batches that were confirmed but not
 * acknowledged. The mock cluster lives in this process; the daemon is a
 * separate process talking to it over loopback. */
#include <signal.h>

#include "kafka_common.h"

#define TOTAL 3000
#define NKEYS 30

int main(void)
{
    PGconn *db;
    const char *ci = kt_setup_db("kafka_relay_sigkill", &db);
    kt_cluster_t cl;
    kt_cluster_start(&cl, 3);
    kt_topic(&cl, "carts", 4, 3);
    kt_enqueue(db, "carts", "CartUpdated", "cart-", 0, TOTAL, NKEYS, 50);

    char env_db[1200], env_sink[400];
    snprintf(env_db, sizeof(env_db), "DATABASE_URL=%s", ci);
    snprintf(env_sink, sizeof(env_sink), "OUTBOX_SINK=%s", cl.url);
    char *env1[] = {env_db,
                    env_sink,
                    "OUTBOX_METRICS_ADDR=off",
                    "OUTBOX_BATCH_SIZE=100",
                    "OUTBOX_WORKERS=3",
                    "OUTBOX_FAULT_ACK_DELAY=300ms",
                    "OUTBOX_LOG_LEVEL=warn",
                    NULL};
    char *argv[] = {(char *)tu_bin("outbox-relay"), NULL};
    char log[256];
    snprintf(log, sizeof(log), "/tmp/kt-relay-sigkill-%d.log", (int)getpid());
    unlink(log);
    pid_t pid = tu_spawn(argv, env1, log);
    long long end = tu_now_ms() + 30000, left = TOTAL;
    while (tu_now_ms() < end &&
           (left = tu_query_ll(db, "SELECT count(*) FROM outbox")) > TOTAL * 2 / 3) {
        CHECK(tu_wait(pid, 1) == -1, "outbox-relay exited early (see %s)", log);
        tu_sleep_ms(20);
    }
    tu_sleep_ms(150); /* land inside the next ack pause */
    kill(pid, SIGKILL);
    CHECK(tu_wait(pid, 10000) == 128 + SIGKILL, "relay did not die by SIGKILL");
    left = tu_query_ll(db, "SELECT count(*) FROM outbox");
    printf("SIGKILLed with %lld of %d events not acknowledged\n", left, TOTAL);
    CHECK(left > 0 && left < TOTAL, "kill did not land mid-run (left=%lld)", left);

    char *env2[] = {
        env_db, env_sink, "OUTBOX_METRICS_ADDR=off", "OUTBOX_WORKERS=3", "OUTBOX_LOG_LEVEL=warn",
        NULL};
    pid = tu_spawn(argv, env2, log);
    kt_wait_drained(db, 40000);
    kill(pid, SIGTERM);
    CHECK(tu_wait(pid, 15000) == 0, "relay did not exit 0 on SIGTERM (see %s)", log);

    long n;
    kt_rec_t *recs = kt_kcat_read(&cl, "carts", 1, &n);
    long dups = kt_check(recs, n, "cart-", TOTAL, NKEYS);
    printf("carts: %ld records for %d events: none lost, %ld duplicates from the killed batches, "
           "order kept\n",
           n, TOTAL, dups);
    CHECK(dups > 0, "no duplicate: the kill did not land between confirmation and acknowledgement");
    kt_recs_free(recs, n);
    unlink(log);
    PQfinish(db);
    kt_cluster_stop(&cl);
    printf("PASS kafka_relay_sigkill\n");
    return 0;
}
