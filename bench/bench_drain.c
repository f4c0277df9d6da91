/* bench_drain: how fast the relay drains a backlog, against what PostgreSQL
 * alone can do in the same run, on the servers of scripts/servers.sh
 * (OUTBOX_TEST_PG, OUTBOX_TEST_REDIS).
 *
 * Backlog: N events of a 200-byte JSON payload on 1,000 keys, inserted with
 * one INSERT ... SELECT, then VACUUM ANALYZE and CHECKPOINT (so no drain pays
 * for the previous fill's dirty pages).
 *
 *   SQL drain ceiling  2 libpq clients, each looping
 *                      DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox
 *                      ORDER BY seq LIMIT 1000 FOR UPDATE SKIP LOCKED)
 *                      RETURNING *   until it returns no row;
 *   SQL mark reference the same with UPDATE ... SET status = 'processed';
 *   relay              outbox_relay_new with a configuration, Redis Streams
 *                      sink; timed from outbox_relay_new until no row is
 *                      pending.
 *
 * Modes (every relay number is also given as a ratio to a SQL drain ceiling
 * measured in the same run):
 *
 *   bench_drain [N] [rounds]            ack: delete vs mark at the relay's
 *   bench_drain ack N [rounds]          defaults and 2 workers / batch 1000,
 *                                       plus the SQL mark reference (defaults
 *                                       100000 2); ratio to the round's ceiling
 *   bench_drain sizes N1,N2,.. [rounds] the relay's default configuration per
 *                                       backlog size; ratio to the ceiling of
 *                                       the same size and round; each is the
 *                                       median of reps(N) repetitions: 5 below
 *                                       30,000 events, 3 up to 300,000, 1 for
 *                                       a million and more
 *   bench_drain grid N W1,W2,.. B1,B2,.. [rounds]
 *                                       workers x batch_size at backlog N; one
 *                                       ceiling before each batch size's line;
 *                                       ratio to the median of all of them
 *
 * Rounds alternate the order of the configurations so a noisy neighbour hurts
 * all of them alike. Markdown goes to stdout, progress to stderr.
 * BENCH_TSV, if set, is a file that gets one tab-separated line per
 * measurement appended (columns in tsv_header below), for scripts/bench.sh.
 * BENCH_DRAIN_SQL, if set, is run once after the migrations (e.g. to try an
 * index: CREATE INDEX ... ON outbox (seq) WHERE status = 'pending').
 * BENCH_DRAIN_VACUUM_AFTER, if set, is the relays' vacuum_after (0: off). */
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "outbox/outbox.h"
#include "testutil.h"

#define KEYS 1000
#define PAYLOAD_BYTES 200
#define SQL_BATCH 1000
#define SQL_CLIENTS 2
#define MAX_LIST 32
#define SMALL_REPS 5

static const char *g_ci;
static const char *g_ack_on_claim; /* NULL: the relay's default */
static int g_n;
static double g_ready_s; /* the last relay_drain's startup: until a worker held lanes */
static FILE *g_tsv;
static char g_ceiling_sql[512], g_mark_sql[512];
static char g_def_workers[16], g_def_batch[16];

static const char tsv_header[] = "experiment\tround\tn\tdrained_by\tack\tworkers\tbatch\tseconds\t"
                                 "events_per_s\tceiling_events_per_s\tseq_scans\tseq_rows_read\n";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One TSV line; drained_by is "ceiling", "sql_mark" or "relay"; workers and
 * batch are the effective values; seq_scans < 0 = not measured. */
static void tsv(const char *experiment, int round, const char *drained_by, const char *ack,
                int workers, int batch, double seconds, double ceiling_rate, long long seq_scans,
                long long seq_rows)
{
    if (!g_tsv)
        return;
    fprintf(g_tsv, "%s\t%d\t%d\t%s\t%s\t%d\t%d\t%.4f\t%.1f\t%.1f\t", experiment, round, g_n,
            drained_by, ack, workers, batch, seconds, g_n / seconds, ceiling_rate);
    if (seq_scans >= 0)
        fprintf(g_tsv, "%lld\t%lld\n", seq_scans, seq_rows);
    else
        fprintf(g_tsv, "\t\n");
    fflush(g_tsv);
}

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
        "\"currency\":\"EUR\",\"note\":\"', i, lpad(i::text, 8, '0'), (i::bigint * 7919) %% "
        "100000) AS p"
        "           FROM generate_series(0, %d) AS i) s ORDER BY i",
        KEYS, PAYLOAD_BYTES, g_n - 1);
    PQclear(tu_exec(c, sql));
    PQclear(tu_exec(c, "VACUUM ANALYZE outbox"));
    PQclear(tu_exec(c, "CHECKPOINT"));
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
    double t0 = now_s();
    long long rows = 0;
    for (int i = 0; i < SQL_CLIENTS; i++) {
        pthread_join(cl[i].th, NULL);
        rows += cl[i].rows;
    }
    double s = now_s() - t0;
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

