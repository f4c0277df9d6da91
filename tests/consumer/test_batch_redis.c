/* Consumer batches (outbox_consumer_set_batch(), outbox_consumer_batch_pg)
 * on Redis Streams, against real PostgreSQL and Redis. The handler records
 * its message in the inbox and writes one effect row (with its
 * transaction's id) on the transaction the batch hook opened.
 *
 *   1. One read of 8 messages over keys a, b, c is one transaction, each
 *      message in a savepoint. The 3rd (key a) writes its effect, then
 *      fails once: only its savepoint is rolled back; the other keys' and
 *      the earlier a's effects commit and are acknowledged (one XACK); the
 *      later a's of the same batch are not applied. Then the failed one is
 *      retried (one attempt charged) and key a follows in its order.
 *   2. The connection is cut at the batch's COMMIT through a TCP proxy
 *      (tests/orders/pgproxy.c): after forwarding it (committed, the
 *      answer lost), then before (rolled back). Either way nothing is
 *      acknowledged; after redelivery every effect is there exactly once,
 *      the committed ones coming back as inbox duplicates.
 *   3. A consumer process is SIGKILLed in the middle of a batch; another
 *      instance takes its messages over (XAUTOCLAIM): every effect exactly
 *      once.
 *   4. A read takes at most 48 messages while batches are on, and up to
 *      consumer_batch after outbox_consumer_set_batch_max(). */
#include <jansson.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "outbox/consumer.h"
#include "pgproxy.h"
#include "testutil.h"

typedef struct ctx_s {
    PGconn *conn;
    const char *ci; /* the handler's conninfo (reconnected before a poll when lost) */
    int fail_seq;   /* this message fails once, after writing its effect */
    int failed;
    int calls, batched, dups;
    int sleep_ms;
} ctx_t;

static outbox_err_t handler(const outbox_delivery_t *d, void *opaque)
{
    ctx_t *x = opaque;
    x->calls++;
    int batched = outbox_delivery_batched(d);
    x->batched += batched;
    json_t *data = json_loads(d->env.data ? d->env.data : "{}", 0, NULL);
    char seq[16];
    snprintf(seq, sizeof(seq), "%lld", (long long)json_integer_value(json_object_get(data, "seq")));
    json_decref(data);
    if (!batched) {
        PGresult *r = PQexec(x->conn, "BEGIN");
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!ok)
            return OUTBOX_ERR_DB;
    }
    char err[256];
    int is_new = 0;
    outbox_err_t e = outbox_inbox_record(x->conn, "t", d->env.id, &is_new, err, sizeof(err));
    if (e == OUTBOX_OK && !is_new) {
        x->dups++;
        if (!batched)
            PQclear(PQexec(x->conn, "ROLLBACK"));
        return OUTBOX_OK;
    }
    const char *p[3] = {d->env.id, d->env.subject, seq};
    PGresult *r = e ? NULL
                    : PQexecParams(x->conn,
                                   "INSERT INTO effects (msg_id, key, seq, tx)"
                                   " VALUES ($1::uuid, $2, $3::int, txid_current())",
                                   3, NULL, p, NULL, NULL, 0);
    int ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (x->sleep_ms)
        tu_sleep_ms(x->sleep_ms);
    if (ok && atoi(seq) == x->fail_seq && !x->failed) {
        x->failed = 1;
        outbox_delivery_set_error(d, "failing seq %s once", seq);
        ok = 0; /* its effect row is written: the savepoint must undo it */
        e = OUTBOX_ERR_INVALID_ARG;
    } else if (!ok) {
        e = OUTBOX_ERR_DB;
    }
    if (!batched) {
        r = PQexec(x->conn, ok ? "COMMIT" : "ROLLBACK");
        ok = ok && PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
    }
    return ok ? OUTBOX_OK : (e ? e : OUTBOX_ERR_DB);
}

