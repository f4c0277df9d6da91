/* SIGTERM under load: the relay stops claiming, finishes the batch in
 * flight and exits 0 within the shutdown timeout; nothing is lost (a new
 * relay publishes the rest). A second signal exits at once, and still
 * nothing is lost. */
#include "proc_common.h"

#define N 20000
#define KEYS 100

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
    producer_t prod = {.conninfo = ci, .topic = stream, .n = N, .nkeys = KEYS, .per_tx = 100, .pause_ms = 5, .ids = ids};
    producer_start(&prod);

    /* 1. graceful: SIGTERM while batches are in flight (200 ms ack delay). */
    char *extra[] = {"OUTBOX_FAULT_ACK_DELAY=200ms", "OUTBOX_SHUTDOWN_TIMEOUT=5s", "OUTBOX_BATCH_SIZE=50", NULL};
    pid_t relay = spawn_relay(ci, sink, extra, "sigterm_under_load.log");
    tu_sleep_ms(1500);
    long long t0 = tu_now_ms();
    kill(relay, SIGTERM);
    int st = tu_wait(relay, 8000);
    long long stop_ms = tu_now_ms() - t0;
    CHECK(st == 0, "SIGTERM: exit status %d (want 0 within the 5 s shutdown timeout)", st);
    /* Its sessions end with it (the server notices the closed sockets at once). */
    const char *sessions = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                           " AND application_name LIKE 'outbox-relay%'";
    long long left_open = -1;
    for (int i = 0; i < 40 && (left_open = tu_query_ll(c, sessions)) != 0; i++)
        tu_sleep_ms(50);
    CHECK(left_open == 0, "%lld relay sessions still open 2 s after exit", left_open);

    /* 2. impatient: a second signal exits at once even with a batch waiting. */
    char *slow[] = {"OUTBOX_FAULT_ACK_DELAY=10s", "OUTBOX_SHUTDOWN_TIMEOUT=60s", NULL};
    relay = spawn_relay(ci, sink, slow, "sigterm_under_load.log");
    tu_sleep_ms(1500);
    kill(relay, SIGTERM);
    tu_sleep_ms(200);
    t0 = tu_now_ms();
    kill(relay, SIGINT);
    st = tu_wait(relay, 3000);
    long long second_ms = tu_now_ms() - t0;
    CHECK(st >= 0, "second signal did not make the relay exit at once");

    /* 3. a fresh relay publishes whatever is left: nothing was lost. */
    pthread_join(prod.thread, NULL);
    relay = spawn_relay(ci, sink, NULL, "sigterm_under_load.log");
    wait_drained(c, 120000);
    kill(relay, SIGTERM);
    CHECK(tu_wait(relay, 15000) == 0, "final relay exit");
    long n = 0, dups = 0;
    entry_t *got = read_stream(r, stream, &n);
    CHECK(check_all_present(ids, N, got, n, &dups) == N, "events lost");
    check_key_order(got, n, KEYS);
    free(got);
    redisFree(r);
    PQfinish(c);
    printf("PASS sigterm_under_load: exit 0 %lld ms after SIGTERM, second signal exited in %lld ms, %d events all "
           "published (%ld duplicates from the abandoned batch)\n", stop_ms, second_ms, N, dups);
    return 0;
}
