/*
 * One batch, in four steps a reader can follow:
 *
 *   claim    BEGIN; the store hands out due events of this worker's lanes,
 *            locked, per key a prefix in seq order.
 *   prepare  the CloudEvents envelope of each event (and, for tests, the
 *            injected faults).
 *   publish  in rounds: a round holds at most one event per key, so no sink
 *            ever has two events of a key in flight at once, and a key that
 *            failed in a round sends nothing more in this batch.
 *   settle   acknowledge the confirmed, charge an attempt to the failed
 *            (backoff counted from now, honouring Retry-After), dead-letter
 *            the exhausted or refused; COMMIT.
 *
 * The per-key rule lives here and only here: after an event of key K fails
 * or is held back, no later event of K in the batch is sent, acknowledged or
 * charged an attempt. A crash anywhere before COMMIT leaves every event
 * pending, so it is published again (at least once).
 *
 * The whole transaction is bounded by publish_timeout: the sink must return
 * by a deadline that leaves time to settle, and a batch that still overruns
 * is rolled back instead of committed. A stop request lets the batch in
 * flight finish (within that bound) and is honoured before the next claim.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/keyset.h"
#include "core/log.h"
#include "core/util.h"
#include "relay/relay_int.h"

#define COMPONENT "relay"

/* What became of an event in this batch. */
typedef enum {
    EV_PENDING, /* prepared, not yet sent */
    EV_HELD,    /* not sent (behind a failure of its key, out of time, broker down): untouched */
    EV_ACKED,   /* the broker confirmed it */
    EV_FAILED   /* failed: charge an attempt (or dead-letter) */
} ev_state_t;

typedef struct batch_s {
    outbox_worker_t *w;
    int64_t t0, deadline; /* the transaction's start and its bound */
    outbox_batch_t claimed;
    ev_state_t *state;
    /* The results of the EV_FAILED events only (at most one per key: a
     * failure stops its key), fails[fail_at[i]] for event i. A result is
     * 280 bytes (its errstr): one per event was 560 KB a batch of 2,000 for
     * nothing but "OK". */
    outbox_pub_result_t *fails;
    size_t nfails, fails_cap;
    int *fail_at;
    outbox__keyset_t stopped; /* keys that sent nothing more in this batch */
    /* Scratch for one publish call, round_cap entries: as many as the
     * first round's events (one per key), since a later round only holds
     * keys of the round before. Sized by the batch (2,000) they were 830 KB
     * a batch; the footprint bench's batches have ~333 keys a worker. */
    outbox_msg_t *round;
    outbox_pub_result_t *round_res;
    size_t round_cap;
    size_t *round_idx; /* per event */
    int broker_down;
    int rounds;          /* publish calls made */
    outbox__buf_t arena; /* every envelope of the batch, back to back */
    char err[512];
} batch_t;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void hold_key(batch_t *b, size_t i, ev_state_t st)
{
    b->state[i] = st;
    outbox__keyset_add(&b->stopped, b->claimed.msgs[i].key);
}

/* Event i failed with res: an attempt is charged at settle. Out of memory to
 * keep res, it is held instead (untouched, no attempt charged). */
static void fail(batch_t *b, size_t i, const outbox_pub_result_t *res)
{
    if (b->nfails == b->fails_cap) {
        size_t cap = b->fails_cap ? 2 * b->fails_cap : 8;
        outbox_pub_result_t *p = realloc(b->fails, cap * sizeof(*p));
        if (!p) {
            hold_key(b, i, EV_HELD);
            return;
        }
        b->fails = p;
        b->fails_cap = cap;
    }
    b->fails[b->nfails] = *res;
    b->fail_at[i] = (int)b->nfails++;
    hold_key(b, i, EV_FAILED);
}

/* ------------------------------------------------------------------------ */
/* claim                                                                     */

static int claim(batch_t *b)
{
    outbox_worker_t *w = b->w;
    outbox_store_t *s = w->store;
    if (s->ops->begin(s, b->err, sizeof(b->err)) ||
        s->ops->claim(s, w->lanes, w->nlanes, w->relay->o.batch_size, &b->claimed, b->err,
                      sizeof(b->err)))
        return -1;
    size_t n = b->claimed.n;
    if (!n)
        return 0;
    b->state = calloc(n, sizeof(*b->state));
    b->fail_at = calloc(n, sizeof(*b->fail_at));
    b->round_idx = calloc(n, sizeof(*b->round_idx));
    if (!b->state || !b->fail_at || !b->round_idx || outbox__keyset_init(&b->stopped, n)) {
        snprintf(b->err, sizeof(b->err), "out of memory for a batch of %zu events", n);
        return -1;
    }
    return (int)n;
}