static void publish(redisContext *rc, const char *stream, int from, int n, const char *const *keys,
                    int nkeys)
{
    for (int i = from; i < from + n; i++) {
        char id[40], doc[512];
        outbox_uuid_v7(id);
        snprintf(doc, sizeof(doc),
                 "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"/test\",\"type\":\"T\","
                 "\"subject\":\"%s\",\"datacontenttype\":\"application/json\","
                 "\"data\":{\"seq\":%d}}",
                 id, keys[i % nkeys], i);
        redisReply *x = redisCommand(rc, "XADD %s * id %s event %s", stream, id, doc);
        CHECK(x && x->type == REDIS_REPLY_STRING, "XADD");
        freeReplyObject(x);
    }
}

static long long pending(redisContext *rc, const char *stream)
{
    redisReply *x = redisCommand(rc, "XPENDING %s g", stream);
    CHECK(x && x->type == REDIS_REPLY_ARRAY && x->elements >= 1, "XPENDING");
    long long n = x->element[0]->integer;
    freeReplyObject(x);
    return n;
}

static outbox_consumer_t *consumer(const char *stream, const char *name, const char *ci,
                                   const char *redis_url, ctx_t *x)
{
    outbox_conf_t *conf = outbox_conf_new();
    tu_conf_set(conf, "database_url", ci);
    tu_conf_set(conf, "consumer_retry_backoff", "100ms");
    tu_conf_set(conf, "consumer_claim_idle", "500ms");
    char err[256];
    const char *topics[1] = {stream};
    outbox_consumer_t *c =
        outbox_consumer_new(redis_url, "g", name, topics, 1, conf, err, sizeof(err));
    CHECK(c, "consumer: %s", err);
    outbox_conf_destroy(conf);
    outbox_consumer_set_batch(c, outbox_consumer_batch_pg, &x->conn);
    return c;
}

static void poll_once(outbox_consumer_t *c, ctx_t *x)
{
    if (!x->conn || PQstatus(x->conn) != CONNECTION_OK) {
        PQfinish(x->conn);
        x->conn = PQconnectdb(x->ci);
    }
    outbox_consumer_poll(c, 100, handler, x);
}

static void drain(outbox_consumer_t *c, ctx_t *x, redisContext *rc, const char *stream, PGconn *db,
                  long long want)
{
    long long end = tu_now_ms() + tu_ms(60000);
    while (pending(rc, stream) > 0 || tu_query_ll(db, "SELECT count(*) FROM effects") < want) {
        CHECK(tu_now_ms() < end, "not drained: pending %lld, effects %lld of %lld",
              pending(rc, stream), tu_query_ll(db, "SELECT count(*) FROM effects"), want);
        poll_once(c, x);
    }
}

static void exactly_once(PGconn *db, long long want)
{
    long long n = tu_query_ll(db, "SELECT count(*) FROM effects");
    long long distinct = tu_query_ll(db, "SELECT count(DISTINCT msg_id) FROM effects");
    long long inbox = tu_query_ll(db, "SELECT count(*) FROM outbox_inbox WHERE consumer = 't'");
    CHECK(n == want && distinct == want && inbox == want,
          "effects %lld (%lld distinct), inbox %lld, want %lld", n, distinct, inbox, want);
}

