/* Helpers for the Kafka tests (header-only; every function is static inline
 * so a test may use any subset).
 *
 * The cluster is librdkafka's mock cluster: real Kafka protocol over TCP on
 * loopback, living inside the test process (so the test must outlive every
 * client that talks to it, including the spawned kcat). */
#ifndef OUTBOX_TEST_KAFKA_COMMON_H
#define OUTBOX_TEST_KAFKA_COMMON_H

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <string.h>
#include <unistd.h>

#include "outbox/envelope.h"
#include "outbox/outbox.h"
#include "testutil.h"

typedef struct kt_cluster_s {
    rd_kafka_t *rk; /* handle that owns the mock cluster */
    rd_kafka_mock_cluster_t *mc;
    char bootstraps[256];
    char url[300]; /* kafka://<bootstraps> */
} kt_cluster_t;

/* Starts a mock cluster of nbrokers brokers on loopback. */
static inline void kt_cluster_start(kt_cluster_t *c, int nbrokers)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err)); /* quiet: faults are on purpose */
    c->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    CHECK(c->rk, "rd_kafka_new: %s", err);
    c->mc = rd_kafka_mock_cluster_new(c->rk, nbrokers);
    CHECK(c->mc, "rd_kafka_mock_cluster_new failed");
    snprintf(c->bootstraps, sizeof(c->bootstraps), "%s", rd_kafka_mock_cluster_bootstraps(c->mc));
    snprintf(c->url, sizeof(c->url), "kafka://%s", c->bootstraps);
    printf("mock cluster: %d brokers at %s\n", nbrokers, c->bootstraps);
}

static inline void kt_cluster_stop(kt_cluster_t *c)
{
    rd_kafka_mock_cluster_destroy(c->mc);
    rd_kafka_destroy(c->rk);
}

static inline void kt_topic(kt_cluster_t *c, const char *topic, int partitions, int replicas)
{
    CHECK(rd_kafka_mock_topic_create(c->mc, topic, partitions, replicas) ==
              RD_KAFKA_RESP_ERR_NO_ERROR,
          "mock topic %s", topic);
}

/* Fresh DB with the schema applied; returns conninfo. */
static inline const char *kt_setup_db(const char *name, PGconn **out)
{
    return tu_outbox_db(name, out);
}

/* Enqueues events [from, to) on topic, per_tx per transaction; event i has
 * key "<prefix><i % nkeys>" and payload {"seq":i,"key":...}. */
