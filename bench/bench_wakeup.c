/* bench_relay: relay throughput and wake-up latency against the servers of
 * scripts/servers.sh (OUTBOX_TEST_PG, OUTBOX_TEST_REDIS).
 *
 *  1. drain: N events backlog (1,000 keys) drained by W workers, W = 1, 2, 5,
 *     10: events/s (ratio to W=1 is what to compare across machines).
 *  2. wake-up: one event committed every 100 ms to an idle relay; latency
 *     from COMMIT to the Redis entry (its stream id time), with the NOTIFY
 *     hint on and off (off = the poll interval decides).
 * Usage: bench_relay [N]   (default 50000) */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "outbox/outbox.h"
#include "testutil.h"

static long long wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static outbox_relay_t *relay(const char *ci, const char *host, int port, int workers, int notify)
{
    char err[512], sink[128], w[16];
    outbox_conf_t *conf = outbox_conf_new();
    snprintf(sink, sizeof(sink), "redis://%s:%d", host, port);
    snprintf(w, sizeof(w), "%d", workers);
    outbox_conf_set(conf, "database_url", ci, err, sizeof(err));
    outbox_conf_set(conf, "sink", sink, err, sizeof(err));
    outbox_conf_set(conf, "metrics_addr", "off", err, sizeof(err));
    outbox_conf_set(conf, "log_level", "warn", err, sizeof(err));
    outbox_conf_set(conf, "workers", w, err, sizeof(err));
    outbox_conf_set(conf, "notify", notify ? "true" : "false", err, sizeof(err));
    outbox_relay_t *r = outbox_relay_new(conf, err, sizeof(err));
    CHECK(r && outbox_relay_start(r, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    return r;
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 50000;
    char host[64], err[512];
    int port;
    tu_redis_addr(host, sizeof(host), &port);
    const char *ci = tu_fresh_db("bench_relay");
    PGconn *c = tu_connect(ci);
    CHECK(outbox_migrate(c, NULL, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    redisContext *rc = tu_redis_connect(host, port);

    printf("## drain: %d events, 1000 keys, batch 100\n\n| workers | seconds | events/s | vs 1 "
           "worker |\n|---|---|---|---|\n",
           n);
    double base = 0;
    int ws[] = {1, 2, 5, 10};
    for (size_t k = 0; k < sizeof(ws) / sizeof(ws[0]); k++) {
        freeReplyObject(redisCommand(rc, "DEL bench"));
        PQclear(tu_exec(c, "BEGIN"));
        for (int i = 0; i < n; i++) {
            char key[16], payload[64];
            snprintf(key, sizeof(key), "k%d", i % 1000);
            snprintf(payload, sizeof(payload), "{\"seq\":%d,\"amount\":1000}", i);
            outbox_event_t ev = {
                .topic = "bench", .type = "OrderCreated", .key = key, .payload = payload};
            CHECK(outbox_enqueue(c, &ev, NULL, err, sizeof(err)) == OUTBOX_OK, "%s", err);
        }
        PQclear(tu_exec(c, "COMMIT"));
        PQclear(tu_exec(c, "VACUUM ANALYZE outbox"));
        long long t0 = tu_now_ms();
        outbox_relay_t *r = relay(ci, host, port, ws[k], 1);
        while (tu_query_ll(c, "SELECT count(*) FROM outbox") > 0)
            tu_sleep_ms(20);
        double s = (double)(tu_now_ms() - t0) / 1000.0;
        outbox_relay_destroy(r);
        double rate = n / s;
        if (!base)
            base = rate;
        printf("| %d | %.2f | %.0f | %.2fx |\n", ws[k], s, rate, rate / base);
        fflush(stdout);
    }

    printf("\n## wake-up latency: commit → Redis entry, idle relay, 5 workers, 50 events\n\n"
           "| wake-up | p50 ms | p95 ms | max ms |\n|---|---|---|---|\n");
    for (int notify = 1; notify >= 0; notify--) {
        freeReplyObject(redisCommand(rc, "DEL wake"));
        outbox_relay_t *r = relay(ci, host, port, 5, notify);
        tu_sleep_ms(2500); /* lanes settled, relay idle */
        long long lat[50];
        for (int i = 0; i < 50; i++) {
            PQclear(tu_exec(c, "BEGIN"));
            outbox_event_t ev = {.topic = "wake", .type = "T", .key = "k", .payload = "{}"};
            CHECK(outbox_enqueue(c, &ev, NULL, err, sizeof(err)) == OUTBOX_OK, "%s", err);
            PQclear(tu_exec(c, "COMMIT"));
            long long committed = wall_ms();
            for (;;) {
                redisReply *x = redisCommand(rc, "XREVRANGE wake + - COUNT 1");
                long long got = -1;
                if (x && x->elements == 1) {
                    redisReply *y = redisCommand(rc, "XLEN wake");
                    if (y && y->integer == i + 1)
                        got = atoll(x->element[0]->element[0]->str); /* ms part of the entry id */
                    freeReplyObject(y);
                }
                freeReplyObject(x);
                if (got >= 0) {
                    lat[i] = got - committed < 0 ? 0 : got - committed;
                    break;
                }
                tu_sleep_ms(1);
            }
            tu_sleep_ms(100);
        }
        outbox_relay_destroy(r);
        qsort(lat, 50, sizeof(lat[0]), cmp_ll);
        printf("| %s | %lld | %lld | %lld |\n", notify ? "NOTIFY hint" : "poll only (1 s)", lat[25],
               lat[47], lat[49]);
        fflush(stdout);
    }
    PQfinish(c);
    redisFree(rc);
    return 0;
}