int main(void)
{
    char rhost[64];
    int rport;
    tu_redis_addr(rhost, sizeof(rhost), &rport);
    redisContext *rc = tu_redis_connect(rhost, rport);
    char redis_url[128];
    snprintf(redis_url, sizeof(redis_url), "redis://%s:%d", rhost, rport);
    PGconn *db;
    char ci[1024];
    snprintf(ci, sizeof(ci), "%s", tu_outbox_db("consumer_batch_redis", &db));
    PQclear(tu_exec(db, "CREATE TABLE effects (n bigserial, msg_id uuid NOT NULL, key text NOT "
                        "NULL, seq int NOT NULL, tx bigint NOT NULL)"));

    /* 1. A failure in the middle of a batch. */
    {
        char stream[64];
        snprintf(stream, sizeof(stream), "%s", tu_unique("batch"));
        static const char *const keys[8] = {"a", "b", "a", "c", "a", "b", "c", "a"};
        ctx_t x = {.ci = ci, .fail_seq = 2};
        outbox_consumer_t *c = consumer(stream, "one", ci, redis_url, &x);
        poll_once(c, &x); /* creates the group */
        publish(rc, stream, 0, 8, keys, 8);
        poll_once(c, &x);
        CHECK(x.calls == 6 && x.batched == 6,
              "one read of 8: want 6 handler calls in the batch (a's after the failed one held), "
              "got %d (%d batched)",
              x.calls, x.batched);
        CHECK(tu_query_ll(db, "SELECT count(*) FROM effects") == 5,
              "after the batch: %lld effects, want 5 (seq 0 1 3 5 6)",
              tu_query_ll(db, "SELECT count(*) FROM effects"));
        CHECK(tu_query_ll(db, "SELECT count(*) FROM effects WHERE seq IN (2, 4, 7)") == 0,
              "the failed message's effect or a later one of its key was committed");
        CHECK(tu_query_ll(db, "SELECT count(DISTINCT tx) FROM effects") == 1,
              "the batch took %lld transactions, want 1",
              tu_query_ll(db, "SELECT count(DISTINCT tx) FROM effects"));
        CHECK(pending(rc, stream) == 3, "pending after the batch: %lld, want 3 (seq 2 4 7)",
              pending(rc, stream));
        CHECK(tu_query_ll(db, "SELECT coalesce(sum(attempts), 0) FROM outbox_consumer_attempt") ==
                  1,
              "attempts charged: %lld, want 1",
              tu_query_ll(db, "SELECT coalesce(sum(attempts), 0) FROM outbox_consumer_attempt"));
        drain(c, &x, rc, stream, db, 8);
        exactly_once(db, 8);
        PGresult *r = tu_exec(
            db, "SELECT string_agg(seq::text, ' ' ORDER BY n) FROM effects WHERE key = 'a'");
        CHECK(!strcmp(PQgetvalue(r, 0, 0), "0 2 4 7"), "key a applied as %s, want 0 2 4 7",
              PQgetvalue(r, 0, 0));
        PQclear(r);
        printf("1. failure mid-batch: 5 of 8 committed in one transaction and acked, seq 2 "
               "retried, key a in order (%d handler calls)\n",
               x.calls);
        outbox_consumer_destroy(c);
        PQfinish(x.conn);
        PQclear(tu_exec(db, "TRUNCATE effects, outbox_inbox"));
    }

    /* 2. The connection cut at the batch's COMMIT. */
    {
        pgproxy_t *px = pgproxy_start_for(ci);
        char proxied[1200];
        snprintf(proxied, sizeof(proxied),
                 "%s host=127.0.0.1 port=%d sslmode=disable gssencmode=disable connect_timeout=3",
                 ci, pgproxy_port(px));
        char stream[64];
        snprintf(stream, sizeof(stream), "%s", tu_unique("batchcut"));
        static const char *const keys[5] = {"a", "b", "c", "d", "e"};
        ctx_t x = {.ci = proxied, .fail_seq = -1};
        outbox_consumer_t *c = consumer(stream, "one", ci, redis_url, &x);
        poll_once(c, &x);
        pgproxy_mode_t modes[2] = {PGPROXY_CUT_AFTER_COMMIT, PGPROXY_CUT_BEFORE_COMMIT};
        for (int m = 0; m < 2; m++) {
            publish(rc, stream, 10 * m, 10, keys, 5);
            int cuts = pgproxy_cuts(px);
            pgproxy_arm(px, modes[m]);
            poll_once(c, &x);
            pgproxy_arm(px, PGPROXY_PASS);
            CHECK(pgproxy_cuts(px) == cuts + 1, "no COMMIT cut (%d calls)", x.calls);
            CHECK(pending(rc, stream) == 10, "%s: %lld pending, want 10 (nothing acked)",
                  m ? "before COMMIT" : "after COMMIT", pending(rc, stream));
            long long committed = tu_query_ll(db, "SELECT count(*) FROM effects");
            CHECK(committed == (m ? 10 : 10), "cut %s COMMIT: %lld effects committed",
                  m ? "before" : "after", committed);
            if (!m)
                CHECK(pgproxy_last_commit_answer(px) == 1, "the COMMIT did not land");
            int dups = x.dups;
            drain(c, &x, rc, stream, db, 10 * (m + 1));
            exactly_once(db, 10 * (m + 1));
            CHECK(x.dups - dups == (m ? 0 : 10), "inbox duplicates after the cut: %d, want %d",
                  x.dups - dups, m ? 0 : 10);
            printf("2. connection cut %s the batch COMMIT: nothing acked, %d duplicates skipped, "
                   "every effect once\n",
                   m ? "before" : "after", x.dups - dups);
        }
        outbox_consumer_destroy(c);
        PQfinish(x.conn);
        pgproxy_stop(px);
        PQclear(tu_exec(db, "TRUNCATE effects, outbox_inbox"));
    }

    /* 3. SIGKILL in the middle of a batch, then a takeover. */
    {
        char stream[64];
        snprintf(stream, sizeof(stream), "%s", tu_unique("batchkill"));
        static const char *const keys[7] = {"a", "b", "c", "d", "e", "f", "g"};
        enum { N = 300 };
        ctx_t x = {.ci = ci, .fail_seq = -1};
        outbox_consumer_t *c = consumer(stream, "survivor", ci, redis_url, &x);
        poll_once(c, &x); /* the group, before the victim reads */
        publish(rc, stream, 0, N, keys, 7);
        fflush(NULL);
        pid_t pid = fork();
        CHECK(pid >= 0, "fork");
        if (pid == 0) {
            ctx_t v = {.ci = ci, .fail_seq = -1, .sleep_ms = 3};
            outbox_consumer_t *vc = consumer(stream, "victim", ci, redis_url, &v);
            for (;;)
                poll_once(vc, &v);
        }
        /* Killed after its first batch committed, about half way through the
         * second (each message takes >= 3 ms: a batch of 100, >= 300 ms). */
        long long end = tu_now_ms() + tu_ms(60000);
        while (tu_query_ll(db, "SELECT count(*) FROM effects") == 0)
            CHECK(tu_now_ms() < end, "the victim applied nothing");
        tu_sleep_ms(150);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        long long at_kill = tu_query_ll(db, "SELECT count(*) FROM effects");
        CHECK(at_kill < N, "the victim finished before the kill");
        CHECK(pending(rc, stream) > 0, "nothing pending at the kill");
        drain(c, &x, rc, stream, db, N);
        exactly_once(db, N);
        printf("3. SIGKILL mid-batch with %lld of %d committed: the survivor took over, every "
               "effect once (%d handler calls, %d inbox duplicates)\n",
               at_kill, N, x.calls, x.dups);
        outbox_consumer_destroy(c);
        PQfinish(x.conn);
        PQclear(tu_exec(db, "TRUNCATE effects, outbox_inbox"));
    }

    /* 4. A batch takes at most 48 messages (a savepoint each), or what
     * outbox_consumer_set_batch_max() says. */
    {
        char stream[64];
        snprintf(stream, sizeof(stream), "%s", tu_unique("batchmax"));
        static const char *const keys[4] = {"a", "b", "c", "d"};
        ctx_t x = {.ci = ci, .fail_seq = -1};
        outbox_consumer_t *c = consumer(stream, "max", ci, redis_url, &x);
        poll_once(c, &x); /* creates the group */
        publish(rc, stream, 0, 120, keys, 4);
        poll_once(c, &x);
        CHECK(x.calls == 48 && x.batched == 48, "first read of 120: %d calls (%d batched), want 48",
              x.calls, x.batched);
        outbox_consumer_set_batch_max(c, 100);
        poll_once(c, &x);
        CHECK(x.calls == 48 + 72 && x.batched == 120,
              "with outbox_consumer_set_batch_max(100): %d more calls, want the 72 left",
              x.calls - 48);
        outbox_consumer_set_batch_max(c, 0);
        drain(c, &x, rc, stream, db, 120);
        exactly_once(db, 120);
        printf("4. batch size: 48 by default, 72 in one batch with set_batch_max(100)\n");
        outbox_consumer_destroy(c);
        PQfinish(x.conn);
    }
    PQfinish(db);
    redisFree(rc);
    return 0;
}
