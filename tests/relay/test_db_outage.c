/* Database down: every relay session is terminated and new connections are
 * refused for 3 s. The relay (the outbox-relay daemon, its JSON log captured)
 * keeps running, reconnects with backoff, logs the outage once (one db_down
 * line, then one db_up line), and publishes everything afterwards. */
#include "proc_common.h"

#define OUTAGE_MS 3000

int main(void)
{
    PGconn *c;
    const char *ci = setup_db("db_outage_reconnect", &c);
    char host[64], sink[128];
    int port;
    tu_redis_addr(host, sizeof(host), &port);
    snprintf(sink, sizeof(sink), "redis://%s:%d", host, port);
    redisContext *r = tu_redis_connect(host, port);
    const char *stream = tu_unique("dbdown");
    static char ids[2000][OUTBOX_UUID_STRLEN + 1];
    enqueue_many(c, stream, 1000, 50, 100, ids);

    const char *log = "db_outage_reconnect.log";
    unlink(log);
    char *extra[] = {"OUTBOX_BACKOFF_MAX=1s", "OUTBOX_LOG_LEVEL=info", NULL};
    pid_t relay = spawn_relay(ci, sink, extra, log);
    wait_drained(c, 30000);
    CHECK(log_count(log, "db_down", NULL) == 0, "db_down logged before the outage (see %s)", log);

    PGconn *admin = tu_connect(getenv("OUTBOX_TEST_PG"));
    const char *relay_sessions =
        "SELECT count(*) FROM pg_stat_activity WHERE datname = 't_db_outage_reconnect'"
        " AND application_name LIKE 'outbox-relay%'";
    CHECK(tu_query_ll(admin, relay_sessions) > 0, "no relay session to cut");
    PQclear(tu_exec(admin, "ALTER DATABASE t_db_outage_reconnect ALLOW_CONNECTIONS false"));
    long long down_at = tu_now_ms();
    PQclear(tu_exec(
        admin,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = 't_db_outage_reconnect' AND application_name LIKE 'outbox-relay%'"));
    wait_log_event(log, "db_down", 10000);              /* the relay noticed */
    enqueue_many(c, stream, 1000, 50, 100, ids + 1000); /* the app's own session still works */
    /* Throughout the outage the relay stays up and gets no session. */
    int samples = 0;
    do {
        CHECK(proc_alive(relay), "the relay exited during the database outage (see %s)", log);
        CHECK(tu_query_ll(admin, relay_sessions) == 0,
              "relay connected while connections were refused");
        samples++;
        tu_sleep_ms(100);
    } while (tu_now_ms() - down_at < OUTAGE_MS);
    PQclear(tu_exec(admin, "ALTER DATABASE t_db_outage_reconnect ALLOW_CONNECTIONS true"));
    long long t0 = tu_now_ms();
    wait_drained(c, 30000);
    long long back_ms = tu_now_ms() - t0;
    wait_log_event(log, "db_up", 10000);

    /* The outage is logged once: one db_down, then one db_up. */
    int down_line = 0, up_line = 0;
    int downs = log_count(log, "db_down", &down_line), ups = log_count(log, "db_up", &up_line);
    CHECK(downs == 1, "%d db_down lines for one outage (want 1, see %s)", downs, log);
    CHECK(ups == 1, "%d db_up lines for one outage (want 1, see %s)", ups, log);
    CHECK(down_line < up_line, "db_up (line %d) logged before db_down (line %d)", up_line,
          down_line);

    kill(relay, SIGTERM);
    CHECK(tu_wait(relay, 15000) == 0, "relay exit after SIGTERM");
    long n = 0, dups = 0;
    entry_t *got = read_stream(r, stream, &n);
    CHECK(check_all_present(ids, 2000, got, n, &dups) == 2000, "lost events");
    check_key_order(got, n, 50);
    free(got);
    PQfinish(admin);
    redisFree(r);
    PQfinish(c);
    printf("PASS db_outage_reconnect: relay survived a %d ms database outage (%d checks: no "
           "session, still "
           "running), logged one db_down and one db_up, drained %lld ms after it ended\n",
           OUTAGE_MS, samples, back_ms);
    return 0;
}
