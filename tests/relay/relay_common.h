/* Helpers shared by the relay tests (header-only, static). */
#ifndef OUTBOX_TEST_RELAY_COMMON_H
#define OUTBOX_TEST_RELAY_COMMON_H

#include <pthread.h>
#include <string.h>

#include "outbox/envelope.h"
#include "outbox/outbox.h"
#include "testutil.h"

/* Fresh DB with the schema applied; returns conninfo. */
static __attribute__((unused)) const char *setup_db(const char *name, PGconn **out)
{
    return tu_outbox_db(name, out);
}

/* The opening most relay tests share: declares c and ci (a fresh database
 * named name, with the schema), host and port (the test's Redis) and r (a
 * connection to it). */
#define RELAY_TEST_OPEN(name)                                                                      \
    PGconn *c;                                                                                     \
    const char *ci = setup_db(name, &c);                                                           \
    char host[64];                                                                                 \
    int port;                                                                                      \
    tu_redis_addr(host, sizeof(host), &port);                                                      \
    redisContext *r = tu_redis_connect(host, port)

/* Enqueues n events on topic in transactions of per_tx events; event i has
 * key "k<i % nkeys>" and payload {"seq":i,"key":...}. ids[i] gets the id. */
static __attribute__((unused)) void enqueue_many(PGconn *c, const char *topic, int n, int nkeys,
                                                 int per_tx, char (*ids)[OUTBOX_UUID_STRLEN + 1])
{
    char err[512], key[32], payload[128];
    for (int i = 0; i < n; i++) {
        if (i % per_tx == 0)
            PQclear(tu_exec(c, "BEGIN"));
        snprintf(key, sizeof(key), "k%d", i % nkeys);
        snprintf(payload, sizeof(payload), "{\"seq\":%d,\"key\":\"%s\"}", i, key);
        outbox_event_t ev = {.topic = topic, .type = "TestEvent", .key = key, .payload = payload};
        CHECK(outbox_enqueue(c, &ev, ids ? ids[i] : NULL, err, sizeof(err)) == OUTBOX_OK,
              "enqueue: %s", err);
        if (i % per_tx == per_tx - 1 || i == n - 1)
            PQclear(tu_exec(c, "COMMIT"));
    }
}