/* ------------------------------------------------------------------------ */
/* prepare                                                                   */

static void prepare(batch_t *b)
{
    const outbox_relay_opts_t *o = &b->w->relay->o;
    size_t n = b->claimed.n, *off = b->round_idx; /* scratch: unused until publish */
    outbox_pub_result_t res;                      /* of an event that fails here */
    for (size_t i = 0; i < n; i++) {
        outbox_msg_t *m = &b->claimed.msgs[i];
        off[i] = SIZE_MAX;
        if (outbox__keyset_has(&b->stopped, m->key)) {
            b->state[i] = EV_HELD;
            continue;
        }
        size_t start = b->arena.len;
        memset(&res, 0, offsetof(outbox_pub_result_t, errstr) + 1);
        outbox_err_t err = outbox__envelope_append(m, &b->arena, res.errstr, sizeof(res.errstr));
        if (err == OUTBOX_ERR_NOMEM) {
            hold_key(b, i, EV_HELD);
            continue;
        }
        if (err) {
            res.err = OUTBOX_ERR_REJECTED;
            fail(b, i, &res);
            continue;
        }
        off[i] = start;
        m->envelope_len = b->arena.len - start;
        if ((o->fault_poison_type && !strcmp(m->type, o->fault_poison_type)) ||
            (o->fault_fail_rate > 0 && outbox__rand01() < o->fault_fail_rate)) {
            res.err = OUTBOX_ERR_BROKER;
            snprintf(res.errstr, sizeof(res.errstr), "injected publish failure (testing)");
            fail(b, i, &res);
            continue;
        }
        b->state[i] = EV_PENDING;
    }
    /* The arena has stopped moving: point the messages into it. */
    for (size_t i = 0; i < n; i++)
        if (off[i] != SIZE_MAX && !b->arena.broken)
            b->claimed.msgs[i].envelope = b->arena.p + off[i];
        else if (b->state[i] == EV_PENDING)
            hold_key(b, i, EV_HELD); /* out of memory: try again later */
}

/* ------------------------------------------------------------------------ */
/* publish                                                                   */

/* Collects the next round: the first still-pending event of every key that
 * has not stopped, their indexes in round_idx. Returns its size. */
static size_t next_round(batch_t *b, outbox__keyset_t *seen)
{
    size_t k = 0;
    for (size_t i = 0; i < b->claimed.n; i++) {
        if (b->state[i] != EV_PENDING)
            continue;
        const char *key = b->claimed.msgs[i].key;
        if (outbox__keyset_has(&b->stopped, key)) {
            b->state[i] = EV_HELD;
            continue;
        }
        if (outbox__keyset_has(seen, key))
            continue; /* a later round */
        outbox__keyset_add(seen, key);
        b->round_idx[k++] = i;
    }
    return k;
}

static void hold_rest(batch_t *b)
{
    for (size_t i = 0; i < b->claimed.n; i++)
        if (b->state[i] == EV_PENDING)
            hold_key(b, i, EV_HELD);
}

static void publish(batch_t *b)
{
    outbox_sink_t *sink = b->w->sink;
    outbox__keyset_t seen = {0};
    if (outbox__keyset_init(&seen, b->claimed.n)) {
        hold_rest(b);
        return;
    }
    for (;;) {
        size_t k = next_round(b, &seen);
        if (!k)
            break;
        if (outbox__now_ms() >= b->deadline) {
            hold_rest(b); /* out of time: the rest waits, uncharged */
            break;
        }
        if (k > b->round_cap) { /* the first round (later ones are no larger) */
            free(b->round);
            free(b->round_res);
            b->round = malloc(k * sizeof(*b->round));
            b->round_res = malloc(k * sizeof(*b->round_res));
            b->round_cap = b->round && b->round_res ? k : 0;
            if (!b->round_cap) {
                hold_rest(b); /* out of memory: the rest waits, uncharged */
                break;
            }
        }
        for (size_t j = 0; j < k; j++)
            b->round[j] = b->claimed.msgs[b->round_idx[j]];
        memset(b->round_res, 0, k * sizeof(*b->round_res));
        b->rounds++;
        sink->deadline_ms = b->deadline;
        outbox_err_t perr = sink->ops->publish(sink, b->round, k, b->round_res);
        if (perr != OUTBOX_OK) {
            /* Broker unreachable: nothing of this round counts or is charged;
             * what earlier rounds delivered is still acknowledged. */
            b->broker_down = 1;
            snprintf(b->err, sizeof(b->err), "%s", b->round_res[0].errstr);
            for (size_t j = 0; j < k; j++)
                hold_key(b, b->round_idx[j], EV_HELD);
            hold_rest(b);
            break;
        }
        for (size_t j = 0; j < k; j++) {
            size_t i = b->round_idx[j];
            if (b->round_res[j].err == OUTBOX_OK)
                b->state[i] = EV_ACKED;
            else if (b->round_res[j].not_sent)
                hold_key(b, i, EV_HELD);
            else
                fail(b, i, &b->round_res[j]);
        }
        /* The next round starts with a fresh view of which keys went out. */
        outbox__keyset_term(&seen);
        if (outbox__keyset_init(&seen, b->claimed.n)) {
            hold_rest(b);
            return;
        }
    }
    outbox__keyset_term(&seen);
}

