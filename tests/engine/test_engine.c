/* The engine without a database or a broker: the in-memory store (mem:NAME)
 * under the relay and a scripted in-process sink above it. Each scenario
 * breaks one thing on purpose and checks what the engine promises:
 *
 *   rounds         a publish call never carries two events of one key
 *   partial        one event fails: later events of its key wait, are not
 *                  charged, other keys flow; afterwards order holds
 *   hold / park    exhausted events go to dead letters; their key's later
 *                  events wait (hold) or follow them (park)
 *   broker_down    the sink is unreachable: nothing charged, nothing lost
 *   ack_fails      the store fails after the publish (ack, COMMIT, COMMIT
 *                  with unknown outcome): events published again, none lost
 *   shutdown       stop mid-batch: the batch in flight is finished and
 *                  committed, nothing more is claimed, the relay exits promptly
 *   priority       high-priority heads are published before the backlog
 *   mark           acknowledged events are kept as processed
 *   adaptive       without wake-up hints, poll_min_interval keeps the relay
 *                  looking often while events arrive
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/keyset.h"
#include "relay/relay_int.h"
#include "store/mem/mem.h"
#include "testutil.h"

/* ------------------------------------------------------------------------ */
/* The scripted sink                                                         */

#define MAX_LOG 100000

static struct {
    pthread_mutex_t lock;
    /* every confirmed event, in the order the "broker" accepted it */
    char ids[MAX_LOG][OUTBOX_UUID_STRLEN + 1];
    char keys[MAX_LOG][16];
    int seqs[MAX_LOG];
    int n;
    long calls, two_of_a_key;
    /* the script */
    const char *fail_type; /* events of this type fail (retryable) */
    int fail_times;        /* ... this many times each (0: always) */
    int unreachable;       /* every call fails as unreachable */
    _Atomic int block;     /* calls wait while set (shutdown test) */
    _Atomic int in_call;   /* a call is in flight (workers set it, the test reads it) */
    char failed_ids[64][OUTBOX_UUID_STRLEN + 1];
    int failed_count[64], nfailed;
} S = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void script_reset(void)
{
    pthread_mutex_lock(&S.lock);
    S.n = 0;
    S.calls = S.two_of_a_key = 0;
    S.fail_type = NULL;
    S.fail_times = 0;
    S.unreachable = 0;
    S.block = 0;
    S.nfailed = 0;
    pthread_mutex_unlock(&S.lock);
}

static int times_failed(const char *id)
{
    for (int i = 0; i < S.nfailed; i++)
        if (!strcmp(S.failed_ids[i], id))
            return S.failed_count[i]++;
    if (S.nfailed < 64) {
        snprintf(S.failed_ids[S.nfailed], sizeof(S.failed_ids[0]), "%s", id);
        S.failed_count[S.nfailed++] = 1;
    }
    return 0;
}

static outbox_err_t t_open(outbox_sink_t *sink, char *errstr, size_t errstr_size)
{
    return OUTBOX_OK;
}

static outbox_err_t t_publish(outbox_sink_t *sink, outbox_msg_t *msgs, size_t n,
                              outbox_pub_result_t *res)
{
    S.in_call = 1;
    while (S.block)
        tu_sleep_ms(5);
    pthread_mutex_lock(&S.lock);
    S.calls++;
    outbox__keyset_t ks = {0};
    outbox__keyset_init(&ks, n);
    for (size_t i = 0; i < n; i++) {
        if (outbox__keyset_has(&ks, msgs[i].key))
            S.two_of_a_key++;
        outbox__keyset_add(&ks, msgs[i].key);
    }
    outbox__keyset_term(&ks);
    if (S.unreachable) {
        for (size_t i = 0; i < n; i++) {
            res[i].err = OUTBOX_ERR_BROKER;
            snprintf(res[i].errstr, sizeof(res[i].errstr), "test broker unreachable");
        }
        pthread_mutex_unlock(&S.lock);
        S.in_call = 0;
        return OUTBOX_ERR_BROKER;
    }
    for (size_t i = 0; i < n; i++) {
        outbox_msg_t *m = &msgs[i];
        if (S.fail_type && !strcmp(m->type, S.fail_type) &&
            (!S.fail_times || times_failed(m->id) < S.fail_times)) {
            res[i].err = OUTBOX_ERR_BROKER;
            snprintf(res[i].errstr, sizeof(res[i].errstr), "test broker refused %s", m->type);
            continue;
        }
        res[i].err = OUTBOX_OK;
        if (S.n < MAX_LOG) {
            snprintf(S.ids[S.n], sizeof(S.ids[0]), "%s", m->id);
            snprintf(S.keys[S.n], sizeof(S.keys[0]), "%s", m->key);
            const char *p = strstr(m->payload, "\"seq\":");
            S.seqs[S.n++] = p ? atoi(p + 6) : -1;
        }
    }
    pthread_mutex_unlock(&S.lock);
    S.in_call = 0;
    return OUTBOX_OK;
}