/* A relay config pointing at this test's DB and Redis. */
static __attribute__((unused)) outbox_conf_t *relay_conf(const char *conninfo,
                                                         const char *redis_host, int redis_port)
{
    char err[512], sink[256];
    outbox_conf_t *conf = outbox_conf_new();
    snprintf(sink, sizeof(sink), "redis://%s:%d", redis_host, redis_port);
    CHECK(outbox_conf_set(conf, "database_url", conninfo, err, sizeof(err)) == OUTBOX_OK, "%s",
          err);
    CHECK(outbox_conf_set(conf, "sink", sink, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    CHECK(outbox_conf_set(conf, "metrics_addr", "off", err, sizeof(err)) == OUTBOX_OK, "%s", err);
    CHECK(outbox_conf_set(conf, "log_level", "warn", err, sizeof(err)) == OUTBOX_OK, "%s", err);
    return conf;
}

static __attribute__((unused)) void conf_set(outbox_conf_t *conf, const char *k, const char *v)
{
    tu_conf_set(conf, k, v);
}

/* Waits until the outbox table is empty; fails the test after timeout_ms. */
static __attribute__((unused)) void wait_drained(PGconn *c, int timeout_ms)
{
    tu_wait_drained(c, timeout_ms);
}

/* Polls the single-number query sql until it returns want; fails the test
 * after timeout_ms with what was last seen and what. Returns the elapsed
 * milliseconds. */
static __attribute__((unused)) long long wait_query_ll(PGconn *c, const char *sql, long long want,
                                                       int timeout_ms, const char *what)
{
    long long t0 = tu_now_ms(), end = t0 + timeout_ms, got = -1;
    for (;;) {
        got = tu_query_ll(c, sql);
        if (got == want)
            return tu_now_ms() - t0;
        if (tu_now_ms() >= end)
            break;
        tu_sleep_ms(20);
    }
    CHECK(0, "%s: after %d ms \"%s\" gives %lld, want %lld", what, timeout_ms, sql, got, want);
    return -1;
}

/* One stream entry as the Redis sink writes it. */
typedef struct entry_s {
    char id[OUTBOX_UUID_STRLEN + 1];
    char key[64];
    int seq; /* payload "seq" */
} entry_t;

/* Reads the whole stream (in order) into a malloc'd array; validates every
 * entry's CloudEvents document against its id/key fields. */
static __attribute__((unused)) entry_t *read_stream(redisContext *r, const char *stream,
                                                    long *count)
{
    long cap = 1024, n = 0;
    entry_t *out = malloc((size_t)cap * sizeof(*out));
    char start[64] = "-";
    for (;;) {
        redisReply *rep = redisCommand(r, "XRANGE %s %s + COUNT 1000", stream, start);
        CHECK(rep && rep->type == REDIS_REPLY_ARRAY, "XRANGE failed");
        if (rep->elements == 0) {
            freeReplyObject(rep);
            break;
        }
        for (size_t i = 0; i < rep->elements; i++) {
            redisReply *e = rep->element[i];
            redisReply *f = e->element[1];
            const char *id = NULL, *key = NULL, *event = NULL;
            size_t event_len = 0;
            for (size_t j = 0; j + 1 < f->elements; j += 2) {
                if (!strcmp(f->element[j]->str, "id"))
                    id = f->element[j + 1]->str;
                else if (!strcmp(f->element[j]->str, "key"))
                    key = f->element[j + 1]->str;
                else if (!strcmp(f->element[j]->str, "event")) {
                    event = f->element[j + 1]->str;
                    event_len = f->element[j + 1]->len;
                }
            }
            CHECK(id && key && event, "stream entry without id/key/event fields");
            outbox_envelope_t env;
            char err[256];
            CHECK(outbox_envelope_parse(event, event_len, &env, err, sizeof(err)) == OUTBOX_OK,
                  "entry %s is not a valid CloudEvents document: %s", id, err);
            CHECK(!strcmp(env.id, id) && env.subject && !strcmp(env.subject, key),
                  "envelope id/subject differ from the entry fields");
            if (n == cap) {
                cap *= 2;
                out = realloc(out, (size_t)cap * sizeof(*out));
            }
            snprintf(out[n].id, sizeof(out[n].id), "%s", id);
            snprintf(out[n].key, sizeof(out[n].key), "%s", key);
            const char *s = strstr(env.data, "\"seq\":");
            out[n].seq = s ? atoi(s + 6) : -1;
            outbox_envelope_term(&env);
            n++;
            if (i == rep->elements - 1)
                snprintf(start, sizeof(start), "(%s", e->element[0]->str);
        }
        freeReplyObject(rep);
    }
    *count = n;
    return out;
}

static __attribute__((unused)) int cmp_id(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

/* Checks every id of want[0..n) appears in got; returns number of distinct
 * ids in got and sets *dups to entries beyond the first of each id. */
static __attribute__((unused)) long check_all_present(char (*want)[OUTBOX_UUID_STRLEN + 1], int n,
                                                      entry_t *got, long ngot, long *dups)
{
    char(*ids)[OUTBOX_UUID_STRLEN + 1] = malloc((size_t)(ngot ? ngot : 1) * sizeof(*ids));
    for (long i = 0; i < ngot; i++)
        memcpy(ids[i], got[i].id, sizeof(ids[i]));
    qsort(ids, (size_t)ngot, sizeof(ids[0]), cmp_id);
    long distinct = 0;
    for (long i = 0; i < ngot; i++)
        if (i == 0 || strcmp(ids[i], ids[i - 1]))
            distinct++;
    *dups = ngot - distinct;
    for (int i = 0; i < n; i++)
        CHECK(bsearch(want[i], ids, (size_t)ngot, sizeof(ids[0]), cmp_id),
              "event %s never published", want[i]);
    free(ids);
    return distinct;
}

/* The stream holds want[0..n) exactly once each, in per-key order (nkeys
 * keys "k<i % nkeys>"): no loss, no duplicate, no reorder. */
static __attribute__((unused)) void check_key_order(entry_t *got, long n, int nkeys);
static __attribute__((unused)) void check_stream_exactly_once(redisContext *r, const char *stream,
                                                              char (*want)[OUTBOX_UUID_STRLEN + 1],
                                                              int n, int nkeys)
{
    long ngot = 0, dups = 0;
    entry_t *got = read_stream(r, stream, &ngot);
    long distinct = check_all_present(want, n, got, ngot, &dups);
    CHECK(distinct == n && ngot == n && dups == 0,
          "stream has %ld entries, %ld distinct, %ld duplicates", ngot, distinct, dups);
    check_key_order(got, ngot, nkeys);
    free(got);
}

/* Per-key order from the consumer's side: positions of one key must be
 * increasing, except that a duplicate may repeat an already-seen position. */
static __attribute__((unused)) void check_key_order(entry_t *got, long n, int nkeys)
{
    int *maxseen = malloc((size_t)nkeys * sizeof(int));
    for (int k = 0; k < nkeys; k++)
        maxseen[k] = -1;
    for (long i = 0; i < n; i++) {
        int k = atoi(got[i].key + 1);
        CHECK(k >= 0 && k < nkeys, "unexpected key %s", got[i].key);
        int s = got[i].seq;
        if (s > maxseen[k]) {
            /* a new position must be the next one of this key */
            CHECK(s == (maxseen[k] < 0 ? k : maxseen[k] + nkeys),
                  "key %s: position %d after %d (gap or reorder)", got[i].key, s, maxseen[k]);
            maxseen[k] = s;
        }
    }
    free(maxseen);
}

/* ---- batches in flight, observed from PostgreSQL without taking locks ---- */

/* Ids (seq order) of outbox events whose rows a relay session (application
 * name outbox-relay...) holds locked or deleted in a transaction still open:
 * the batches in flight right now. Uses the row's xmax and the transaction
 * id locks in pg_locks, so the probe itself locks nothing (a probe that
 * locked rows would make the relay skip a key's head and publish out of
 * order). Fills up to max ids; returns how many rows are in flight. */
static __attribute__((unused)) int relay_inflight(PGconn *c, char (*ids)[OUTBOX_UUID_STRLEN + 1],
                                                  int max)
{
    PGresult *r =
        tu_exec(c, "SELECT o.id::text FROM outbox o"
                   " JOIN pg_locks l ON l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock'"
                   "  AND l.granted AND l.transactionid = o.xmax"
                   " JOIN pg_stat_activity a ON a.pid = l.pid"
                   " WHERE a.application_name LIKE 'outbox-relay%' ORDER BY o.seq");
    int n = PQntuples(r);
    for (int i = 0; i < n && i < max; i++)
        snprintf(ids[i], sizeof(ids[i]), "%s", PQgetvalue(r, i, 0));
    PQclear(r);
    return n;
}

static __attribute__((unused)) int id_in(const char *id, char (*set)[OUTBOX_UUID_STRLEN + 1], int n)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(id, set[i]))
            return 1;
    return 0;
}

#define INFLIGHT_MAX 4096

/* Waits until a batch is claimed: polls relay_inflight until it shows rows
 * the previous probe (a few ms earlier) did not, and returns those (at most
 * max) in ids. A batch caught this way has just begun: with an acknowledgement
 * delay of D (OUTBOX_FAULT_ACK_DELAY) it stays in flight for about D more.
 * Fails the test after timeout_ms. */
static __attribute__((unused)) int
wait_batch_claimed(PGconn *c, char (*ids)[OUTBOX_UUID_STRLEN + 1], int max, int timeout_ms)
{
    char(*prev)[OUTBOX_UUID_STRLEN + 1] = calloc(INFLIGHT_MAX, sizeof(*prev));
    char(*cur)[OUTBOX_UUID_STRLEN + 1] = calloc(INFLIGHT_MAX, sizeof(*cur));
    CHECK(prev && cur, "out of memory");
    int nprev = relay_inflight(c, prev, INFLIGHT_MAX), nfresh = 0;
    long long end = tu_now_ms() + timeout_ms;
    while (tu_now_ms() < end) {
        int ncur = relay_inflight(c, cur, INFLIGHT_MAX);
        for (int i = 0; i < ncur && i < INFLIGHT_MAX; i++)
            if (!id_in(cur[i], prev, nprev < INFLIGHT_MAX ? nprev : INFLIGHT_MAX) && nfresh < max)
                memcpy(ids[nfresh++], cur[i], sizeof(ids[0]));
        if (nfresh)
            break;
        char(*t)[OUTBOX_UUID_STRLEN + 1] = prev;
        prev = cur;
        cur = t;
        nprev = ncur;
        tu_sleep_ms(2);
    }
    free(prev);
    free(cur);
    CHECK(nfresh > 0, "no relay claimed a batch within %d ms", timeout_ms);
    return nfresh;
}

/* How many of ids[0..n) relay_inflight shows in flight now. */
static __attribute__((unused)) int count_inflight(PGconn *c, char (*ids)[OUTBOX_UUID_STRLEN + 1],
                                                  int n)
{
    char(*cur)[OUTBOX_UUID_STRLEN + 1] = calloc(INFLIGHT_MAX, sizeof(*cur));
    CHECK(cur, "out of memory");
    int ncur = relay_inflight(c, cur, INFLIGHT_MAX), hits = 0;
    for (int i = 0; i < n; i++)
        hits += id_in(ids[i], cur, ncur < INFLIGHT_MAX ? ncur : INFLIGHT_MAX);
    free(cur);
    return hits;
}

/* How many of ids[0..n) still have a row in the outbox table. */
static __attribute__((unused)) long long count_in_outbox(PGconn *c,
                                                         char (*ids)[OUTBOX_UUID_STRLEN + 1], int n)
{
    size_t cap = (size_t)n * (OUTBOX_UUID_STRLEN + 1) + 3;
    char *arr = malloc(cap), *p = arr;
    CHECK(arr, "out of memory");
    *p++ = '{';
    for (int i = 0; i < n; i++)
        p += snprintf(p, cap - (size_t)(p - arr), "%s%s", i ? "," : "", ids[i]);
    snprintf(p, cap - (size_t)(p - arr), "}");
    const char *params[1] = {arr};
    PGresult *r = PQexecParams(c, "SELECT count(*) FROM outbox WHERE id = ANY($1::uuid[])", 1, NULL,
                               params, NULL, NULL, 0);
    CHECK(PQresultStatus(r) == PGRES_TUPLES_OK, "count_in_outbox: %s", PQerrorMessage(c));
    long long v = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    free(arr);
    return v;
}

/* How many entries of got[0..ngot) carry id. */
static __attribute__((unused)) long count_entries(entry_t *got, long ngot, const char *id)
{
    long k = 0;
    for (long i = 0; i < ngot; i++)
        k += !strcmp(got[i].id, id);
    return k;
}

#endif
