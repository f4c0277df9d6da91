/* Redis refuses part of a pipelined batch and accepts the rest: per-key
 * order must hold, as a reader of the broker sees it.
 *
 * The fault is real and at the boundary: the first event of every key "kN"
 * goes to topic A, whose Redis key is a plain string, so Redis answers that
 * XADD with WRONGTYPE; the key's later events go to topic B, which works. All
 * are claimed in one batch. Before the engine applied the per-key rule itself,
 * the Redis sink pipelined the whole batch: the later events reached stream B
 * while the first was refused, and the first followed them on retry.
 *
 * A reader subscribed to Redis keyspace events (every successful XADD, in the
 * order Redis executed them, across streams) records the global order; the
 * test checks (1) while A is refused, no later event of those keys is in B,
 * and (2) after A is repaired, every key's events arrived in commit order. */
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <sys/time.h>

#include "relay_common.h"

#define KEYS 20
#define PER_KEY 3 /* e0 -> A (refused at first), e1, e2 -> B */

typedef struct watcher_s {
    int port;
    _Atomic int subscribed;               /* set by the subscriber thread */
    char streams[KEYS * PER_KEY * 4][64]; /* stream of each XADD, in execution order */
    int n;                                /* read once the thread is joined */
    pthread_t thread;
} watcher_t;

/* Records the stream of every successful XADD until one on "sentinel". */
static void *watch(void *arg)
{
    watcher_t *w = arg;
    redisContext *c = tu_redis_connect("127.0.0.1", w->port);
    redisReply *rep = redisCommand(c, "SUBSCRIBE __keyevent@0__:xadd");
    CHECK(rep, "SUBSCRIBE failed");
    freeReplyObject(rep);
    w->subscribed = 1;
    for (;;) {
        rep = NULL;
        CHECK(redisGetReply(c, (void **)&rep) == REDIS_OK && rep, "keyspace subscriber: %s",
              c->errstr);
        int done = 0;
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 3) {
            done = !strcmp(rep->element[2]->str, "sentinel");
            if (!done && w->n < (int)(sizeof(w->streams) / 64))
                snprintf(w->streams[w->n++], 64, "%s", rep->element[2]->str);
        }
        freeReplyObject(rep);
        if (done)
            break;
    }
    redisFree(c);
    return NULL;
}

static long long attempts_of(PGconn *c, const char *id)
{
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT COALESCE((SELECT attempts FROM outbox WHERE id = '%s'), -1)",
             id);
    return tu_query_ll(c, sql);
}

int main(void)
{
    PGconn *c;
    const char *ci = setup_db("redis_partial_batch_order", &c);
    int port = tu_free_port();
    pid_t redis = tu_redis_server_start(port);
    redisContext *r = tu_redis_connect("127.0.0.1", port);
    redisReply *rep = redisCommand(r, "CONFIG SET notify-keyspace-events Et");
    CHECK(rep && rep->type != REDIS_REPLY_ERROR, "CONFIG SET notify-keyspace-events");
    freeReplyObject(rep);
    const char *A = "partial-A", *B = "partial-B";
    rep = redisCommand(r, "SET %s not-a-stream", A); /* XADD A -> WRONGTYPE */
    freeReplyObject(rep);

    watcher_t w = {.port = port};
    pthread_create(&w.thread, NULL, watch, &w);
    long long t0 = tu_now_ms();
    while (!w.subscribed) {
        CHECK(tu_now_ms() - t0 < 5000, "keyspace subscriber did not start");
        tu_sleep_ms(5);
    }

    /* Commit order: e0 of every key, then e1, then e2 (seq order per key). */
    static char ids[KEYS][PER_KEY][OUTBOX_UUID_STRLEN + 1];
    char err[512], key[16], payload[96];
    PQclear(tu_exec(c, "BEGIN"));
    for (int e = 0; e < PER_KEY; e++)
        for (int k = 0; k < KEYS; k++) {
            snprintf(key, sizeof(key), "k%d", k);
            snprintf(payload, sizeof(payload), "{\"seq\":%d,\"key\":\"%s\"}", e * KEYS + k, key);
            outbox_event_t ev = {
                .topic = e == 0 ? A : B, .type = "TestEvent", .key = key, .payload = payload};
            CHECK(outbox_enqueue(c, &ev, ids[k][e], err, sizeof(err)) == OUTBOX_OK, "enqueue: %s",
                  err);
        }
    PQclear(tu_exec(c, "COMMIT"));

    char host[64] = "127.0.0.1";
    outbox_conf_t *conf = relay_conf(ci, host, port);
    conf_set(conf, "workers", "1"); /* one batch holds everything */
    conf_set(conf, "batch_size", "1000");
    conf_set(conf, "backoff_base", "300ms");
    conf_set(conf, "backoff_max", "300ms");
    outbox_relay_t *relay = tu_relay_start(conf);

    /* (1) Wait until the refusal has been settled (an attempt charged to
     * every e0), then look at B: nothing of those keys may be there. */
    t0 = tu_now_ms();
    for (int k = 0; k < KEYS; k++)
        while (attempts_of(c, ids[k][0]) < 1) {
            CHECK(tu_now_ms() - t0 < 30000, "e0 of k%d was never attempted", k);
            tu_sleep_ms(20);
        }
    long nb = 0;
    entry_t *inb = read_stream(r, B, &nb);
    CHECK(nb == 0,
          "%ld later events reached stream B while the first event of their key was refused "
          "(first: key %s)",
          nb, nb ? inb[0].key : "");
    free(inb);
    CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox WHERE attempts > 0") == KEYS,
          "only the refused events are charged an attempt (held ones are not)");

    /* (2) Repair A; everything drains; the global XADD order keeps per-key order. */
    rep = redisCommand(r, "DEL %s", A);
    freeReplyObject(rep);
    wait_drained(c, 30000);
    outbox_relay_destroy(relay);
    long na = 0;
    nb = 0;
    entry_t *ea = read_stream(r, A, &na), *eb = read_stream(r, B, &nb);
    CHECK(na >= KEYS && nb >= KEYS * (PER_KEY - 1), "A has %ld, B has %ld entries", na, nb);
    /* Events arrive in execution order: once the sentinel's is read, every
     * earlier XADD's has been. */
    rep = redisCommand(r, "XADD sentinel * x 1");
    freeReplyObject(rep);
    pthread_join(w.thread, NULL);
    CHECK(w.n == na + nb, "keyspace events: %d, entries %ld", w.n, na + nb);
    /* Merge: the i-th xadd event on stream S is S's i-th entry. */
    long ia = 0, ib = 0;
    int last[KEYS];
    for (int k = 0; k < KEYS; k++)
        last[k] = -1;
    for (int i = 0; i < w.n; i++) {
        entry_t *e = !strcmp(w.streams[i], A) ? &ea[ia++] : &eb[ib++];
        int k = atoi(e->key + 1), pos = e->seq / KEYS;
        CHECK(pos >= last[k], "key %s: event %d reached Redis after event %d (order inverted)",
              e->key, pos, last[k]);
        last[k] = pos;
    }
    for (int k = 0; k < KEYS; k++)
        CHECK(last[k] == PER_KEY - 1, "key k%d: last event %d", k, last[k]);
    free(ea);
    free(eb);
    redisFree(r);
    tu_stop(redis);
    PQfinish(c);
    printf("PASS redis_partial_batch_order: Redis refused %d of %d pipelined events; no later "
           "event of their keys "
           "was published meanwhile, and all %d keys arrived in commit order after the repair\n",
           KEYS, KEYS * PER_KEY, KEYS);
    return 0;
}
