/* bench_nats: NATS JetStream sink throughput against a throwaway
 * nats-server -js (file store) on loopback. Not a test (ctest never runs it).
 *
 *  1. sink: publish N events in calls of 100, with 100 / 10 / 1 distinct
 *     keys per call (1 / 10 / 100 acknowledgement waves per call);
 *  2. relay drain: N events backlog (1,000 keys) with W = 1 and 4 workers
 *     (needs OUTBOX_TEST_PG, e.g. from scripts/servers.sh).
 * Ratios: each rate against the sink's one-wave rate (100 distinct keys per
 * call), measured in the same run.
 * Usage: bench_nats [N]   (default 20000)
 * BENCH_TSV, if set, gets one tab-separated line per measurement appended. */
#include "core/conf.h"
#include "core/log.h"
#include "core/message.h"
#include "nats/natstest.h"
#include "sink/sink.h"

static double sink_run(const tn_server_t *srv, int n, int keys, const char *topic)
{
    char err[512];
    outbox_conf_t *conf = outbox_conf_new();
    outbox_sink_t *sink = outbox__sink_new(srv->url, conf, "bench", err, sizeof(err));
    CHECK(sink, "%s", err);
    outbox_msg_t msgs[100];
    outbox_pub_result_t res[100];
    char keybuf[100][16];
    long long t0 = 0;
    for (int done = -100; done < n; done += 100) { /* first call warms up (stream creation) */
        for (int i = 0; i < 100; i++) {
            outbox_msg_t *m = &msgs[i];
            memset(m, 0, sizeof(*m));
            outbox_uuid_v7(m->id);
            snprintf(keybuf[i], sizeof(keybuf[i]), "k%d", i % keys);
            m->topic = topic;
            m->type = "Bench";
            m->key = keybuf[i];
            m->payload = "{\"amount\":1234,\"currency\":\"EUR\",\"note\":\"benchmark payload of "
                         "moderate size\"}";
            m->time = "2026-11-22T10:00:00Z";
            m->envelope = outbox__envelope_build(m, &m->envelope_len, err, sizeof(err));
        }
        if (done == 0)
            t0 = tu_now_ms();
        CHECK(sink->ops->publish(sink, msgs, 100, res) == OUTBOX_OK, "publish: %s", res[0].errstr);
        for (int i = 0; i < 100; i++) {
            CHECK(res[i].err == OUTBOX_OK, "event %d: %s", i, res[i].errstr);
            free(msgs[i].envelope);
        }
    }
    double secs = (double)(tu_now_ms() - t0) / 1000.0;
    outbox__sink_destroy(sink);
    outbox_conf_destroy(conf);
    return n / secs;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 20000;
    tn_server_t srv = {0};
    outbox__log_setup(getenv("OUTBOX_LOG_LEVEL"), NULL); /* the sink alone logs too */
    tn_start(&srv);
    FILE *tsv = NULL;
    const char *tsv_path = getenv("BENCH_TSV");
    if (tsv_path && *tsv_path) {
        tsv = fopen(tsv_path, "a");
        CHECK(tsv, "cannot open BENCH_TSV %s", tsv_path);
        if (ftell(tsv) == 0)
            fputs("part\tkeys_per_call\tworkers\tn\tevents_per_s\n", tsv);
    }
    printf("## NATS JetStream sink: %d events, calls of 100, file store, loopback\n\n", n);
    printf("| distinct keys per call | waves per call | events/s | vs one wave |\n"
           "|---|---|---|---|\n");
    const int keys[] = {100, 10, 1};
    const char *topics[] = {"b100", "b10", "b1"};
    double one_wave = 0;
    for (int i = 0; i < 3; i++) {
        double rate = sink_run(&srv, n, keys[i], topics[i]);
        if (i == 0)
            one_wave = rate;
        printf("| %d | %d | %.0f | %.2fx |\n", keys[i], 100 / keys[i], rate, rate / one_wave);
        fflush(stdout);
        if (tsv)
            fprintf(tsv, "sink\t%d\t\t%d\t%.1f\n", keys[i], n, rate);
    }

    if (getenv("OUTBOX_TEST_PG")) {
        printf("\n## relay drain to NATS: %d events backlog, 1000 keys, default batch size\n\n", n);
        printf("| workers | seconds | events/s | vs sink alone, one wave |\n|---|---|---|---|\n");
        const char *conninfo;
        PGconn *db = tn_db("bench_nats", &conninfo);
        const char *ws[] = {"1", "4"};
        for (int w = 0; w < 2; w++) {
            char sql[512];
            snprintf(sql, sizeof(sql),
                     "INSERT INTO outbox (id, topic, type, key, payload) SELECT gen_random_uuid(), "
                     "'drain%d', "
                     "'Bench', 'k' || (g %% 1000), ('{\"n\":' || g || '}')::json FROM "
                     "generate_series(1, %d) g",
                     w, n);
            PQclear(tu_exec(db, sql));
            long long t0 = tu_now_ms();
            outbox_relay_t *r =
                tn_relay(conninfo, srv.url, (const char *const[]){"workers", ws[w], NULL});
            CHECK(tn_wait_drained(db, 120000) == 0, "not drained");
            double secs = (double)(tu_now_ms() - t0) / 1000.0;
            outbox_relay_destroy(r);
            printf("| %s | %.2f | %.0f | %.2fx |\n", ws[w], secs, n / secs, n / secs / one_wave);
            fflush(stdout);
            if (tsv)
                fprintf(tsv, "relay\t\t%s\t%d\t%.1f\n", ws[w], n, n / secs);
        }
        PQfinish(db);
    }
    if (tsv)
        fclose(tsv);
    tn_cleanup(&srv);
    return 0;
}
