/* vacuum_after: the relay vacuums its outbox table after that many events
 * (PostgreSQL counts the VACUUM: pg_stat_user_tables.vacuum_count), and
 * not at all with 0; either way every event is published exactly once. */
#include "relay_common.h"

#define N 6000
#define KEYS 500

static long long vacuums(PGconn *c)
{
    /* A fresh snapshot of the statistics each time. */
    PQclear(tu_exec(c, "SELECT pg_stat_clear_snapshot()"));
    return tu_query_ll(c, "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'outbox'");
}

/* Drains a backlog with vacuum_after, then keeps the relay running: until
 * PostgreSQL has counted until_vacuums VACUUMs of outbox (worker-1 vacuums
 * between batches once they are no longer full), at most 20 s; or, with 0,
 * for 1.5 s of idle looks in which a VACUUM would have happened. */
static void drain(PGconn *c, const char *ci, const char *host, int port, const char *after,
                  redisContext *r, const char *what, long long until_vacuums)
{
    const char *stream = tu_unique(what);
    static char ids[N][OUTBOX_UUID_STRLEN + 1];
    enqueue_many(c, stream, N, KEYS, 200, ids);
    char err[512];
    outbox_conf_t *conf = relay_conf(ci, host, port);
    conf_set(conf, "workers", "2");
    conf_set(conf, "batch_size", "500");
    conf_set(conf, "vacuum_after", after);
    outbox_relay_t *relay = outbox_relay_new(conf, err, sizeof(err));
    CHECK(relay, "%s", err);
    CHECK(outbox_relay_start(relay, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    wait_drained(c, 120000);
    long long end = tu_now_ms() + tu_ms(20000);
    while (until_vacuums > 0 && vacuums(c) < until_vacuums && tu_now_ms() < end)
        tu_sleep_ms(20);
    if (until_vacuums == 0)
        tu_sleep_ms(1500); /* off: worker-1 has had its idle looks (poll_interval 1 s) */
    outbox_relay_stop(relay);
    CHECK(outbox_relay_wait(relay, 15000) == OUTBOX_OK, "workers did not stop");
    outbox_relay_destroy(relay);
    check_stream_exactly_once(r, stream, ids, N, KEYS);
}

int main(void)
{
    RELAY_TEST_OPEN("relay_vacuum");
    /* Autovacuum must not be the one counted. */
    PQclear(tu_exec(c, "ALTER TABLE outbox SET (autovacuum_enabled = false)"));

    long long v0 = vacuums(c);
    drain(c, ci, host, port, "1000", r, "vacuum_on", v0 + 1);
    long long v1 = vacuums(c);
    CHECK(v1 > v0, "vacuum_after=1000: %d events acknowledged, no VACUUM of outbox (%lld -> %lld)",
          N, v0, v1);

    drain(c, ci, host, port, "0", r, "vacuum_off", 0);
    long long v2 = vacuums(c);
    CHECK(v2 == v1, "vacuum_after=0: the relay vacuumed (%lld -> %lld)", v1, v2);

    redisFree(r);
    PQfinish(c);
    printf("PASS relay_vacuum: %lld VACUUM(s) with vacuum_after=1000, none with 0\n", v1 - v0);
    return 0;
}