static outbox_err_t t_ping(outbox_sink_t *sink, char *errstr, size_t errstr_size)
{
    pthread_mutex_lock(&S.lock);
    int down = S.unreachable;
    pthread_mutex_unlock(&S.lock);
    return down ? OUTBOX_ERR_BROKER : OUTBOX_OK;
}

static void t_close(outbox_sink_t *sink) {}

static const char *const t_schemes[] = {"test", NULL};
static const outbox_sink_ops_t test_sink = {.name = "test",
                                            .schemes = t_schemes,
                                            .open = t_open,
                                            .publish = t_publish,
                                            .ping = t_ping,
                                            .close = t_close};

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static const char *db;

/* n events on nkeys keys "kK"; event i is key i % nkeys, payload seq i. */
static void enqueue(int n, int nkeys, const char *type_of_first, int priority)
{
    char key[16], payload[64];
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "k%d", i % nkeys);
        snprintf(payload, sizeof(payload), "{\"seq\":%d}", i);
        outbox_event_t ev = {.topic = "t",
                             .type = i < nkeys && type_of_first ? type_of_first : "Ok",
                             .key = key,
                             .payload = payload,
                             .priority = priority};
        CHECK(outbox__mem_enqueue(db, &ev, NULL) == OUTBOX_OK, "enqueue");
    }
}

static outbox_relay_t *start(const char *const *kv)
{
    char url[64];
    snprintf(url, sizeof(url), "mem:%s", db);
    outbox_conf_t *conf = outbox_conf_new();
    tu_conf_set(conf, "database_url", url);
    tu_conf_set(conf, "sink", "stdout:");
    tu_conf_set(conf, "metrics_addr", "off");
    tu_conf_set(conf, "log_level", getenv("ENGINE_LOG") ? getenv("ENGINE_LOG") : "error");
    tu_conf_set(conf, "backoff_base", "50ms");
    tu_conf_set(conf, "backoff_max", "100ms");
    tu_conf_set(conf, "broker_probe_max", "100ms");
    tu_conf_set(conf, "rebalance_interval", "100ms");
    for (; kv && kv[0]; kv += 2)
        tu_conf_set(conf, kv[0], kv[1]);
    char err[512];
    outbox_relay_t *r = outbox_relay_new(conf, err, sizeof(err));
    CHECK(r, "relay_new: %s", err);
    outbox__relay_set_sink_ops(r, &test_sink);
    CHECK(outbox_relay_start(r, err, sizeof(err)) == OUTBOX_OK, "start: %s", err);
    return r;
}

static outbox_mem_counts_t counts(void)
{
    outbox_mem_counts_t c;
    outbox__mem_counts(db, &c);
    return c;
}

#define WAIT_FOR(cond, ms, ...)                                                                    \
    do {                                                                                           \
        long long t0_ = tu_now_ms();                                                               \
        while (!(cond)) {                                                                          \
            CHECK(tu_now_ms() - t0_ < (ms), __VA_ARGS__);                                          \
            tu_sleep_ms(5);                                                                        \
        }                                                                                          \
    } while (0)

