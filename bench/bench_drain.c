/* bench_drain: how fast the relay drains a backlog in each acknowledgement
 * mode, against what PostgreSQL alone can do, on the servers of
 * scripts/servers.sh (OUTBOX_TEST_PG, OUTBOX_TEST_REDIS).
 *
 * Backlog: N events (default 100,000) of a 200-byte JSON payload on 1,000
 * keys, inserted with one INSERT ... SELECT, then VACUUM ANALYZE. Per round:
 *
 *   SQL drain ceiling  2 libpq clients, each looping
 *                      DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox
 *                      ORDER BY seq LIMIT 1000 FOR UPDATE SKIP LOCKED)
 *                      RETURNING *   until it returns no row;
 *   SQL mark reference the same with UPDATE ... SET status = 'processed';
 *   relay              ack_mode delete and mark, with the relay's defaults
 *                      (5 workers, batch 100) and with 2 workers, batch 1,000,
 *                      Redis Streams sink; timed from outbox_relay_new until
 *                      no row is pending.
 *
 * Every relay number is also given as a ratio to the same round's SQL drain
 * ceiling. Rounds alternate the configurations so a noisy neighbour hurts
 * all of them alike.
 * Usage: bench_drain [N] [rounds]   (defaults 100000 2)
 * BENCH_DRAIN_SQL, if set, is run once after the migrations (e.g. to try an
 * index: CREATE INDEX ... ON outbox (seq) WHERE status = 'pending'). */
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outbox/outbox.h"
#include "testutil.h"

#define KEYS 1000
#define PAYLOAD_BYTES 200
#define SQL_BATCH 1000
#define SQL_CLIENTS 2

static const char *g_ci;
static int g_n;

/* TRUNCATE, then the backlog in one statement: payload exactly
 * PAYLOAD_BYTES bytes of JSON, seq order = i order. */
static void fill(PGconn *c)
{
    char sql[1024];
    PQclear(tu_exec(c, "TRUNCATE outbox"));
    snprintf(
        sql, sizeof(sql),
        "INSERT INTO outbox (topic, type, key, payload)"
        " SELECT 'bench_drain', 'OrderCreated', 'k' || (i %% %d),"
        "        (p || repeat('x', %d - length(p) - 2) || '\"}')::json"
        "   FROM (SELECT i, format('{\"seq\":%%s,\"order_id\":\"ord-%%s\",\"amount_cents\":%%s,"
        "\"currency\":\"EUR\",\"note\":\"', i, lpad(i::text, 8, '0'), (i * 7919) %% 100000) AS p"
        "           FROM generate_series(0, %d) AS i) s ORDER BY i",
        KEYS, PAYLOAD_BYTES, g_n - 1);
    PQclear(tu_exec(c, sql));
    PQclear(tu_exec(c, "VACUUM ANALYZE outbox"));
    CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox WHERE status = 'pending'") == g_n,
          "backlog not in place");
    CHECK(tu_query_ll(c, "SELECT min(octet_length(payload::text)) FROM outbox") == PAYLOAD_BYTES,
          "payload size");
}

typedef struct sql_client_s {
    pthread_t th;
    const char *sql;
    pthread_barrier_t *start;
    long long rows;
} sql_client_t;

static void *sql_client(void *arg)
{
    sql_client_t *cl = arg;
    PGconn *c = tu_connect(g_ci);
    pthread_barrier_wait(cl->start);
    for (;;) {
        PGresult *r = PQexec(c, cl->sql);
        CHECK(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
        int n = PQntuples(r);
        PQclear(r);
        if (n == 0)
            break;
        cl->rows += n;
    }
    PQfinish(c);
    return NULL;
}

/* SQL_CLIENTS clients running sql until it returns nothing: seconds. */
static double sql_drain(PGconn *c, const char *sql)
{
    fill(c);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, SQL_CLIENTS + 1);
    sql_client_t cl[SQL_CLIENTS];
    for (int i = 0; i < SQL_CLIENTS; i++) {
        cl[i] = (sql_client_t){.sql = sql, .start = &start};
        CHECK(pthread_create(&cl[i].th, NULL, sql_client, &cl[i]) == 0, "pthread_create");
    }
    pthread_barrier_wait(&start);
    long long t0 = tu_now_ms(), rows = 0;
    for (int i = 0; i < SQL_CLIENTS; i++) {
        pthread_join(cl[i].th, NULL);
        rows += cl[i].rows;
    }
    double s = (double)(tu_now_ms() - t0) / 1000.0;
    pthread_barrier_destroy(&start);
    CHECK(rows == g_n, "SQL drain returned %lld rows, want %d", rows, g_n);
    CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox WHERE status = 'pending'") == 0,
          "SQL drain left pending rows");
    return s;
}