/* The relay draining the backlog: seconds; workers/batch 0 = the relay's
 * default; *seq_n and *seq_read get the sequential scans of the outbox table
 * during the drain and the rows they read. */
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
    tu_conf_set(conf, "log_level", getenv("BENCH_DRAIN_LOG") ? getenv("BENCH_DRAIN_LOG") : "warn");
    tu_conf_set(conf, "ack_mode", ack_mode);
    if (g_ack_on_claim)
        tu_conf_set(conf, "ack_on_claim", g_ack_on_claim);
    if (getenv("BENCH_DRAIN_VACUUM_AFTER")) /* the relay's VACUUM, for a before/after */
        tu_conf_set(conf, "vacuum_after", getenv("BENCH_DRAIN_VACUUM_AFTER"));
    if (workers) {
        snprintf(v, sizeof(v), "%d", workers);
        tu_conf_set(conf, "workers", v);
    }
    if (batch) {
        snprintf(v, sizeof(v), "%d", batch);
        tu_conf_set(conf, "batch_size", v);
    }
    long long read0 = 0, scans0 = seq_scans(c, &read0);
    double t0 = now_s();
    outbox_relay_t *r = outbox_relay_new(conf, err, sizeof(err));
    CHECK(r && outbox_relay_start(r, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    /* Ready: a worker holds lanes (its session open, its first claim next).
     * From here on the relay is where the ceiling's clients are when their
     * clock starts (connected); g_ready_s is the startup before it. */
    for (double until = t0 + 60;;) {
        int lanes = 0;
        for (int i = 0; i < outbox_relay_worker_count(r); i++) {
            outbox_worker_stats_t st;
            if (outbox_relay_worker_stats(r, i, &st) == OUTBOX_OK)
                lanes += st.lanes_held;
        }
        if (lanes > 0 || now_s() > until)
            break;
        struct timespec ts = {0, 100000}; /* 0.1 ms: startup is ~20 ms */
        nanosleep(&ts, NULL);
    }
    g_ready_s = now_s() - t0;
    /* Watch the stream (XLEN is O(1)) rather than the table, so watching
     * costs PostgreSQL nothing; then wait for the last acknowledgement. */
    double end = t0 + 900;
    for (;;) {
        redisReply *x = redisCommand(rc, "XLEN bench_drain");
        CHECK(x && x->type == REDIS_REPLY_INTEGER, "XLEN failed");
        long long len = x->integer;
        freeReplyObject(x);
        if (len >= g_n)
            break;
        CHECK(now_s() < end, "relay did not publish the backlog in 900 s");
        tu_sleep_ms(1); /* 10k events drain in ~50 ms: look often */
    }
    while (tu_query_ll(c, "SELECT count(*) FROM outbox WHERE status = 'pending'") > 0) {
        CHECK(now_s() < end, "relay did not acknowledge the backlog in 900 s");
        struct timespec ts = {0, 250000}; /* 0.25 ms: the last batch commits right after it */
        nanosleep(&ts, NULL);
    }
    double s = now_s() - t0;
    outbox_relay_destroy(r); /* its sessions end: their statistics are flushed */
    long long read1 = 0;
    *seq_n = seq_scans(c, &read1) - scans0;
    *seq_read = read1 - read0;
    long long kept = tu_query_ll(c, "SELECT count(*) FROM outbox");
    CHECK(!strcmp(ack_mode, "mark") ? kept == g_n : kept == 0, "%s mode left %lld rows", ack_mode,
          kept);
    freeReplyObject(redisCommand(rc, "DEL bench_drain")); /* 1M entries hold ~1 GB */
    return s;
}

/* "a,b,c" -> out[]; returns the count (0 on a malformed list). */
static int parse_list(const char *s, int *out, int max)
{
    int n = 0;
    while (s && *s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v <= 0 || n == max)
            return 0;
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return 0;
    }
    return n;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median_sorted(const double *v, int n)
{
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---- ack: delete vs mark ---- */
static void run_ack(PGconn *c, redisContext *rc, const char *host, int port, int rounds)
{
    printf("## drain: %d events of %d-byte payloads on %d keys, delete vs mark\n\n", g_n,
           PAYLOAD_BYTES, KEYS);
    printf("| round | drained by | ack | ack_on_claim | seconds | events/s | vs SQL drain ceiling |"
           " seq scans of outbox (rows read) |\n|---|---|---|---|---|---|---|---|\n");
    fflush(stdout);
    for (int round = 1; round <= rounds; round++) {
        double ceil_s = sql_drain(c, g_ceiling_sql), ceil_rate = g_n / ceil_s;
        printf("| %d | SQL drain ceiling: %d clients, DELETE ... SKIP LOCKED LIMIT %d RETURNING * "
               "| delete | | %.2f | %.0f | 1.00x | |\n",
               round, SQL_CLIENTS, SQL_BATCH, ceil_s, ceil_rate);
        tsv("ack", round, "ceiling", "delete", SQL_CLIENTS, SQL_BATCH, ceil_s, ceil_rate, -1, 0);
        fflush(stdout);
        double mark_s = sql_drain(c, g_mark_sql);
        printf("| %d | SQL reference: %d clients, UPDATE ... SET status = 'processed' ... SKIP "
               "LOCKED LIMIT %d RETURNING * | mark | | %.2f | %.0f | %.2fx | |\n",
               round, SQL_CLIENTS, SQL_BATCH, mark_s, g_n / mark_s, (g_n / mark_s) / ceil_rate);
        tsv("ack", round, "sql_mark", "mark", SQL_CLIENTS, SQL_BATCH, mark_s, ceil_rate, -1, 0);
        fflush(stdout);
        const struct {
            int workers, batch;
        } cfg[] = {{0, 0}, {2, 1000}};
        const char *modes[] = {"delete", "mark"}, *aoc[] = {"true", "false"};
        for (size_t k = 0; k < sizeof(cfg) / sizeof(cfg[0]); k++)
            for (int m = 0; m < 4; m++) {
                /* alternate which mode goes first, round to round; each mode
                 * with the claim acknowledging (ack_on_claim, the default)
                 * and with a second statement after publishing */
                const char *mode = modes[(m / 2 + round + 1) % 2];
                g_ack_on_claim = aoc[(m + round + 1) % 2];
                long long scans = 0, rows_read = 0;
                double s = relay_drain(c, rc, host, port, mode, cfg[k].workers, cfg[k].batch,
                                       &scans, &rows_read);
                int w = cfg[k].workers ? cfg[k].workers : atoi(g_def_workers);
                int b = cfg[k].batch ? cfg[k].batch : atoi(g_def_batch);
                printf("| %d | relay%s (%d workers, batch %d) | %s | %s | %.2f | %.0f | %.2fx | "
                       "%lld (%.1fM rows) |\n",
                       round, cfg[k].workers ? "" : " defaults", w, b, mode, g_ack_on_claim, s,
                       g_n / s, (g_n / s) / ceil_rate, scans, (double)rows_read / 1e6);
                tsv("ack", round, !strcmp(g_ack_on_claim, "true") ? "relay" : "relay_two_step",
                    mode, w, b, s, ceil_rate, scans, rows_read);
                fflush(stdout);
            }
        g_ack_on_claim = NULL;
    }
}

/* ---- sizes: the default configuration per backlog size ---- */
static void run_sizes(PGconn *c, redisContext *rc, const char *host, int port, const int *sizes,
                      int nsizes, int rounds)
{
    int w = atoi(g_def_workers), b = atoi(g_def_batch);
    printf("## drain by backlog size: relay defaults (%d workers, batch %d), delete mode\n\n", w,
           b);
    printf("| round | backlog | SQL drain ceiling s | ceiling events/s | relay s | relay events/s |"
           " vs ceiling |\n|---|---|---|---|---|---|---|\n");
    fflush(stdout);
    for (int round = 1; round <= rounds; round++)
        for (int i = 0; i < nsizes; i++) {
            g_n = sizes[i];
            /* The median of several repetitions, so one hiccup of the shared
             * machine does not decide: a small backlog drains in tens of
             * milliseconds, and a single 100k drain moved by 10% from run to
             * run (0.60x-0.67x); a million takes seconds and evens out. */
            int reps = g_n < 30000 ? SMALL_REPS : g_n <= 300000 ? 3 : 1;
            double cs[SMALL_REPS], rs[SMALL_REPS], ws[SMALL_REPS];
            long long scans = 0, rows_read = 0;
            for (int k = 0; k < reps; k++)
                for (int step = 0; step < 2; step++) /* alternate which goes first */
                    if ((step + round + k + 1) % 2 == 0)
                        cs[k] = sql_drain(c, g_ceiling_sql);
                    else {
                        rs[k] = relay_drain(c, rc, host, port, "delete", 0, 0, &scans, &rows_read);
                        ws[k] = rs[k] - g_ready_s;
                    }
            qsort(cs, (size_t)reps, sizeof(double), cmp_double);
            qsort(rs, (size_t)reps, sizeof(double), cmp_double);
            qsort(ws, (size_t)reps, sizeof(double), cmp_double);
            double ceil_s = median_sorted(cs, reps), relay_s = median_sorted(rs, reps),
                   warm_s = median_sorted(ws, reps);
            fprintf(stderr,
                    "sizes round %d: %d events: ceiling %.3f s, relay %.3f s, after its "
                    "startup %.3f s (median of %d)\n",
                    round, g_n, ceil_s, relay_s, warm_s, reps);
            double ceil_rate = g_n / ceil_s;
            printf("| %d | %d | %.2f | %.0f | %.2f | %.0f | %.2fx |\n", round, g_n, ceil_s,
                   ceil_rate, relay_s, g_n / relay_s, (g_n / relay_s) / ceil_rate);
            tsv("sizes", round, "ceiling", "delete", SQL_CLIENTS, SQL_BATCH, ceil_s, ceil_rate, -1,
                0);
            tsv("sizes", round, "relay", "delete", w, b, relay_s, ceil_rate, scans, rows_read);
            tsv("sizes", round, "relay_ready", "delete", w, b, warm_s, ceil_rate, -1, 0);
            fflush(stdout);
        }
}

/* ---- grid: workers x batch_size at one backlog size ---- */
static void run_grid(PGconn *c, redisContext *rc, const char *host, int port, const int *ws, int nw,
                     const int *bs, int nb, int rounds)
{
    double secs[MAX_LIST][MAX_LIST][8] = {{{0}}}, ceil_s[MAX_LIST * 8];
    int nceil = 0;
    CHECK(rounds <= 8, "grid: at most 8 rounds");
    for (int round = 1; round <= rounds; round++)
        for (int j = 0; j < nb; j++) {
            ceil_s[nceil] = sql_drain(c, g_ceiling_sql);
            fprintf(stderr, "grid round %d: ceiling %.2f s\n", round, ceil_s[nceil]);
            tsv("grid", round, "ceiling", "delete", SQL_CLIENTS, SQL_BATCH, ceil_s[nceil], 0, -1,
                0);
            nceil++;
            for (int k = 0; k < nw; k++) {
                int i = (j + round) % 2 ? nw - 1 - k : k; /* alternate direction line to line */
                long long scans = 0, rows_read = 0;
                double s =
                    relay_drain(c, rc, host, port, "delete", ws[i], bs[j], &scans, &rows_read);
                secs[j][i][round - 1] = s;
                fprintf(stderr, "grid round %d: batch %d, %d workers: %.2f s\n", round, bs[j],
                        ws[i], s);
                tsv("grid", round, "relay", "delete", ws[i], bs[j], s, 0, scans, rows_read);
            }
        }
    double sorted[MAX_LIST * 8];
    memcpy(sorted, ceil_s, sizeof(double) * (size_t)nceil);
    qsort(sorted, (size_t)nceil, sizeof(double), cmp_double);
    double med_s = median_sorted(sorted, nceil);
    double ceil_rate = g_n / med_s;
    printf("## drain: workers x batch size, %d-event backlog, delete mode\n\n"
           "SQL drain ceiling: median of %d measurements %.2f s = %.0f events/s (range %.0f to "
           "%.0f).\nCells: relay events/s as a ratio to that ceiling (median of %d round%s).\n\n",
           g_n, nceil, med_s, ceil_rate, g_n / sorted[nceil - 1], g_n / sorted[0], rounds,
           rounds > 1 ? "s" : "");
    printf("| batch \\ workers |");
    for (int i = 0; i < nw; i++)
        printf(" %d |", ws[i]);
    printf("\n|---|");
    for (int i = 0; i < nw; i++)
        printf("---|");
    printf("\n");
    for (int j = 0; j < nb; j++) {
        printf("| %d |", bs[j]);
        for (int i = 0; i < nw; i++) {
            double v[8];
            memcpy(v, secs[j][i], sizeof(double) * (size_t)rounds);
            qsort(v, (size_t)rounds, sizeof(double), cmp_double);
            double m = median_sorted(v, rounds);
            printf(" %.2fx |", (g_n / m) / ceil_rate);
        }
        printf("\n");
    }
    fflush(stdout);
}

int main(int argc, char **argv)
{
    const char *usage = "usage: bench_drain [N] [rounds] | ack N [rounds] | sizes N1,N2,.. "
                        "[rounds] | grid N W1,W2,.. B1,B2,.. [rounds]";
    const char *mode = "ack";
    int a = 1;
    if (argc > 1 &&
        (!strcmp(argv[1], "ack") || !strcmp(argv[1], "sizes") || !strcmp(argv[1], "grid"))) {
        mode = argv[1];
        a = 2;
    }
    int sizes[MAX_LIST], ws[MAX_LIST], bs[MAX_LIST], nsizes = 0, nw = 0, nb = 0, rounds;
    if (!strcmp(mode, "sizes")) {
        nsizes = parse_list(argc > a ? argv[a] : "10000,100000", sizes, MAX_LIST);
        rounds = argc > a + 1 ? atoi(argv[a + 1]) : 1;
        CHECK(nsizes > 0, "%s", usage);
        g_n = sizes[0];
    } else if (!strcmp(mode, "grid")) {
        CHECK(argc > a + 2, "%s", usage);
        g_n = atoi(argv[a]);
        nw = parse_list(argv[a + 1], ws, MAX_LIST);
        nb = parse_list(argv[a + 2], bs, MAX_LIST);
        rounds = argc > a + 3 ? atoi(argv[a + 3]) : 1;
        CHECK(nw > 0 && nb > 0, "%s", usage);
    } else {
        g_n = argc > a ? atoi(argv[a]) : 100000;
        rounds = argc > a + 1 ? atoi(argv[a + 1]) : 2;
    }
    CHECK(g_n > 0 && rounds > 0, "%s", usage);

    char host[64], err[512];
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
    const char *tsv_path = getenv("BENCH_TSV");
    if (tsv_path && *tsv_path) {
        g_tsv = fopen(tsv_path, "a");
        CHECK(g_tsv, "cannot open BENCH_TSV %s", tsv_path);
        if (ftell(g_tsv) == 0)
            fputs(tsv_header, g_tsv);
    }
    outbox_conf_t *defaults = outbox_conf_new();
    snprintf(g_def_workers, sizeof(g_def_workers), "%s", outbox_conf_get(defaults, "workers"));
    snprintf(g_def_batch, sizeof(g_def_batch), "%s", outbox_conf_get(defaults, "batch_size"));
    outbox_conf_destroy(defaults);
    redisContext *rc = tu_redis_connect(host, port);

    snprintf(g_ceiling_sql, sizeof(g_ceiling_sql),
             "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT %d"
             " FOR UPDATE SKIP LOCKED) RETURNING *",
             SQL_BATCH);
    snprintf(g_mark_sql, sizeof(g_mark_sql),
             "UPDATE outbox SET status = 'processed', processed_at = statement_timestamp()"
             " WHERE seq IN (SELECT seq FROM outbox WHERE status = 'pending' ORDER BY seq"
             " LIMIT %d FOR UPDATE SKIP LOCKED) RETURNING *",
             SQL_BATCH);

    if (!strcmp(mode, "sizes"))
        run_sizes(c, rc, host, port, sizes, nsizes, rounds);
    else if (!strcmp(mode, "grid"))
        run_grid(c, rc, host, port, ws, nw, bs, nb, rounds);
    else
        run_ack(c, rc, host, port, rounds);

    freeReplyObject(redisCommand(rc, "DEL bench_drain"));
    PQclear(tu_exec(c, "TRUNCATE outbox"));
    if (g_tsv)
        fclose(g_tsv);
    redisFree(rc);
    PQfinish(c);
    return 0;
}