static long calls(void)
{
    pthread_mutex_lock(&S.lock);
    long n = S.calls;
    pthread_mutex_unlock(&S.lock);
    return n;
}

static int published(void)
{
    pthread_mutex_lock(&S.lock);
    int n = S.n;
    pthread_mutex_unlock(&S.lock);
    return n;
}

/* Per key, first deliveries in seq order; returns the number of duplicates. */
static int check_order(int nkeys, int n_expected)
{
    int *last = calloc((size_t)nkeys, sizeof(int)), dups = 0;
    char *seen = calloc((size_t)n_expected, 1);
    for (int k = 0; k < nkeys; k++)
        last[k] = -1;
    pthread_mutex_lock(&S.lock);
    for (int i = 0; i < S.n; i++) {
        int k = atoi(S.keys[i] + 1), s = S.seqs[i];
        CHECK(s >= 0 && s < n_expected, "unexpected seq %d", s);
        if (seen[s]) {
            dups++;
            continue;
        }
        seen[s] = 1;
        CHECK(s > last[k], "key %s: seq %d delivered after %d", S.keys[i], s, last[k]);
        last[k] = s;
    }
    pthread_mutex_unlock(&S.lock);
    for (int s = 0; s < n_expected; s++)
        CHECK(seen[s], "event seq %d never delivered", s);
    free(last);
    free(seen);
    return dups;
}

static void begin(const char *name)
{
    static char buf[64];
    snprintf(buf, sizeof(buf), "%s-%d", name, (int)getpid());
    db = buf;
    script_reset();
    printf("-- %s\n", name);
    fflush(stdout);
}

/* ------------------------------------------------------------------------ */
/* Scenarios                                                                 */

static void rounds_and_partial(void)
{
    begin("partial");
    enqueue(400, 10, "Flaky", 0); /* 40 events per key; the first of each key fails twice */
    S.fail_type = "Flaky";
    S.fail_times = 2;
    const char *kv[] = {"workers", "2",           "batch_size", "400", "backoff_base",
                        "300ms",   "backoff_max", "300ms",      NULL};
    outbox_relay_t *r = start(kv);
    /* After the first failure: nothing of those keys is delivered, and the
     * held events carry no attempt. */
    WAIT_FOR(counts().max_attempts_seen >= 1, 5000, "no failure recorded");
    CHECK(published() == 0, "%d events of failing keys delivered while their head failed",
          published());
    outbox_mem_counts_t c = counts();
    CHECK(c.pending == 400, "pending %lld", c.pending);
    WAIT_FOR(counts().pending == 0, 20000, "not drained");
    outbox_relay_destroy(r);
    CHECK(S.two_of_a_key == 0, "%ld publish calls carried two events of one key", S.two_of_a_key);
    int dups = check_order(10, 400);
    CHECK(dups == 0, "%d duplicates without any crash", dups);
    outbox__mem_drop(db);
}