/* Sequential scans of the outbox table so far (all sessions that have
 * reported); *rows_read (if not NULL) gets the rows they read. */
static long long seq_scans(PGconn *c, long long *rows_read)
{
    PQclear(tu_exec(c, "SELECT pg_stat_clear_snapshot()"));
    PGresult *r = tu_exec(c, "SELECT seq_scan, seq_tup_read FROM pg_stat_user_tables"
                             " WHERE relid = 'outbox'::regclass");
    long long n = atoll(PQgetvalue(r, 0, 0));
    if (rows_read)
        *rows_read = atoll(PQgetvalue(r, 0, 1));
    PQclear(r);
    return n;
}

/* The relay draining the backlog: seconds; *seq_n and *seq_read get the
 * sequential scans of the outbox table during the drain and the rows they
 * read. */
static double relay_drain(PGconn *c, redisContext *rc, const char *host, int port,
                          const char *ack_mode, int workers, int batch, long long *seq_n,
                          long long *seq_read)
{
    char err[512], sink[128], v[16];
    fill(c);
    freeReplyObject(redisCommand(rc, "DEL bench_drain"));
    outbox_conf_t *conf = outbox_conf_new();
    snprintf(sink, sizeof(sink), "redis://%s:%d", host, port);
    tu_conf_set(conf, "database_url", g_ci);
    tu_conf_set(conf, "sink", sink);
    tu_conf_set(conf, "metrics_addr", "off");
    tu_conf_set(conf, "log_level", "warn");
    tu_conf_set(conf, "ack_mode", ack_mode);
    if (workers) {
        snprintf(v, sizeof(v), "%d", workers);
        tu_conf_set(conf, "workers", v);
    }
    if (batch) {
        snprintf(v, sizeof(v), "%d", batch);
        tu_conf_set(conf, "batch_size", v);
    }
    long long read0 = 0, scans0 = seq_scans(c, &read0);
    long long t0 = tu_now_ms();
    outbox_relay_t *r = outbox_relay_new(conf, err, sizeof(err));
    CHECK(r && outbox_relay_start(r, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    /* Watch the stream (XLEN is O(1)) rather than the table, so watching
     * costs PostgreSQL nothing; then wait for the last acknowledgement. */
    long long end = t0 + 600000;
    for (;;) {
        redisReply *x = redisCommand(rc, "XLEN bench_drain");
        CHECK(x && x->type == REDIS_REPLY_INTEGER, "XLEN failed");
        long long len = x->integer;
        freeReplyObject(x);
        if (len >= g_n)
            break;
        CHECK(tu_now_ms() < end, "relay did not publish the backlog in 600 s");
        tu_sleep_ms(10);
    }
    while (tu_query_ll(c, "SELECT count(*) FROM outbox WHERE status = 'pending'") > 0) {
        CHECK(tu_now_ms() < end, "relay did not acknowledge the backlog in 600 s");
        tu_sleep_ms(5);
    }
    double s = (double)(tu_now_ms() - t0) / 1000.0;
    outbox_relay_destroy(r); /* its sessions end: their statistics are flushed */
    long long read1 = 0;
    *seq_n = seq_scans(c, &read1) - scans0;
    *seq_read = read1 - read0;
    long long kept = tu_query_ll(c, "SELECT count(*) FROM outbox");
    CHECK(!strcmp(ack_mode, "mark") ? kept == g_n : kept == 0, "%s mode left %lld rows", ack_mode,
          kept);
    return s;
}

int main(int argc, char **argv)
{
    g_n = argc > 1 ? atoi(argv[1]) : 100000;
    int rounds = argc > 2 ? atoi(argv[2]) : 2;
    CHECK(g_n > 0 && rounds > 0, "usage: bench_drain [N] [rounds]");
    char host[64], err[512], sql[512];
    int port;
    tu_redis_addr(host, sizeof(host), &port);
    g_ci = tu_fresh_db("bench_drain");
    PGconn *c = tu_connect(g_ci);
    CHECK(outbox_migrate(c, NULL, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    const char *extra = getenv("BENCH_DRAIN_SQL");
    if (extra && *extra) {
        PQclear(tu_exec(c, extra));
        printf("(after the migrations: %s)\n\n", extra);
    }
    redisContext *rc = tu_redis_connect(host, port);

    char ceiling_sql[512];
    snprintf(ceiling_sql, sizeof(ceiling_sql),
             "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT %d"
             " FOR UPDATE SKIP LOCKED) RETURNING *",
             SQL_BATCH);
    snprintf(sql, sizeof(sql),
             "UPDATE outbox SET status = 'processed', processed_at = statement_timestamp()"
             " WHERE seq IN (SELECT seq FROM outbox WHERE status = 'pending' ORDER BY seq"
             " LIMIT %d FOR UPDATE SKIP LOCKED) RETURNING *",
             SQL_BATCH);

    printf("## drain: %d events of %d-byte payloads on %d keys, delete vs mark\n\n", g_n,
           PAYLOAD_BYTES, KEYS);
    printf("| round | drained by | ack | seconds | events/s | vs SQL drain ceiling |"
           " seq scans of outbox (rows read) |\n|---|---|---|---|---|---|---|\n");
    fflush(stdout);
    for (int round = 1; round <= rounds; round++) {
        double ceil_s = sql_drain(c, ceiling_sql), ceil_rate = g_n / ceil_s;
        printf("| %d | SQL drain ceiling: %d clients, DELETE ... SKIP LOCKED LIMIT %d RETURNING * "
               "| delete | %.2f | %.0f | 1.00x | |\n",
               round, SQL_CLIENTS, SQL_BATCH, ceil_s, ceil_rate);
        fflush(stdout);
        double mark_s = sql_drain(c, sql);
        printf("| %d | SQL reference: %d clients, UPDATE ... SET status = 'processed' ... SKIP "
               "LOCKED LIMIT %d RETURNING * | mark | %.2f | %.0f | %.2fx | |\n",
               round, SQL_CLIENTS, SQL_BATCH, mark_s, g_n / mark_s, (g_n / mark_s) / ceil_rate);
        fflush(stdout);
        const struct {
            const char *label;
            int workers, batch;
        } cfg[] = {{"relay defaults (5 workers, batch 100)", 0, 0},
                   {"relay, 2 workers, batch 1000", 2, 1000}};
        const char *modes[] = {"delete", "mark"};
        for (size_t k = 0; k < sizeof(cfg) / sizeof(cfg[0]); k++)
            for (int m = 0; m < 2; m++) {
                /* alternate which mode goes first, round to round */
                const char *mode = modes[(m + round + 1) % 2];
                long long scans = 0, rows_read = 0;
                double s = relay_drain(c, rc, host, port, mode, cfg[k].workers, cfg[k].batch,
                                       &scans, &rows_read);
                printf("| %d | %s | %s | %.2f | %.0f | %.2fx | %lld (%.1fM rows) |\n", round,
                       cfg[k].label, mode, s, g_n / s, (g_n / s) / ceil_rate, scans,
                       (double)rows_read / 1e6);
                fflush(stdout);
            }
    }
    freeReplyObject(redisCommand(rc, "DEL bench_drain"));
    PQclear(tu_exec(c, "TRUNCATE outbox"));
    redisFree(rc);
    PQfinish(c);
    return 0;
}
