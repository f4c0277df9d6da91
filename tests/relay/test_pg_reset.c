/* The relay's database session reset by the server in the middle of a long
 * message (tests/orders/pgproxy.c, PGPROXY_RESET_MID_MESSAGE): the client's
 * next write fails while its socket still holds unread bytes, and libpq 15
 * then reports the error with PQstatus() still CONNECTION_OK (and, in
 * pipeline mode, no Sync ever after). The relay's worker must notice, drop
 * the session and reconnect, and publish every event once, in key order.
 *
 * The outbox-relay daemon runs one worker (OUTBOX_WORKERS=1, relay name
 * "rr") through the proxy; its worker session is reset three times while
 * idle, each time before a batch of 200 events is committed. */
#include "pgproxy.h"
#include "proc_common.h"

#define ROUNDS 3
#define PER 200

int main(void)
{
    PGconn *c;
    const char *ci = setup_db("relay_pg_reset", &c);
    pgproxy_t *px = pgproxy_start_for(ci);
    char proxied[1200];
    snprintf(proxied, sizeof(proxied),
             "%s host=127.0.0.1 port=%d sslmode=disable gssencmode=disable", ci, pgproxy_port(px));
    char host[64], sink[128];
    int port;
    tu_redis_addr(host, sizeof(host), &port);
    snprintf(sink, sizeof(sink), "redis://%s:%d", host, port);
    redisContext *r = tu_redis_connect(host, port);
    const char *stream = tu_unique("pgreset");
    static char ids[(ROUNDS + 1) * PER][OUTBOX_UUID_STRLEN + 1];

    const char *log = "relay_pg_reset.log";
    unlink(log);
    char *extra[] = {"OUTBOX_WORKERS=1", "OUTBOX_RELAY_NAME=rr", "OUTBOX_BACKOFF_MAX=500ms",
                     "OUTBOX_LOG_LEVEL=info", NULL};
    enqueue_many(c, stream, PER, 10, 20, ids);
    pid_t relay = spawn_relay(proxied, sink, extra, log);
    wait_drained(c, 30000);

    for (int k = 1; k <= ROUNDS; k++) {
        pgproxy_arm_for(px, PGPROXY_RESET_MID_MESSAGE, "outbox-relay rr worker-1");
        long long end = tu_now_ms() + 10000;
        while (pgproxy_cuts(px) < k && tu_now_ms() < end)
            tu_sleep_ms(10);
        CHECK(pgproxy_cuts(px) == k, "round %d: the proxy reset no worker session", k);
        enqueue_many(c, stream, PER, 10, 20, ids + k * PER);
        long long t0 = tu_now_ms();
        wait_drained(c, 30000);
        printf("round %d: worker session reset mid-message; %d events published %lld ms later\n", k,
               PER, tu_now_ms() - t0);
        CHECK(proc_alive(relay), "the relay exited after the reset (see %s)", log);
    }

    kill(relay, SIGTERM);
    CHECK(tu_wait(relay, 15000) == 0, "relay exit after SIGTERM (see %s)", log);
    CHECK(log_count(log, "shutdown_timeout", NULL) == 0, "the relay stopped at its timeout");
    long n = 0, dups = 0;
    entry_t *got = read_stream(r, stream, &n);
    CHECK(check_all_present(ids, (ROUNDS + 1) * PER, got, n, &dups) == (ROUNDS + 1) * PER,
          "lost events");
    check_key_order(got, n, 10);
    free(got);
    pgproxy_stop(px);
    redisFree(r);
    PQfinish(c);
    printf("PASS relay_pg_reset: %d resets of the worker's session mid-message, %d events "
           "published, %ld duplicates, key order kept\n",
           ROUNDS, (ROUNDS + 1) * PER, dups);
    return 0;
}
