/* The relay's watcher (poll_min_interval): producers that write the outbox
 * with plain SQL and send no wake-up hint see their events published in
 * milliseconds, although the relay's poll interval here is a minute; and an
 * event that is due but cannot be claimed (its key waits for a retry) does
 * not make the watcher wake the workers in a loop. */
#include "relay_common.h"

static long long xacts(PGconn *c)
{
    PQclear(tu_exec(c, "SELECT pg_stat_clear_snapshot()"));
    return tu_query_ll(c, "SELECT xact_commit + xact_rollback FROM pg_stat_database"
                          " WHERE datname = current_database()");
}

int main(void)
{
    RELAY_TEST_OPEN("relay_watcher");
    const char *stream = tu_unique("watch");
    outbox_conf_t *conf = relay_conf(ci, host, port);
    conf_set(conf, "notify", "false");
    conf_set(conf, "poll_interval", "60s");
    conf_set(conf, "poll_min_interval", "1ms");
    outbox_relay_t *relay = tu_relay_start(conf);
    tu_sleep_ms(2000); /* lanes split, workers asleep for their minute */

    /* 1. Plain SQL, no hint: each event is in Redis long before a poll. */
    char sql[512];
    long long worst = 0;
    for (int i = 0; i < 20; i++) {
        snprintf(sql, sizeof(sql),
                 "INSERT INTO outbox (topic, type, key, payload) VALUES ('%s', 'T', 'k%d',"
                 " '{\"n\":%d}')",
                 stream, i % 5, i);
        PQclear(tu_exec(c, sql));
        long long t0 = tu_now_ms();
        for (;;) {
            redisReply *x = redisCommand(r, "XLEN %s", stream);
            CHECK(x && x->type == REDIS_REPLY_INTEGER, "XLEN failed");
            long long len = x->integer;
            freeReplyObject(x);
            if (len == i + 1)
                break;
            CHECK(tu_now_ms() - t0 < 15000,
                  "event %d not published 15 s after its commit (poll_interval is 60 s: the "
                  "watcher did not wake a worker)",
                  i);
            tu_sleep_ms(1);
        }
        if (tu_now_ms() - t0 > worst)
            worst = tu_now_ms() - t0;
        tu_sleep_ms(i % 2 ? 5 : 300); /* some in a row, some after the watcher backed off */
    }
    printf("20 plain-SQL events published, the slowest %lld ms after its commit\n", worst);

    /* 2. A due event behind one that waits an hour for its retry: claimable
     *    by no one. The watcher sees it among the newest due events but,
     *    with no progress, must not wake workers again and again. */
    snprintf(sql, sizeof(sql),
             "INSERT INTO outbox (topic, type, key, payload, next_attempt_at) VALUES"
             " ('%s', 'T', 'stuck', '{\"n\":1}', now() + interval '1 hour');"
             "INSERT INTO outbox (topic, type, key, payload) VALUES ('%s', 'T', 'stuck', "
             "'{\"n\":2}')",
             stream, stream);
    PQclear(tu_exec(c, sql));
    tu_sleep_ms(2500); /* past the watcher's hot second */
    long long x0 = xacts(c), t0 = tu_now_ms();
    tu_sleep_ms(4000);
    long long x1 = xacts(c), ms = tu_now_ms() - t0;
    double per_s = (double)(x1 - x0 - 2) * 1000.0 / (double)ms;
    printf("with an unclaimable due event: %.0f transactions/s on the database (watcher looks, "
           "worker claims)\n",
           per_s);
    CHECK(per_s < 100,
          "%.0f transactions/s with nothing to publish: the watcher keeps waking the workers "
          "for an event they cannot claim",
          per_s);
    CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox WHERE key = 'stuck'") == 2,
          "the stuck key's events moved");

    outbox_relay_destroy(relay);
    redisFree(r);
    PQfinish(c);
    printf("PASS relay_watcher\n");
    return 0;
}
