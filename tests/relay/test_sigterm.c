/* SIGTERM under load: the relay stops claiming, finishes the batch in
 * flight (its events are published once and acknowledged) and exits 0
 * within the shutdown timeout; nothing is lost (a new relay publishes the
 * rest). A second signal exits at once, abandoning its batch unacknowledged,
 * and still nothing is lost.
 *
 * "In flight" is observed, not hoped for: the test waits until PostgreSQL
 * shows a batch freshly claimed by a relay transaction (rows locked by it)
 * and checks the rows are still held after the signal was sent. An
 * acknowledgement delay (OUTBOX_FAULT_ACK_DELAY) keeps each batch open long
 * enough for that. */
#include "proc_common.h"

#define N 20000
#define KEYS 100
#define FLY 256 /* at most workers x batch size events in flight */

int main(void)
{
    PGconn *c;
    const char *ci = setup_db("sigterm_under_load", &c);
    char host[64], sink[128];
    int port;
    tu_redis_addr(host, sizeof(host), &port);
    snprintf(sink, sizeof(sink), "redis://%s:%d", host, port);
    redisContext *r = tu_redis_connect(host, port);
    const char *stream = tu_unique("sigterm");
    static char ids[N][OUTBOX_UUID_STRLEN + 1];
    producer_t prod = {.conninfo = ci,
                       .topic = stream,
                       .n = N,
                       .nkeys = KEYS,
                       .per_tx = 100,
                       .pause_ms = 5,
                       .ids = ids};
    producer_start(&prod);

    /* 1. graceful: SIGTERM while a batch is provably in flight (each batch
     *    waits 1 s between publish and acknowledgement). */
    const char *log1 = "sigterm_under_load.graceful.log";
    unlink(log1);
    char *extra[] = {"OUTBOX_FAULT_ACK_DELAY=1s", "OUTBOX_SHUTDOWN_TIMEOUT=5s",
                     "OUTBOX_BATCH_SIZE=50", "OUTBOX_LOG_LEVEL=info", NULL};
    pid_t relay = spawn_relay(ci, sink, extra, log1);
    static char fly[FLY][OUTBOX_UUID_STRLEN + 1];
    int nfly = wait_batch_claimed(c, fly, FLY, 30000);
    long long t0 = tu_now_ms();
    kill(relay, SIGTERM);
    int held = count_inflight(c, fly, nfly);
    CHECK(held > 0,
          "the batch of %d events was acknowledged before SIGTERM arrived: nothing was in flight",
          nfly);
    int st = tu_wait(relay, 8000);
    long long stop_ms = tu_now_ms() - t0;
    CHECK(st == 0, "SIGTERM: exit status %d (want 0 within the 5 s shutdown timeout)", st);
    CHECK(stop_ms < 5000, "SIGTERM: exit took %lld ms, beyond the 5 s shutdown timeout", stop_ms);
    CHECK(log_count(log1, "shutdown_timeout", NULL) == 0 && log_count(log1, "stopped", NULL) == 1,
          "the relay did not stop cleanly (see %s)", log1);
    /* The batch in flight was finished: acknowledged (rows gone) and
     * published exactly once. */
    CHECK(count_in_outbox(c, fly, nfly) == 0,
          "%lld of the %d in-flight events were not acknowledged", count_in_outbox(c, fly, nfly),
          nfly);
    long n = 0;
    entry_t *got = read_stream(r, stream, &n);
    for (int i = 0; i < nfly; i++)
        CHECK(count_entries(got, n, fly[i]) == 1,
              "in-flight event %s published %ld times (want once)", fly[i],
              count_entries(got, n, fly[i]));
    free(got);
    /* Its sessions end with it (the server notices the closed sockets at once). */
    const char *sessions =
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name LIKE 'outbox-relay%'";
    long long left_open = -1;
    for (int i = 0; i < 40 && (left_open = tu_query_ll(c, sessions)) != 0; i++)
        tu_sleep_ms(50);
    CHECK(left_open == 0, "%lld relay sessions still open 2 s after exit", left_open);

    /* 2. impatient: a second signal exits at once even with a batch waiting
     *    10 s for its acknowledgement; that batch is left unacknowledged. */
    const char *log2 = "sigterm_under_load.impatient.log";
    unlink(log2);
    char *slow[] = {"OUTBOX_FAULT_ACK_DELAY=10s", "OUTBOX_SHUTDOWN_TIMEOUT=60s",
                    "OUTBOX_LOG_LEVEL=info", NULL};
    relay = spawn_relay(ci, sink, slow, log2);
    static char fly2[FLY][OUTBOX_UUID_STRLEN + 1];
    int nfly2 = wait_batch_claimed(c, fly2, FLY, 30000);
    kill(relay, SIGTERM);
    wait_log_event(log2, "shutting_down", 5000); /* the first signal is being honoured */
    CHECK(count_inflight(c, fly2, nfly2) > 0,
          "the 10 s batch is no longer in flight before the second signal");
    t0 = tu_now_ms();
    kill(relay, SIGINT);
    st = tu_wait(relay, 3000);
    long long second_ms = tu_now_ms() - t0;
    CHECK(st >= 0, "second signal did not make the relay exit at once");
    CHECK(count_in_outbox(c, fly2, nfly2) == nfly2,
          "the abandoned batch was acknowledged: %lld of %d events left in the outbox",
          count_in_outbox(c, fly2, nfly2), nfly2);

    /* 3. a fresh relay publishes whatever is left: nothing was lost. */
    pthread_join(prod.thread, NULL);
    relay = spawn_relay(ci, sink, NULL, "sigterm_under_load.final.log");
    wait_drained(c, 120000);
    kill(relay, SIGTERM);
    CHECK(tu_wait(relay, 15000) == 0, "final relay exit");
    long dups = 0;
    got = read_stream(r, stream, &n);
    CHECK(check_all_present(ids, N, got, n, &dups) == N, "events lost");
    check_key_order(got, n, KEYS);
    for (int i = 0; i < nfly; i++)
        CHECK(count_entries(got, n, fly[i]) == 1, "event %s of the finished batch published again",
              fly[i]);
    free(got);
    redisFree(r);
    PQfinish(c);
    printf(
        "PASS sigterm_under_load: SIGTERM with %d events in flight (%d still held after the "
        "signal): "
        "exit 0 in %lld ms, batch acknowledged and published once; second signal exited in %lld ms "
        "leaving its %d events for the next relay; %d events all published (%ld duplicates)\n",
        nfly, held, stop_ms, second_ms, nfly2, N, dups);
    return 0;
}