static inline void kt_enqueue(PGconn *c, const char *topic, const char *type, const char *prefix,
                              int from, int to, int nkeys, int per_tx)
{
    char err[512], key[64], payload[160];
    for (int i = from; i < to; i++) {
        if ((i - from) % per_tx == 0)
            PQclear(tu_exec(c, "BEGIN"));
        snprintf(key, sizeof(key), "%s%d", prefix, i % nkeys);
        snprintf(payload, sizeof(payload), "{\"seq\":%d,\"key\":\"%s\"}", i, key);
        outbox_event_t ev = {.topic = topic,
                             .type = type,
                             .key = key,
                             .payload = payload,
                             .traceparent =
                                 "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                             .headers = "{\"tenant\":\"acme\"}"};
        CHECK(outbox_enqueue(c, &ev, NULL, err, sizeof(err)) == OUTBOX_OK, "enqueue: %s", err);
        if ((i - from) % per_tx == per_tx - 1 || i == to - 1)
            PQclear(tu_exec(c, "COMMIT"));
    }
}

static inline void kt_conf_set(outbox_conf_t *conf, const char *k, const char *v)
{
    tu_conf_set(conf, k, v);
}

/* A relay config: this test's DB, the mock cluster, no metrics endpoint. */
static inline outbox_conf_t *kt_relay_conf(const char *conninfo, const kt_cluster_t *cl)
{
    outbox_conf_t *conf = outbox_conf_new();
    kt_conf_set(conf, "database_url", conninfo);
    kt_conf_set(conf, "sink", cl->url);
    kt_conf_set(conf, "metrics_addr", "off");
    kt_conf_set(conf, "log_level", getenv("KT_LOG_LEVEL") ? getenv("KT_LOG_LEVEL") : "warn");
    return conf;
}

static inline outbox_relay_t *kt_relay_start(outbox_conf_t *conf)
{
    return tu_relay_start(conf);
}

/* Waits until the outbox table is empty; fails the test after timeout_ms. */
static inline void kt_wait_drained(PGconn *c, int timeout_ms)
{
    tu_wait_drained(c, timeout_ms);
}

/* One record as kcat printed it. */
typedef struct kt_rec_s {
    char key[64];
    int partition;
    long long offset;
    char *headers; /* kcat %h: "k=v,k=v" */
    char *value;
    outbox_envelope_t env; /* parsed value (structured) */
    int seq;               /* data.seq */
} kt_rec_t;

static inline void kt_recs_free(kt_rec_t *r, long n)
{
    for (long i = 0; i < n; i++) {
        free(r[i].headers);
        free(r[i].value);
        outbox_envelope_term(&r[i].env);
    }
    free(r);
}

/* Reads the whole topic with the real client (kcat -C ... -e), records in
 * partition, offset order. structured=1: every value must be a valid
 * CloudEvents document (parsed into env). */
static inline kt_rec_t *kt_kcat_read(const kt_cluster_t *cl, const char *topic, int structured,
                                     long *count)
{
    char out[256], errf[256], cmd[1024];
    snprintf(out, sizeof(out), "/tmp/kt-kcat-%d-%s.out", (int)getpid(), topic);
    snprintf(errf, sizeof(errf), "/tmp/kt-kcat-%d-%s.err", (int)getpid(), topic);
    snprintf(cmd, sizeof(cmd),
             "exec kcat -C -b '%s' -t '%s' -o beginning -e -q -X log_level=3 "
             "-f '%%k\\t%%p\\t%%o\\t%%h\\t%%s\\n' >'%s' 2>'%s'",
             cl->bootstraps, topic, out, errf);
    char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    long long t0 = tu_now_ms();
    int st = tu_wait(tu_spawn(argv, NULL, NULL), 60000);
    CHECK(st == 0, "kcat exited with %d (see %s)", st, errf);
    FILE *fp = fopen(out, "r");
    CHECK(fp, "open %s", out);
    long cap = 1024, n = 0;
    kt_rec_t *recs = calloc((size_t)cap, sizeof(*recs));
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    while ((len = getline(&line, &lcap, fp)) > 0) {
        if (line[len - 1] == '\n')
            line[--len] = '\0';
        char *f[5];
        int nf = 0;
        char *p = line;
        f[nf++] = p;
        while (nf < 5 && (p = strchr(p, '\t'))) {
            *p++ = '\0';
            f[nf++] = p;
        }
        CHECK(nf == 5, "kcat line without 5 fields: %s", line);
        if (n == cap) {
            cap *= 2;
            recs = realloc(recs, (size_t)cap * sizeof(*recs));
            memset(recs + n, 0, (size_t)(cap - n) * sizeof(*recs));
        }
        kt_rec_t *r = &recs[n++];
        snprintf(r->key, sizeof(r->key), "%s", f[0]);
        r->partition = atoi(f[1]);
        r->offset = atoll(f[2]);
        r->headers = strdup(f[3]);
        r->value = strdup(f[4]);
        const char *data = r->value;
        if (structured) {
            char err[256];
            CHECK(outbox_envelope_parse(r->value, strlen(r->value), &r->env, err, sizeof(err)) ==
                      OUTBOX_OK,
                  "record %s/%d/%lld is not a valid CloudEvents document: %s: %s", topic,
                  r->partition, r->offset, err, r->value);
            CHECK(r->env.subject && !strcmp(r->env.subject, r->key), "subject %s != message key %s",
                  r->env.subject ? r->env.subject : "(none)", r->key);
            CHECK(r->env.partitionkey && !strcmp(r->env.partitionkey, r->key),
                  "partitionkey != key");
            data = r->env.data;
        }
        const char *s = strstr(data, "\"seq\":");
        CHECK(s, "no seq in data: %s", data);
        r->seq = atoi(s + 6);
    }
    free(line);
    fclose(fp);
    unlink(out);
    unlink(errf);
    printf("kcat read %ld records of %s in %lld ms\n", n, topic, tu_now_ms() - t0);
    *count = n;
    return recs;
}

/* Checks, for events seq [0, total) with key prefix+(seq % nkeys):
 *  - every seq is present (nothing lost); returns the number of duplicates;
 *  - a key always lands in the same partition;
 *  - per partition in offset order, a key's new seqs are exactly the next
 *    one of that key (seq, seq + nkeys, ...): no gap, no reorder; a
 *    duplicate may only repeat a seq already seen. */
static inline long kt_check(kt_rec_t *recs, long n, const char *prefix, int total, int nkeys)
{
    int *seen = calloc((size_t)total, sizeof(int));
    int *part = malloc((size_t)nkeys * sizeof(int));
    int *last = malloc((size_t)nkeys * sizeof(int));
    for (int k = 0; k < nkeys; k++)
        part[k] = -1, last[k] = -1;
    long dups = 0;
    size_t pl = strlen(prefix);
    /* kcat prints partitions interleaved but each partition in offset order */
    for (long i = 0; i < n; i++) {
        kt_rec_t *r = &recs[i];
        CHECK(!strncmp(r->key, prefix, pl), "unexpected key %s", r->key);
        int k = atoi(r->key + pl);
        CHECK(k >= 0 && k < nkeys, "unexpected key %s", r->key);
        CHECK(r->seq >= 0 && r->seq < total && r->seq % nkeys == k,
              "seq %d does not belong to key %s", r->seq, r->key);
        if (part[k] < 0)
            part[k] = r->partition;
        CHECK(part[k] == r->partition, "key %s in partitions %d and %d", r->key, part[k],
              r->partition);
        if (seen[r->seq]++) {
            dups++;
            CHECK(r->seq <= last[k], "key %s: duplicate %d after %d", r->key, r->seq, last[k]);
            continue;
        }
        int want = last[k] < 0 ? k : last[k] + nkeys;
        CHECK(r->seq == want,
              "key %s partition %d offset %lld: seq %d where %d was due (gap or reorder)", r->key,
              r->partition, r->offset, r->seq, want);
        last[k] = r->seq;
    }
    for (int s = 0; s < total; s++)
        CHECK(seen[s], "event seq %d never reached Kafka", s);
    free(seen);
    free(part);
    free(last);
    return dups;
}

#endif
