/* Priority: across keys, higher priority is claimed first; within a key,
 * seq order still rules.
 *
 * Committed before the relay starts, in this order: a backlog of 20,000
 * ordinary events (priority 0) on 1,000 keys; two ordinary events w1, w2 of
 * key "w"; 100 events of priority 10 on 100 other keys; then w3 of key "w"
 * with priority 10. In seq order every high-priority event comes after the
 * whole backlog. The relay (5 workers, batch 100) must publish each of the
 * 100 before stream position 10,000 (half the backlog), and w3 only after w1
 * and w2, which sit behind the backlog. */
#include "relay_common.h"

#define N 20000
#define KEYS 1000
#define HI 100
#define HI_PRIORITY 10
#define LIMIT_POS (N / 2)

typedef char uuid_str_t[OUTBOX_UUID_STRLEN + 1];

static void enqueue_prio(PGconn *c, const char *topic, const char *key, int seq, int priority,
                         char *id_out)
{
    char err[512], payload[128];
    snprintf(payload, sizeof(payload), "{\"seq\":%d,\"key\":\"%s\"}", seq, key);
    outbox_event_t ev = {
        .topic = topic, .type = "TestEvent", .key = key, .payload = payload, .priority = priority};
    CHECK(outbox_enqueue(c, &ev, id_out, err, sizeof(err)) == OUTBOX_OK, "enqueue: %s", err);
}

static long position_of(entry_t *got, long n, const char *id)
{
    long pos = -1;
    for (long i = 0; i < n; i++)
        if (!strcmp(got[i].id, id)) {
            CHECK(pos < 0, "event %s published twice", id);
            pos = i;
        }
    CHECK(pos >= 0, "event %s never published", id);
    return pos;
}

int main(void)
{
    PGconn *c;
    const char *ci = setup_db("relay_priority", &c);
    char host[64], err[512], key[16];
    int port;
    tu_redis_addr(host, sizeof(host), &port);
    redisContext *r = tu_redis_connect(host, port);
    const char *stream = tu_unique("priority");
    static uuid_str_t ids[N], hi[HI];
    uuid_str_t w[3];

    enqueue_many(c, stream, N, KEYS, 1000, ids);
    PQclear(tu_exec(c, "BEGIN"));
    enqueue_prio(c, stream, "w", 0, 0, w[0]);
    enqueue_prio(c, stream, "w", 1, 0, w[1]);
    for (int i = 0; i < HI; i++) {
        snprintf(key, sizeof(key), "h%d", i);
        enqueue_prio(c, stream, key, i, HI_PRIORITY, hi[i]);
    }
    enqueue_prio(c, stream, "w", 2, HI_PRIORITY, w[2]);
    PQclear(tu_exec(c, "COMMIT"));
    CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox") == N + HI + 3, "backlog not in place");
    char q[96];
    snprintf(q, sizeof(q), "SELECT count(*) FROM outbox WHERE priority = %d", HI_PRIORITY);
    CHECK(tu_query_ll(c, q) == (HI_PRIORITY ? HI + 1 : N + HI + 3), "priorities not stored");
    PQclear(tu_exec(c, "VACUUM ANALYZE outbox"));

    outbox_conf_t *conf = relay_conf(ci, host, port);
    conf_set(conf, "workers", "5");
    conf_set(conf, "batch_size", "100");
    outbox_relay_t *relay = outbox_relay_new(conf, err, sizeof(err));
    CHECK(relay, "%s", err);
    long long t0 = tu_now_ms();
    CHECK(outbox_relay_start(relay, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    wait_drained(c, 120000);
    long long ms = tu_now_ms() - t0;
    outbox_relay_stop(relay);
    CHECK(outbox_relay_wait(relay, 15000) == OUTBOX_OK, "workers did not stop");
    outbox_relay_destroy(relay);

    long n = 0, dups = 0;
    entry_t *got = read_stream(r, stream, &n);
    CHECK(n == N + HI + 3, "stream has %ld entries, want %d", n, N + HI + 3);

    /* Across keys: every high-priority event before half the backlog. */
    long max_hi = -1;
    for (int i = 0; i < HI; i++) {
        long pos = position_of(got, n, hi[i]);
        CHECK(pos < LIMIT_POS,
              "high-priority event h%d published at stream position %ld, want < %d", i, pos,
              LIMIT_POS);
        if (pos > max_hi)
            max_hi = pos;
    }

    /* Within a key: w3 (priority 10) waits for w1 and w2 (priority 0). */
    long p1 = position_of(got, n, w[0]), p2 = position_of(got, n, w[1]),
         p3 = position_of(got, n, w[2]);
    CHECK(p1 < p2 && p2 < p3, "key w out of order: w1 at %ld, w2 at %ld, w3 (priority %d) at %ld",
          p1, p2, HI_PRIORITY, p3);

    /* The backlog: all there once, per-key order. */
    long k = 0;
    for (long i = 0; i < n; i++)
        if (got[i].key[0] == 'k')
            got[k++] = got[i];
    long distinct = check_all_present(ids, N, got, k, &dups);
    CHECK(distinct == N && k == N && dups == 0,
          "backlog: %ld entries, %ld distinct, %ld duplicates", k, distinct, dups);
    check_key_order(got, k, KEYS);
    free(got);
    redisFree(r);
    PQfinish(c);
    printf("PASS relay_priority: %d high-priority events committed after a %d-event backlog "
           "published by stream position %ld (limit %d); key w: w1 at %ld, w2 at %ld, w3 at %ld; "
           "drained in %lld ms\n",
           HI, N, max_hi, LIMIT_POS, p1, p2, p3, ms);
    return 0;
}