/* ------------------------------------------------------------------------ */
/* settle                                                                    */

static outbox_err_t settle_failed(batch_t *b, size_t i)
{
    outbox_worker_t *w = b->w;
    const outbox_relay_opts_t *o = &w->relay->o;
    outbox_store_t *s = w->store;
    outbox_msg_t *m = &b->claimed.msgs[i];
    const outbox_pub_result_t *res = &b->fails[b->fail_at[i]];
    int attempt = m->attempts + 1;
    atomic_fetch_add(&w->failed, 1);
    outbox__metrics_count(w, OUTBOX_M_FAILED, m->topic, 1);
    if (res->err == OUTBOX_ERR_REJECTED || attempt >= o->max_attempts) {
        const char *reason = res->err == OUTBOX_ERR_REJECTED ? "rejected" : "max_attempts";
        outbox_err_t err =
            s->ops->dead_letter(s, m->seq, reason, res->errstr, o->park, b->err, sizeof(b->err));
        outbox__metrics_count(w, OUTBOX_M_DEAD, m->topic, 1);
        char att[16];
        snprintf(att, sizeof(att), "%d", attempt);
        outbox__log(OUTBOX_LOG_WARN, COMPONENT, "dead_lettered", res->errstr, "worker", w->name,
                    "event_id", m->id, "topic", m->topic, "key", m->key, "attempts", att, "reason",
                    reason, NULL);
        return err;
    }
    int64_t delay = outbox__backoff_ms(attempt, o->backoff_base_ms, o->backoff_max_ms);
    if (res->retry_after_ms > delay)
        delay = res->retry_after_ms;
    outbox_err_t err = s->ops->retry_at(s, m->seq, delay, res->errstr, b->err, sizeof(b->err));
    int64_t due = outbox__now_ms() + delay;
    if (!w->next_retry_ms || due < w->next_retry_ms)
        w->next_retry_ms = due;
    outbox__metrics_count(w, OUTBOX_M_RETRIED, m->topic, 1);
    if (outbox__log_enabled(OUTBOX_LOG_DEBUG)) {
        char att[16], d[24];
        snprintf(att, sizeof(att), "%d", attempt);
        snprintf(d, sizeof(d), "%lld", (long long)delay);
        outbox__log(OUTBOX_LOG_DEBUG, COMPONENT, "publish_retry", res->errstr, "worker", w->name,
                    "event_id", m->id, "attempt", att, "delay_ms", d, NULL);
    }
    return err;
}

/* Returns events acknowledged (>= 0), or -1 on a database error. */
static int settle(batch_t *b)
{
    outbox_worker_t *w = b->w;
    outbox_relay_t *r = w->relay;
    outbox_store_t *s = w->store;
    if (r->o.fault_ack_delay_ms > 0)
        outbox__sleep_ms(r->o.fault_ack_delay_ms,
                         NULL); /* testing: published, not yet acknowledged */
    size_t n = b->claimed.n, nacked = 0;
    int64_t *acked = calloc(n, sizeof(*acked));
    if (!acked) {
        snprintf(b->err, sizeof(b->err), "out of memory settling a batch");
        return -1;
    }
    outbox_err_t err = OUTBOX_OK;
    for (size_t i = 0; i < n && !err; i++) {
        if (b->state[i] == EV_ACKED)
            acked[nacked++] = b->claimed.msgs[i].seq;
        else if (b->state[i] == EV_FAILED)
            err = settle_failed(b, i);
    }
    if (!err)
        err = s->ops->ack(s, acked, nacked, b->err, sizeof(b->err));
    free(acked);
    if (!err && outbox__now_ms() > b->deadline + r->o.publish_timeout_ms / 10) {
        /* Over the bound: end the transaction now, unacknowledged. The
         * events are published again (at least once). */
        char ms[24];
        snprintf(ms, sizeof(ms), "%lld", (long long)(outbox__now_ms() - b->t0));
        outbox__log(
            OUTBOX_LOG_WARN, COMPONENT, "batch_timeout",
            "batch exceeded publish_timeout: rolled back, its events will be published again",
            "worker", w->name, "ms", ms, NULL);
        s->ops->rollback(s);
        return 0;
    }
    if (!err)
        err = s->ops->commit(s, b->err, sizeof(b->err));
    if (err)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (b->state[i] == EV_ACKED)
            outbox__metrics_count(w, OUTBOX_M_PUBLISHED, b->claimed.msgs[i].topic, 1);
    return (int)nacked;
}