static void dead_letters(int park)
{
    begin(park ? "park" : "hold");
    /* Key k0's first event is poison; 9 more of k0 and 40 of k1..k4 follow. */
    char pid[OUTBOX_UUID_STRLEN + 1], key[16], payload[64];
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof(key), "k%d", i % 5);
        snprintf(payload, sizeof(payload), "{\"seq\":%d}", i);
        outbox_event_t ev = {
            .topic = "t", .type = i == 0 ? "Poison" : "Ok", .key = key, .payload = payload};
        CHECK(outbox__mem_enqueue(db, &ev, i == 0 ? pid : NULL) == OUTBOX_OK, "enqueue");
    }
    S.fail_type = "Poison";
    const char *kv[] = {"max_attempts",         "3",     "dlq_mode", park ? "park" : "hold",
                        "maintenance_interval", "100ms", NULL};
    outbox_relay_t *r = start(kv);
    /* k1..k4 (40 events) flow; k0: the poison and its 9 followers. */
    WAIT_FOR(counts().dead >= 1 && published() == 40, 10000, "dead=%lld published=%d",
             counts().dead, published());
    if (park)
        WAIT_FOR(counts().dead == 10, 5000, "park: dead %lld (want 10)", counts().dead);
    tu_sleep_ms(300); /* a few more claim cycles: nothing of k0 may move in hold mode */
    outbox_relay_destroy(r);
    outbox_mem_counts_t c = counts();
    CHECK(outbox__mem_attempts(db, pid) == 3, "poison attempts %d (want 3)",
          outbox__mem_attempts(db, pid));
    if (park)
        CHECK(c.dead == 10 && c.parked == 9 && c.pending == 0,
              "park: dead %lld parked %lld pending %lld", c.dead, c.parked, c.pending);
    else
        CHECK(c.dead == 1 && c.pending == 9 && c.max_attempts_seen == 0,
              "hold: dead %lld pending %lld (followers must wait uncharged, max attempts %lld)",
              c.dead, c.pending, c.max_attempts_seen);
    pthread_mutex_lock(&S.lock);
    for (int i = 0; i < S.n; i++)
        CHECK(strcmp(S.keys[i], "k0"), "an event of the dead-lettered key was delivered");
    pthread_mutex_unlock(&S.lock);
    outbox__mem_drop(db);
}

static void broker_down(void)
{
    begin("broker_down");
    enqueue(300, 30, NULL, 0);
    S.unreachable = 1;
    const char *kv[] = {"workers", "3", NULL};
    outbox_relay_t *r = start(kv);
    WAIT_FOR(calls() >= 3, 5000, "the relay never tried the broker");
    tu_sleep_ms(300);
    outbox_mem_counts_t c = counts();
    CHECK(c.pending == 300 && c.max_attempts_seen == 0,
          "broker down: pending %lld, attempts charged %lld", c.pending, c.max_attempts_seen);
    pthread_mutex_lock(&S.lock);
    S.unreachable = 0;
    pthread_mutex_unlock(&S.lock);
    WAIT_FOR(counts().pending == 0, 10000, "not drained after the broker came back");
    outbox_relay_destroy(r);
    CHECK(check_order(30, 300) == 0, "duplicates");
    outbox__mem_drop(db);
}

static void ack_fails(outbox_mem_fault_t f, const char *name, int expect_dups)
{
    begin(name);
    enqueue(200, 20, NULL, 0);
    outbox__mem_fault(db, f, 1);
    const char *kv[] = {"workers", "1", "batch_size", "50", NULL};
    outbox_relay_t *r = start(kv);
    WAIT_FOR(counts().pending == 0, 10000, "not drained after the store failed once");
    outbox_relay_destroy(r);
    int dups = check_order(20, 200);
    if (expect_dups)
        CHECK(dups == 50, "%s: %d duplicates (want the 50 of the unacknowledged batch)", name,
              dups);
    else
        CHECK(dups == 0, "%s: %d duplicates (the commit had applied)", name, dups);
    outbox__mem_drop(db);
}

static void shutdown_mid_batch(void)
{
    begin("shutdown");
    enqueue(100, 10, NULL, 0); /* 10 rounds of 10 */
    S.block = 1;
    const char *kv[] = {"workers", "1", "batch_size", "100", NULL};
    outbox_relay_t *r = start(kv);
    WAIT_FOR(S.in_call, 5000, "no publish call in flight");
    outbox_relay_stop(r);
    S.block = 0;
    CHECK(outbox_relay_wait(r, 3000) == OUTBOX_OK,
          "relay did not stop within 3 s of a stop mid-batch");
    outbox_relay_destroy(r);
    outbox_mem_counts_t c = counts();
    /* The batch in flight was finished (all its rounds, within the
     * publish_timeout bound) and committed; nothing else was claimed. */
    CHECK(published() == 100 && c.pending == 0 && c.claimed_now == 0,
          "published %d, pending %lld, still locked %lld", published(), c.pending, c.claimed_now);
    CHECK(check_order(10, 100) == 0, "duplicates");
    outbox__mem_drop(db);
}

