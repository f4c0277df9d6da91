/* bench_latency: commit -> broker latency at a steady rate from many producer
 * connections, and what each wake-up technique costs the producers (issue F6,
 * item 5), against the servers of scripts/servers.sh (OUTBOX_TEST_PG,
 * OUTBOX_TEST_REDIS).
 *
 * For each wake-up technique, with an in-process relay (its defaults apart
 * from the wake-up settings) publishing to Redis Streams:
 *
 *   poll     plain-SQL producers (INSERT, no hint); relay notify=false,
 *            poll_min_interval=0: the relay looks every poll_interval. This
 *            is the write path "with no relay wake-up at all".
 *   poll_enqueue  the same with producers calling outbox_enqueue: the
 *            ceiling of the techniques whose producers call it;
 *   watch    plain-SQL producers; relay notify=false, poll_min_interval at
 *            the library's default (1ms; BENCH_LATENCY_POLL_MIN sets another):
 *            its watcher looks at the newest due events while they keep
 *            coming and wakes the workers that own them.
 *   watch_enqueue  the same with producers calling outbox_enqueue (no hint:
 *            its default);
 *   notify   outbox_enqueue with wakeup_hint = 1 (INSERT ... RETURNING
 *            pg_notify); relay notify=true, watcher off: every commit sends
 *            the hint the relay LISTENs for.
 *
 * two measurements:
 *
 *   latency  RATE events/s for SECS, spread over PRODUCERS connections (one
 *            event per transaction, paced to a global schedule); latency from
 *            COMMIT returning in the producer to the entry being read from
 *            the stream by a reader thread (XREAD BLOCK): p50, p99, max of
 *            the steady state (after the first second), and the worst case
 *            of the first second (the relay starts idle);
 *   capacity the same producers committing as fast as they can for CAP_SECS
 *            while the relay drains: commits/s, and the ratio to the same
 *            producers with no wake-up at all (poll for plain SQL,
 *            poll_enqueue for outbox_enqueue), in the same round. The
 *            techniques alternate, BENCH_LATENCY_CAP_ROUNDS rounds (default
 *            3); each figure is the median of the rounds. Also the relay's
 *            claims/s and CPU (its threads and its PostgreSQL sessions).
 *
 * and, for watch, the idle cost: CPU used in 10 s by this process (the relay:
 * the reader is stopped) and by the relay's PostgreSQL backends, with no
 * event written.
 *
 * Usage: bench_latency [rate] [secs] [producers] [cap_secs] [techniques]
 *        (defaults 1000 10 32 5 poll,poll_enqueue,watch,watch_enqueue,notify;
 *        each poll technique must come before those judged against it)
 * BENCH_TSV, if set, gets one tab-separated line per technique appended. */
#include <dirent.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "outbox/outbox.h"
#include "testutil.h"

#define TOPIC "lat"
#define MAX_PRODUCERS 256
#define MAX_ROUNDS 15

static const char *g_ci;
static char g_host[64];
static int g_port;

/* One measurement. */
static struct {
    int enqueue;    /* outbox_enqueue instead of plain SQL */
    int hint;       /* ... with the wake-up hint */
    int paced;      /* latency run: follow the schedule; else as fast as possible */
    long total;     /* paced: events to write */
    double rate;    /* paced: events/s */
    double t0, end; /* schedule start; closed loop: stop time */
    long base;      /* first event index of this measurement */
    double *commit; /* per event: when COMMIT returned (ms), 0 if not */
    double *seen;   /* per event: when the reader saw it */
    atomic_long next;
    atomic_long committed;
    atomic_int stop_reader;
} g;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sleep_until(double t)
{
    double d = t - now_ms();
    if (d <= 0)
        return;
    struct timespec ts = {(time_t)(d / 1e3), (long)(((long long)(d * 1e6)) % 1000000000LL)};
    nanosleep(&ts, NULL);
}

static void event_id(long i, char *out)
{
    snprintf(out, OUTBOX_UUID_STRLEN + 1, "00000000-0000-7000-8000-%012lx", i);
}