/* ------------------------------------------------------------------------ */

static void note_broker_down(batch_t *b)
{
    outbox_worker_t *w = b->w;
    outbox_relay_t *r = w->relay;
    if (!atomic_load(&w->sink_down)) {
        atomic_store(&w->sink_down, 1);
        w->sink_attempt = 0;
        if (atomic_fetch_add(&r->broker_down, 1) == 0)
            outbox__log(OUTBOX_LOG_ERROR, COMPONENT, "broker_down",
                        "broker unreachable: claiming stopped, probing with backoff; writes keep "
                        "being accepted "
                        "into the outbox",
                        "worker", w->name, "error", b->err, NULL);
    }
    w->next_probe_ms =
        outbox__now_ms() +
        outbox__backoff_ms(++w->sink_attempt, r->o.backoff_base_ms, r->o.probe_max_ms);
}

static void batch_term(batch_t *b)
{
    outbox_store_t *s = b->w->store;
    if (s)
        s->ops->batch_term(s, &b->claimed);
    outbox__keyset_term(&b->stopped);
    free(b->state);
    free(b->fails);
    free(b->fail_at);
    free(b->round);
    free(b->round_res);
    free(b->round_idx);
    outbox__buf_free(&b->arena);
}

int outbox__relay_batch(outbox_worker_t *w)
{
    outbox_relay_t *r = w->relay;
    batch_t b = {.w = w};
    b.t0 = outbox__now_ms();
    /* Leave a tenth of the bound for settling. */
    b.deadline = b.t0 + r->o.publish_timeout_ms - r->o.publish_timeout_ms / 10;
    int64_t t_claim = now_us();
    int rc = claim(&b);
    if (rc <= 0) {
        if (rc == 0 && w->store->ops->commit(w->store, b.err, sizeof(b.err)))
            rc = -1;
        if (rc < 0) {
            batch_term(&b);
            outbox__relay_drop_session(w, b.err);
            return -1;
        }
        batch_term(&b);
        return 0;
    }
    int64_t t_publish = now_us();
    prepare(&b);
    publish(&b);
    int64_t t_settle = now_us();
    int nacked = settle(&b);
    int64_t t_end = now_us();
    size_t n = b.claimed.n;
    batch_term(&b);
    if (nacked < 0) {
        /* Published but maybe not acknowledged: they will be published again. */
        outbox__relay_drop_session(w, b.err);
        return -1;
    }
    atomic_fetch_add(&w->published, (uint64_t)nacked);
    atomic_fetch_add(&w->batches, 1);
    int64_t ms = outbox__now_ms() - b.t0;
    outbox__metrics_batch(w, (double)ms / 1000.0);
    if (outbox__log_enabled(OUTBOX_LOG_INFO)) {
        /* Where the batch's time went: claim (store), prepare + publish
         * (envelopes, broker), settle (store, COMMIT included). */
        char cnt[16], fl[16], mss[24], rounds[16], cu[24], pu[24], su[24];
        snprintf(cnt, sizeof(cnt), "%d", nacked);
        snprintf(fl, sizeof(fl), "%d", (int)n - nacked);
        snprintf(mss, sizeof(mss), "%lld", (long long)ms);
        snprintf(rounds, sizeof(rounds), "%d", b.rounds);
        snprintf(cu, sizeof(cu), "%lld", (long long)(t_publish - t_claim));
        snprintf(pu, sizeof(pu), "%lld", (long long)(t_settle - t_publish));
        snprintf(su, sizeof(su), "%lld", (long long)(t_end - t_settle));
        outbox__log(OUTBOX_LOG_INFO, COMPONENT, "batch_published", "published batch", "worker",
                    w->name, "published", cnt, "not_published", fl, "ms", mss, "rounds", rounds,
                    "claim_us", cu, "publish_us", pu, "settle_us", su, NULL);
    }
    if (b.broker_down) {
        note_broker_down(&b);
        return -2;
    }
    return (int)n;
}
