/* bench_wakeup: how soon an event committed to an idle relay reaches Redis,
 * against the servers of scripts/servers.sh (OUTBOX_TEST_PG,
 * OUTBOX_TEST_REDIS). (The drain measurements that used to live here are in
 * bench_drain.)
 *
 * One event committed every INTERVAL ms (outbox_enqueue); latency from
 * COMMIT returning until this program sees the entry in the Redis stream
 * (XLEN polled every 0.1 ms). Four phases, one after the other:
 *
 *   floor        the least any relay can do: a thread of this program that
 *                LISTENs for the hint, then runs DELETE ... SKIP LOCKED
 *                RETURNING, XADDs each row and commits (no envelope, no
 *                lanes, no retries); events sent with the hint;
 *   NOTIFY hint  outbox_relay with notify=true (watcher off), events sent
 *                with the hint (wakeup_hint = 1);
 *   watcher      outbox_relay with its defaults (notify=false, the watcher
 *                at poll_min_interval), events sent without the hint;
 *   poll only    notify=false, watcher off: the poll interval decides.
 *
 * Usage: bench_wakeup [events] [interval_ms]   (defaults 50 100)
 * BENCH_TSV, if set, gets one tab-separated line per phase appended. */
#include <hiredis/hiredis.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "outbox/outbox.h"
#include "testutil.h"

#define MAX_EVENTS 10000

static const char *g_ci;
static char g_host[64];
static int g_port;
static atomic_int g_stop;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int g_hint; /* outbox_enqueue sends the hint */