static void *producer(void *arg)
{
    (void)arg;
    PGconn *c = tu_connect(g_ci);
    char err[512], id[OUTBOX_UUID_STRLEN + 1], key[32], payload[64];
    for (;;) {
        long i = atomic_fetch_add(&g.next, 1);
        if (g.paced) {
            if (i >= g.total)
                break;
            sleep_until(g.t0 + (double)i * 1000.0 / g.rate);
        } else if (now_ms() >= g.end) {
            break;
        }
        long n = g.base + i;
        event_id(n, id);
        snprintf(key, sizeof(key), "k%ld", n % 1000);
        snprintf(payload, sizeof(payload), "{\"n\":%ld}", n);
        PQclear(tu_exec(c, "BEGIN"));
        if (g.enqueue) {
            outbox_event_t ev = {.id = id,
                                 .topic = TOPIC,
                                 .type = "T",
                                 .key = key,
                                 .payload = payload,
                                 .wakeup_hint = g.hint};
            CHECK(outbox_enqueue(c, &ev, NULL, err, sizeof(err)) == OUTBOX_OK, "%s", err);
        } else {
            const char *p[3] = {id, key, payload};
            PGresult *r = PQexecParams(c,
                                       "INSERT INTO outbox (id, topic, type, key, payload)"
                                       " VALUES ($1::uuid, '" TOPIC "', 'T', $2, $3::json)",
                                       3, NULL, p, NULL, NULL, 0);
            CHECK(PQresultStatus(r) == PGRES_COMMAND_OK, "insert: %s", PQerrorMessage(c));
            PQclear(r);
        }
        PQclear(tu_exec(c, "COMMIT"));
        if (g.paced)
            g.commit[i] = now_ms();
        atomic_fetch_add(&g.committed, 1);
    }
    PQfinish(c);
    return NULL;
}

/* Reads the stream from its end; records when each event is first seen. */
static void *reader(void *arg)
{
    (void)arg;
    redisContext *rc = tu_redis_connect(g_host, g_port);
    char last[64] = "0"; /* the stream was deleted before: read it all */
    while (!atomic_load(&g.stop_reader)) {
        redisReply *x = redisCommand(rc, "XREAD COUNT 1000 BLOCK 100 STREAMS %s %s", TOPIC, last);
        double t = now_ms();
        CHECK(x, "XREAD: %s", rc->errstr);
        if (x->type == REDIS_REPLY_ARRAY && x->elements == 1) {
            redisReply *entries = x->element[0]->element[1];
            for (size_t e = 0; e < entries->elements; e++) {
                redisReply *ent = entries->element[e];
                snprintf(last, sizeof(last), "%s", ent->element[0]->str);
                redisReply *f = ent->element[1];
                for (size_t k = 0; k + 1 < f->elements; k += 2) {
                    if (strcmp(f->element[k]->str, "id"))
                        continue;
                    long n = strtol(f->element[k + 1]->str + 24, NULL, 16) - g.base;
                    if (g.paced && n >= 0 && n < g.total && g.seen[n] == 0)
                        g.seen[n] = t;
                }
            }
        }
        freeReplyObject(x);
    }
    redisFree(rc);
    return NULL;
}

static void run_producers(int nprod)
{
    pthread_t th[MAX_PRODUCERS];
    atomic_store(&g.next, 0);
    atomic_store(&g.committed, 0);
    for (int i = 0; i < nprod; i++)
        CHECK(pthread_create(&th[i], NULL, producer, NULL) == 0, "pthread_create");
    for (int i = 0; i < nprod; i++)
        pthread_join(th[i], NULL);
}

