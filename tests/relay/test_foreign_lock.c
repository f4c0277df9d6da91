/* A session outside the relay locks the oldest pending event of one key
 * (SELECT ... FOR UPDATE, as an operator's psql or a reporting job might)
 * and holds it for a while. The relay must neither skip that event and
 * publish the key's later ones first (what a claim with SKIP LOCKED did: the
 * key's head was skipped, the rest of the key taken), nor stop the other
 * lanes. Checked at the real boundary: the lock is PostgreSQL's, the stream
 * Redis's.
 *
 *   1. the holder commits without changing the row;
 *   2. the holder rolls back.
 *
 * Each time, while the lock is held, events of other keys keep reaching the
 * stream and no event of the locked key does; after it ends, the stream
 * holds every event exactly once, in per-key order. */
#include "relay_common.h"

#define N 2000
#define KEYS 40
#define HOLD_MS 1500

static long long xlen(redisContext *r, const char *stream)
{
    redisReply *rep = redisCommand(r, "XLEN %s", stream);
    CHECK(rep && rep->type == REDIS_REPLY_INTEGER, "XLEN failed");
    long long n = rep->integer;
    freeReplyObject(rep);
    return n;
}

/* Entries of key in the stream so far. */
static long key_entries(redisContext *r, const char *stream, const char *key)
{
    long n = 0, count = 0;
    entry_t *got = read_stream(r, stream, &n);
    for (long i = 0; i < n; i++)
        count += !strcmp(got[i].key, key);
    free(got);
    return count;
}

static void run(PGconn *c, const char *ci, const char *host, int port, redisContext *r,
                const char *end)
{
    const char *stream = tu_unique("foreign_lock");
    static char ids[N][OUTBOX_UUID_STRLEN + 1];
    enqueue_many(c, stream, N, KEYS, 100, ids);

    /* The holder: the head of key k0, locked in an open transaction. */
    PGconn *h = tu_connect(ci);
    PQclear(tu_exec(h, "BEGIN"));
    CHECK(tu_query_ll(h, "SELECT count(*) FROM (SELECT seq FROM outbox WHERE key = 'k0'"
                         " ORDER BY seq LIMIT 1 FOR UPDATE) l") == 1,
          "the head of k0 not locked");

    outbox_conf_t *conf = relay_conf(ci, host, port);
    conf_set(conf, "workers", "2");
    conf_set(conf, "batch_size", "100");
    outbox_relay_t *relay = tu_relay_start(conf);

    /* Other lanes go on while the head of k0 is held... */
    long long until = tu_now_ms() + tu_ms(30000);
    while (xlen(r, stream) < N / 4) {
        CHECK(tu_now_ms() < until, "nothing published while one row was locked (%lld entries)",
              xlen(r, stream));
        tu_sleep_ms(20);
    }
    tu_sleep_ms(HOLD_MS);
    long long during = xlen(r, stream);
    /* ...and no event of k0 goes out before its head. */
    long k0 = key_entries(r, stream, "k0");
    CHECK(k0 == 0, "%ld events of k0 published while its head was locked (%s)", k0, end);
    CHECK(during < N, "the whole backlog published while the head of k0 was locked");

    PQclear(tu_exec(h, end));
    PQfinish(h);
    wait_drained(c, 60000);
    outbox_relay_stop(relay);
    CHECK(outbox_relay_wait(relay, 15000) == OUTBOX_OK, "workers did not stop");
    outbox_relay_destroy(relay);
    check_stream_exactly_once(r, stream, ids, N, KEYS);
    printf("relay_foreign_lock (%s): %lld of %d events published while the head of k0 was "
           "locked, none of k0; then all once, in per-key order\n",
           end, during, N);
}

int main(void)
{
    RELAY_TEST_OPEN("relay_foreign_lock");
    run(c, ci, host, port, r, "COMMIT");
    run(c, ci, host, port, r, "ROLLBACK");
    redisFree(r);
    PQfinish(c);
    printf("PASS relay_foreign_lock\n");
    return 0;
}