/* phase 1: NOTIFY hint; 2: the watcher (the defaults); 3: poll only. */
static outbox_relay_t *relay(int phase)
{
    char err[512], sink[128];
    outbox_conf_t *conf = outbox_conf_new();
    snprintf(sink, sizeof(sink), "redis://%s:%d", g_host, g_port);
    tu_conf_set(conf, "database_url", g_ci);
    tu_conf_set(conf, "sink", sink);
    tu_conf_set(conf, "metrics_addr", "off");
    tu_conf_set(conf, "log_level", "warn");
    tu_conf_set(conf, "notify", phase == 1 ? "true" : "false");
    if (phase != 2)
        tu_conf_set(conf, "poll_min_interval", "0");
    outbox_relay_t *r = outbox_relay_new(conf, err, sizeof(err));
    CHECK(r && outbox_relay_start(r, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    return r;
}

/* The floor: LISTEN, then claim-delete-publish until the table is empty. */
static void *floor_relay(void *arg)
{
    (void)arg;
    PGconn *c = tu_connect(g_ci);
    redisContext *rc = tu_redis_connect(g_host, g_port);
    PQclear(tu_exec(c, "LISTEN outbox_wakeup"));
    while (!atomic_load(&g_stop)) {
        struct pollfd pfd = {.fd = PQsocket(c), .events = POLLIN};
        if (poll(&pfd, 1, 50) <= 0)
            continue;
        CHECK(PQconsumeInput(c), "%s", PQerrorMessage(c));
        PGnotify *nt;
        while ((nt = PQnotifies(c)))
            PQfreemem(nt);
        for (;;) {
            PQclear(tu_exec(c, "BEGIN"));
            PGresult *r = tu_exec(c, "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox"
                                     " ORDER BY seq LIMIT 100 FOR UPDATE SKIP LOCKED)"
                                     " RETURNING topic, payload::text");
            int n = PQntuples(r);
            for (int i = 0; i < n; i++) {
                redisReply *x =
                    redisCommand(rc, "XADD %s * data %s", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1));
                CHECK(x && x->type == REDIS_REPLY_STRING, "XADD failed");
                freeReplyObject(x);
            }
            PQclear(r);
            PQclear(tu_exec(c, "COMMIT"));
            if (n == 0)
                break;
        }
    }
    redisFree(rc);
    PQfinish(c);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* n events, one per interval_ms, to stream `topic`: sorted latencies. */
static void measure(PGconn *c, redisContext *rc, const char *topic, int n, int interval_ms,
                    double *lat)
{
    char err[512];
    freeReplyObject(redisCommand(rc, "DEL %s", topic));
    for (int i = 0; i < n; i++) {
        PQclear(tu_exec(c, "BEGIN"));
        outbox_event_t ev = {
            .topic = topic, .type = "T", .key = "k", .payload = "{}", .wakeup_hint = g_hint};
        CHECK(outbox_enqueue(c, &ev, NULL, err, sizeof(err)) == OUTBOX_OK, "%s", err);
        PQclear(tu_exec(c, "COMMIT"));
        double committed = now_ms(), deadline = committed + 30000;
        for (;;) {
            redisReply *x = redisCommand(rc, "XLEN %s", topic);
            CHECK(x && x->type == REDIS_REPLY_INTEGER, "XLEN failed");
            long long len = x->integer;
            freeReplyObject(x);
            if (len == i + 1) {
                lat[i] = now_ms() - committed;
                break;
            }
            CHECK(now_ms() < deadline, "event %d not in Redis after 30 s", i);
            usleep(100);
        }
        tu_sleep_ms(interval_ms);
    }
    qsort(lat, (size_t)n, sizeof(lat[0]), cmp_double);
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 50;
    int interval = argc > 2 ? atoi(argv[2]) : 100;
    CHECK(n >= 2 && n <= MAX_EVENTS && interval >= 0,
          "usage: bench_wakeup [events 2..%d] [interval_ms]", MAX_EVENTS);
    char err[512];
    tu_redis_addr(g_host, sizeof(g_host), &g_port);
    g_ci = tu_fresh_db("bench_wakeup");
    PGconn *c = tu_connect(g_ci);
    CHECK(outbox_migrate(c, NULL, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    redisContext *rc = tu_redis_connect(g_host, g_port);
    FILE *tsv = NULL;
    const char *tsv_path = getenv("BENCH_TSV");
    if (tsv_path && *tsv_path) {
        tsv = fopen(tsv_path, "a");
        CHECK(tsv, "cannot open BENCH_TSV %s", tsv_path);
        if (ftell(tsv) == 0)
            fputs("phase\tevents\tinterval_ms\tp50_ms\tp95_ms\tmax_ms\tworkers\tpoll_interval\n",
                  tsv);
    }
    outbox_conf_t *defaults = outbox_conf_new();
    char workers[16], poll_iv[16];
    snprintf(workers, sizeof(workers), "%s", outbox_conf_get(defaults, "workers"));
    snprintf(poll_iv, sizeof(poll_iv), "%s", outbox_conf_get(defaults, "poll_interval"));
    outbox_conf_destroy(defaults);

    printf("## wake-up latency: commit -> Redis entry, idle relay (defaults: %s workers), %d "
           "events, one every %d ms\n\n"
           "| wake-up | p50 ms | p95 ms | max ms | p50 vs floor |\n|---|---|---|---|---|\n",
           workers, n, interval);
    static double lat[MAX_EVENTS];
    double floor_p50 = 0;
    const char *phases[] = {"floor", "notify", "watch", "poll"};
    for (int p = 0; p < 4; p++) {
        g_hint = p <= 1;
        pthread_t th;
        outbox_relay_t *r = NULL;
        if (p == 0) {
            atomic_store(&g_stop, 0);
            CHECK(pthread_create(&th, NULL, floor_relay, NULL) == 0, "pthread_create");
            tu_sleep_ms(500);
        } else {
            r = relay(p);
            tu_sleep_ms(2500); /* lanes settled, relay idle */
        }
        measure(c, rc, p == 0 ? "wake_floor" : "wake", n, interval, lat);
        if (p == 0) {
            atomic_store(&g_stop, 1);
            pthread_join(th, NULL);
        } else {
            outbox_relay_destroy(r);
        }
        double p50 = lat[n / 2], p95 = lat[(n * 95 + 99) / 100 - 1], max = lat[n - 1];
        if (p == 0)
            floor_p50 = p50 > 0.01 ? p50 : 0.01;
        char label[128];
        if (p == 0)
            snprintf(label, sizeof(label), "floor: LISTEN, DELETE ... RETURNING, XADD");
        else if (p == 1)
            snprintf(label, sizeof(label), "relay, NOTIFY hint");
        else if (p == 2)
            snprintf(label, sizeof(label), "relay, watcher (defaults, no hint)");
        else
            snprintf(label, sizeof(label), "relay, poll only (poll_interval %s)", poll_iv);
        printf("| %s | %.1f | %.1f | %.1f | %.1fx |\n", label, p50, p95, max, p50 / floor_p50);
        fflush(stdout);
        if (tsv)
            fprintf(tsv, "%s\t%d\t%d\t%.2f\t%.2f\t%.2f\t%s\t%s\n", phases[p], n, interval, p50, p95,
                    max, workers, poll_iv);
    }
    if (tsv)
        fclose(tsv);
    PQfinish(c);
    redisFree(rc);
    return 0;
}