static outbox_relay_t *relay(const char *technique)
{
    char err[512], sink[128];
    outbox_conf_t *conf = outbox_conf_new();
    snprintf(sink, sizeof(sink), "redis://%s:%d", g_host, g_port);
    tu_conf_set(conf, "database_url", g_ci);
    tu_conf_set(conf, "sink", sink);
    tu_conf_set(conf, "metrics_addr", "off");
    tu_conf_set(conf, "log_level", "warn");
    tu_conf_set(conf, "notify", strcmp(technique, "notify") ? "false" : "true");
    /* The watcher at the library's default interval, or BENCH_LATENCY_POLL_MIN. */
    if (strncmp(technique, "watch", 5)) /* poll, poll_enqueue, notify */
        tu_conf_set(conf, "poll_min_interval", "0");
    else if (getenv("BENCH_LATENCY_POLL_MIN"))
        tu_conf_set(conf, "poll_min_interval", getenv("BENCH_LATENCY_POLL_MIN"));
    if (getenv("BENCH_LATENCY_VACUUM_AFTER")) /* the relay's VACUUM, for a before/after */
        tu_conf_set(conf, "vacuum_after", getenv("BENCH_LATENCY_VACUUM_AFTER"));
    outbox_relay_t *r = outbox_relay_new(conf, err, sizeof(err));
    CHECK(r && outbox_relay_start(r, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    return r;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void wait_empty(PGconn *c)
{
    double deadline = now_ms() + 120000;
    while (tu_query_ll(c, "SELECT count(*) FROM outbox") > 0) {
        CHECK(now_ms() < deadline, "the relay did not drain the outbox in 120 s");
        tu_sleep_ms(20);
    }
}

/* CPU seconds (user + system) of a process, or of one of its threads
 * (tid > 0), from /proc. */
static double proc_cpu(int pid, int tid)
{
    char path[96], buf[1024];
    if (tid > 0)
        snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", pid, tid);
    else
        snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double backends_cpu(PGconn *c)
{
    PGresult *r = tu_exec(c, "SELECT pid FROM pg_stat_activity"
                             " WHERE application_name LIKE 'outbox-relay%'");
    double s = 0;
    for (int i = 0; i < PQntuples(r); i++)
        s += proc_cpu(atoi(PQgetvalue(r, i, 0)), 0);
    PQclear(r);
    return s;
}

/* CPU seconds of this process's relay threads (named relay-*). */
static double relay_threads_cpu(void)
{
    double s = 0;
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return 0;
    for (struct dirent *e; (e = readdir(d));) {
        char path[300], comm[32] = "";
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        if (!fgets(comm, sizeof(comm), f))
            comm[0] = '\0';
        fclose(f);
        if (strncmp(comm, "relay-", 6))
            continue;
        s += proc_cpu(getpid(), atoi(e->d_name));
    }
    closedir(d);
    return s;
}

static double self_cpu(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec / 1e6 +
           (double)u.ru_stime.tv_sec + (double)u.ru_stime.tv_usec / 1e6;
}

/* Producers call outbox_enqueue (else: plain SQL INSERT). */
static int uses_enqueue(const char *technique)
{
    return !strcmp(technique, "notify") || !strcmp(technique, "watch_enqueue") ||
           !strcmp(technique, "poll_enqueue");
}

/* Median of n values (sorts a copy). */
static double median(const double *v, int n)
{
    double c[MAX_ROUNDS];
    memcpy(c, v, sizeof(double) * (size_t)n);
    qsort(c, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? c[n / 2] : (c[n / 2 - 1] + c[n / 2]) / 2;
}

/* Non-empty batches (claims that handed out events) of all workers. */
static uint64_t relay_batches(const outbox_relay_t *r)
{
    uint64_t n = 0;
    for (int i = 0; i < outbox_relay_worker_count(r); i++) {
        outbox_worker_stats_t st;
        if (outbox_relay_worker_stats(r, i, &st) == OUTBOX_OK)
            n += st.batches;
    }
    return n;
}

int main(int argc, char **argv)
{
    double rate = argc > 1 ? atof(argv[1]) : 1000;
    double secs = argc > 2 ? atof(argv[2]) : 10;
    int nprod = argc > 3 ? atoi(argv[3]) : 32;
    double cap_secs = argc > 4 ? atof(argv[4]) : 5;
    int rounds = getenv("BENCH_LATENCY_CAP_ROUNDS") ? atoi(getenv("BENCH_LATENCY_CAP_ROUNDS")) : 3;
    const char *list = argc > 5 ? argv[5] : "poll,poll_enqueue,watch,watch_enqueue,notify";
    CHECK(rounds >= 1 && rounds <= MAX_ROUNDS, "BENCH_LATENCY_CAP_ROUNDS: 1..%d", MAX_ROUNDS);
    CHECK(rate > 0 && secs > 0 && nprod > 0 && nprod <= MAX_PRODUCERS && cap_secs > 0,
          "usage: bench_latency [rate] [secs] [producers 1..%d] [cap_secs] [techniques]",
          MAX_PRODUCERS);
    char err[512];
    tu_redis_addr(g_host, sizeof(g_host), &g_port);
    g_ci = tu_fresh_db("bench_latency");
    PGconn *c = tu_connect(g_ci);
    CHECK(outbox_migrate(c, NULL, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    g.total = (long)(rate * secs);
    g.commit = calloc((size_t)g.total, sizeof(double));
    g.seen = calloc((size_t)g.total, sizeof(double));
    double *lat = calloc((size_t)g.total, sizeof(double));
    CHECK(g.commit && g.seen && lat, "out of memory");
    FILE *tsv = NULL;
    const char *tsv_path = getenv("BENCH_TSV");
    if (tsv_path && *tsv_path) {
        tsv = fopen(tsv_path, "a");
        CHECK(tsv, "cannot open BENCH_TSV %s", tsv_path);
        if (ftell(tsv) == 0)
            fputs(
                "technique\trate\tsecs\tproducers\tevents\tp50_ms\tp99_ms\tmax_ms\twarmup_max_ms\t"
                "cap_tps\t"
                "cap_ratio\tidle_relay_cpu_s\tidle_pg_cpu_s\tcap_rounds\tcap_ratios\t"
                "cap_claims_per_s\tcap_cpu_s_per_s\n",
                tsv);
    }
    printf("## commit -> Redis latency at %.0f events/s from %d producer connections (%.0f s), "
           "and producer capacity (%.0f s, as fast as they can, median of %d alternated "
           "rounds)\n\n"
           "| wake-up | producers write | p50 ms | p99 ms | max ms | first second max ms | "
           "producer commits/s | vs poll | relay claims/s | relay CPU s/s |\n"
           "|---|---|---|---|---|---|---|---|---|---|\n",
           rate, nprod, secs, cap_secs, rounds);
    fflush(stdout);
    double idle_relay = -1, idle_pg = -1;
    long base = 0;
    char techs[128];
    const char *tech[8];
    int ntech = 0;
    struct {
        double p50, p99, max, warm_max;
        double tps[MAX_ROUNDS], ratio[MAX_ROUNDS], claims[MAX_ROUNDS], cpu[MAX_ROUNDS];
    } res[8];
    snprintf(techs, sizeof(techs), "%s", list);
    for (char *save = NULL, *t = strtok_r(techs, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        CHECK(!strcmp(t, "poll") || !strcmp(t, "poll_enqueue") || !strcmp(t, "watch") ||
                  !strcmp(t, "notify") || !strcmp(t, "watch_enqueue"),
              "unknown technique %s (poll, poll_enqueue, watch, watch_enqueue, notify)", t);
        CHECK(ntech < 8, "at most 8 techniques");
        tech[ntech++] = t;
    }
    for (int ti = 0; ti < ntech; ti++) {
        const char *t = tech[ti];
        PQclear(tu_exec(c, "TRUNCATE outbox"));
        redisContext *rc = tu_redis_connect(g_host, g_port);
        freeReplyObject(redisCommand(rc, "DEL %s", TOPIC));
        outbox_relay_t *r = relay(t);
        tu_sleep_ms(2500); /* lanes settled, relay idle */
        g.enqueue = uses_enqueue(t);
        g.hint = !strcmp(t, "notify");

        /* latency at the steady rate */
        memset(g.commit, 0, sizeof(double) * (size_t)g.total);
        memset(g.seen, 0, sizeof(double) * (size_t)g.total);
        g.base = base;
        g.paced = 1;
        g.rate = rate;
        atomic_store(&g.stop_reader, 0);
        pthread_t rd;
        CHECK(pthread_create(&rd, NULL, reader, NULL) == 0, "pthread_create");
        tu_sleep_ms(200);
        g.t0 = now_ms() + 50;
        run_producers(nprod);
        double deadline = now_ms() + 30000;
        long n = 0;
        for (;;) {
            n = 0;
            for (long i = 0; i < g.total; i++)
                n += g.seen[i] > 0;
            if (n == g.total || now_ms() > deadline)
                break;
            tu_sleep_ms(50);
        }
        atomic_store(&g.stop_reader, 1);
        pthread_join(rd, NULL);
        CHECK(n == g.total, "%s: only %ld of %ld events reached Redis in 30 s", t, n, g.total);
        /* Steady state: the first second is the warm-up (the relay was idle,
         * its watcher backed off); its worst case is reported apart. */
        long skip = (long)rate < g.total / 2 ? (long)rate : 0, m = 0;
        double warm_max = 0;
        for (long i = 0; i < g.total; i++) {
            if (i < skip) {
                if (g.seen[i] - g.commit[i] > warm_max)
                    warm_max = g.seen[i] - g.commit[i];
                continue;
            }
            lat[m++] = g.seen[i] - g.commit[i];
        }
        if (getenv("BENCH_LATENCY_SLOW")) /* where the tail comes from */
            for (long i = 0; i < g.total; i++)
                if (g.seen[i] - g.commit[i] > atof(getenv("BENCH_LATENCY_SLOW")))
                    fprintf(stderr, "slow: event %ld committed at +%.1f ms, seen +%.1f ms\n",
                            g.base + i, g.commit[i] - g.t0, g.seen[i] - g.commit[i]);
        qsort(lat, (size_t)m, sizeof(double), cmp_double);
        res[ti].p50 = lat[m / 2];
        res[ti].p99 = lat[(m * 99 + 99) / 100 - 1];
        res[ti].max = lat[m - 1];
        res[ti].warm_max = warm_max;
        base += g.total;

        /* idle cost (watch): nothing written for 10 s */
        if (!strcmp(t, "watch")) {
            wait_empty(c);
            tu_sleep_ms(2000); /* backed off */
            double c0 = self_cpu(), p0 = backends_cpu(c);
            tu_sleep_ms(10000);
            idle_relay = self_cpu() - c0;
            idle_pg = backends_cpu(c) - p0;
        }
        outbox_relay_destroy(r);
        redisFree(rc);
    }

    /* capacity: as fast as they can while the relay drains, the techniques
     * alternated round by round; each round's ratio is to that round's poll */
    for (int round = 0; round < rounds; round++) {
        double poll_tps = 0, poll_enqueue_tps = 0;
        for (int ti = 0; ti < ntech; ti++) {
            const char *t = tech[ti];
            PQclear(tu_exec(c, "TRUNCATE outbox"));
            outbox_relay_t *r = relay(t);
            tu_sleep_ms(1500); /* lanes settled, relay idle */
            g.enqueue = uses_enqueue(t);
            g.hint = !strcmp(t, "notify");
            g.paced = 0;
            g.base = base;
            uint64_t b0 = relay_batches(r);
            double cpu0 = relay_threads_cpu() + backends_cpu(c);
            g.end = now_ms() + cap_secs * 1000;
            double c0 = now_ms();
            run_producers(nprod);
            double el = (now_ms() - c0) / 1000;
            res[ti].cpu[round] = (relay_threads_cpu() + backends_cpu(c) - cpu0) / el;
            res[ti].claims[round] = (double)(relay_batches(r) - b0) / el;
            res[ti].tps[round] = (double)atomic_load(&g.committed) / el;
            base += atomic_load(&g.committed);
            wait_empty(c);
            outbox_relay_destroy(r);
            if (!strcmp(t, "poll"))
                poll_tps = res[ti].tps[round];
            if (!strcmp(t, "poll_enqueue"))
                poll_enqueue_tps = res[ti].tps[round];
            /* against the same producers with no wake-up at all: poll for
             * plain SQL, poll_enqueue (when measured) for outbox_enqueue */
            double ceil = uses_enqueue(t) && poll_enqueue_tps > 0 ? poll_enqueue_tps : poll_tps;
            res[ti].ratio[round] = ceil > 0 ? res[ti].tps[round] / ceil : 0;
            fprintf(stderr, "capacity round %d %s: %.0f commits/s, %.2fx, %.0f claims/s\n",
                    round + 1, t, res[ti].tps[round], res[ti].ratio[round], res[ti].claims[round]);
        }
    }

    for (int ti = 0; ti < ntech; ti++) {
        const char *t = tech[ti];
        int en = uses_enqueue(t), hint = !strcmp(t, "notify");
        double tps = median(res[ti].tps, rounds), ratio = median(res[ti].ratio, rounds);
        double claims = median(res[ti].claims, rounds), cpu = median(res[ti].cpu, rounds);
        char rs[32] = "", all[256] = "";
        if (ratio > 0)
            snprintf(rs, sizeof(rs), "%.2fx", ratio);
        for (int k = 0; k < rounds; k++)
            snprintf(all + strlen(all), sizeof(all) - strlen(all), "%s%.3f", k ? "," : "",
                     res[ti].ratio[k]);
        printf("| %s | %s | %.1f | %.1f | %.1f | %.1f | %.0f | %s | %.0f | %.2f |\n", t,
               hint ? "outbox_enqueue, with the hint"
               : en ? "outbox_enqueue, no hint"
                    : "plain SQL INSERT",
               res[ti].p50, res[ti].p99, res[ti].max, res[ti].warm_max, tps, rs, claims, cpu);
        if (tsv)
            fprintf(tsv,
                    "%s\t%.0f\t%.0f\t%d\t%ld\t%.2f\t%.2f\t%.2f\t%.2f\t%.0f\t%.3f\t%.3f\t%.3f\t%d\t%"
                    "s\t%.0f\t%.3f\n",
                    t, rate, secs, nprod, g.total, res[ti].p50, res[ti].p99, res[ti].max,
                    res[ti].warm_max, tps, ratio, !strcmp(t, "watch") ? idle_relay : -1,
                    !strcmp(t, "watch") ? idle_pg : -1, rounds, all, claims, cpu);
    }
    if (idle_relay >= 0)
        printf("\nwatch, idle for 10 s: relay process %.3f s CPU, its PostgreSQL backends %.3f s "
               "CPU\n",
               idle_relay, idle_pg);
    if (tsv)
        fclose(tsv);
    free(g.commit);
    free(g.seen);
    free(lat);
    PQfinish(c);
    return 0;
}