static void priority(void)
{
    begin("priority");
    enqueue(2000, 100, NULL, 0);
    char key[16], payload[64];
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "hot%d", i);
        snprintf(payload, sizeof(payload), "{\"seq\":%d}", 2000 + i);
        outbox_event_t ev = {
            .topic = "t", .type = "Hot", .key = key, .payload = payload, .priority = 10};
        CHECK(outbox__mem_enqueue(db, &ev, NULL) == OUTBOX_OK, "enqueue");
    }
    const char *kv[] = {"workers", "1", "batch_size", "50", NULL};
    outbox_relay_t *r = start(kv);
    WAIT_FOR(counts().pending == 0, 10000, "not drained");
    outbox_relay_destroy(r);
    int last_hot = -1;
    pthread_mutex_lock(&S.lock);
    for (int i = 0; i < S.n; i++)
        if (!strncmp(S.keys[i], "hot", 3))
            last_hot = i;
    pthread_mutex_unlock(&S.lock);
    CHECK(last_hot >= 0 && last_hot < 50,
          "last high-priority event delivered at position %d (want the first batch)", last_hot);
    outbox__mem_drop(db);
}

/* No wake-up hint (plain-SQL producers): with poll_min_interval the relay
 * looks again within milliseconds after work, so an event that follows one
 * just published does not wait for the 10 s poll interval; without it, it
 * does. (Margins of seconds: this checks behaviour, not speed.) */
static void adaptive_polling(int on)
{
    begin(on ? "adaptive_on" : "adaptive_off");
    enqueue(1, 1, NULL, 0);
    const char *kv[] = {"notify",
                        "false",
                        "poll_interval",
                        "10s",
                        "rebalance_interval",
                        "10s",
                        "poll_min_interval",
                        on ? "1ms" : "0",
                        "workers",
                        "1",
                        NULL};
    outbox_relay_t *r = start(kv);
    WAIT_FOR(published() == 1, 5000, "first event not published");
    tu_sleep_ms(50); /* the relay is idle now, between polls */
    char payload[32];
    snprintf(payload, sizeof(payload), "{\"seq\":1}");
    outbox_event_t ev = {.topic = "t", .type = "Ok", .key = "k0", .payload = payload};
    CHECK(outbox__mem_enqueue(db, &ev, NULL) == OUTBOX_OK, "enqueue");
    long long t0 = tu_now_ms();
    while (published() < 2 && tu_now_ms() - t0 < 4000)
        tu_sleep_ms(5);
    outbox_relay_destroy(r);
    if (on)
        CHECK(published() == 2,
              "adaptive polling on: the second event waited for the poll interval");
    else
        CHECK(published() == 1,
              "adaptive polling off: the second event was claimed before the poll interval "
              "(the test would prove nothing)");
    outbox__mem_drop(db);
}

static void mark_mode(void)
{
    begin("mark");
    enqueue(100, 10, NULL, 0);
    const char *kv[] = {"ack_mode", "mark", NULL};
    outbox_relay_t *r = start(kv);
    WAIT_FOR(counts().pending == 0, 10000, "not drained");
    outbox_relay_destroy(r);
    CHECK(counts().processed == 100, "processed rows kept: %lld", counts().processed);
    CHECK(check_order(10, 100) == 0, "duplicates");
    outbox__mem_drop(db);
}

int main(void)
{
    rounds_and_partial();
    dead_letters(0);
    dead_letters(1);
    broker_down();
    ack_fails(OUTBOX_MEM_FAIL_ACK, "ack_fails", 1);
    ack_fails(OUTBOX_MEM_FAIL_COMMIT, "commit_fails", 1);
    ack_fails(OUTBOX_MEM_FAIL_COMMIT_APPLIED, "commit_outcome_unknown", 0);
    shutdown_mid_batch();
    priority();
    mark_mode();
    adaptive_polling(1);
    adaptive_polling(0);
    printf("PASS engine: rounds, partial failure, hold, park, broker down, store failures after "
           "publish, "
           "shutdown mid-batch, priority, mark mode, adaptive polling\n");
    return 0;
}
