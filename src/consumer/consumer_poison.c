/*
 * Consumers that survive poison: the handler contract (done / retry later /
 * reject), attempts counted in the consumer's own database, dead letters,
 * per-key holds with backoff, the database-outage pause, and requeued dead
 * letters. Shared by every broker file (see consumer.h); the SQL is in
 * src/store/pg/consumer_ops.c.
 *
 *   OUTBOX_OK            acknowledge; forget the message's attempts.
 *   OUTBOX_ERR_REJECTED  dead-letter now (reason "rejected"), acknowledge.
 *   OUTBOX_ERR_DB        retry later, no attempt charged; the whole consumer
 *                        pauses (backoff) since its database is down.
 *   anything else        one attempt charged; at consumer_max_attempts the
 *                        message is dead-lettered ("max_attempts") and
 *                        acknowledged, else retried after a backoff.
 *
 * A message that is not acknowledged holds its key: the key's later
 * messages are not handed to the handler before it is done or dead (see
 * outbox__holds_*). Recording an attempt or a dead letter needs the
 * database: when that fails the message is retried as for OUTBOX_ERR_DB,
 * so an outage never dead-letters anything.
 */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer/consumer.h"
#include "core/conf.h"
#include "core/log.h"
#include "core/util.h"

#define COMPONENT "consumer"
#define HOLD_GRACE_MS 60000      /* a hold outlives its due time by this much */
#define FOLLOWER_MIN_WAIT_MS 50  /* a message behind a held key is offered again no sooner */
#define DB_PAUSE_MAX_MS 5000     /* longest pause while the consumer's database is down */
#define STORE_RETRY_MS 1000      /* between attempts to open the database session */
#define REQUEUE_INTERVAL_MS 1000 /* requeued dead letters are looked for this often */
#define REQUEUE_BATCH 50
#define ON_RECORD_CHECK_MS 5000   /* re-checks whether any attempts are on record */
#define BATCH_BROKEN_RETRY_MS 100 /* messages of an aborted batch are offered again no sooner */

/* ------------------------------------------------------------------------ */
/* The decision (pure)                                                       */

outbox__fate_t outbox__consumer_fate(outbox_err_t rc)
{
    switch (rc) {
    case OUTBOX_OK:
        return OUTBOX__FATE_DONE;
    case OUTBOX_ERR_REJECTED:
        return OUTBOX__FATE_REJECT;
    case OUTBOX_ERR_DB:
        return OUTBOX__FATE_RETRY_FREE;
    default:
        return OUTBOX__FATE_RETRY;
    }
}

int outbox__consumer_is_dead(outbox__fate_t fate, int attempts, int max_attempts)
{
    if (fate == OUTBOX__FATE_REJECT)
        return 1;
    return fate == OUTBOX__FATE_RETRY && attempts >= max_attempts;
}

int64_t outbox__consumer_retry_delay(int failures, int64_t base_ms, int64_t max_ms)
{
    int64_t d = base_ms > 0 ? base_ms : 1;
    for (int i = 1; i < failures && d < max_ms; i++)
        d *= 2;
    return d < max_ms ? d : (max_ms > 0 ? max_ms : 1);
}

/* ------------------------------------------------------------------------ */
/* Holds                                                                     */

static void hold_free(outbox__hold_t *x)
{
    free(x->key);
    free(x->msg_id);
    for (int i = 0; i < x->nq; i++)
        free(x->queue[i]);
    free(x->queue);
}

/* msg_id waits behind x's head: queued once, in the order first seen. */
static void hold_enqueue(outbox__hold_t *x, const char *msg_id)
{
    for (int i = 0; i < x->nq; i++)
        if (!strcmp(x->queue[i], msg_id))
            return;
    if (x->nq == x->capq) {
        int ncap = x->capq ? 2 * x->capq : 8;
        char **nq = realloc(x->queue, (size_t)ncap * sizeof(*nq));
        if (!nq)
            return; /* it still waits; only its rank is unknown */
        x->queue = nq;
        x->capq = ncap;
    }
    if ((x->queue[x->nq] = strdup(msg_id)))
        x->nq++;
}

static void hold_remove(outbox__holds_t *h, int i)
{
    hold_free(&h->v[i]);
    h->v[i] = h->v[--h->n];
}

static int hold_find(outbox__holds_t *h, const char *key, int64_t now)
{
    for (int i = 0; i < h->n; i++) {
        if (h->v[i].expire_ms <= now) { /* its head went elsewhere */
            hold_remove(h, i--);
            continue;
        }
        if (!strcmp(h->v[i].key, key))
            return i;
    }
    return -1;
}

int64_t outbox__holds_wait(outbox__holds_t *h, const char *key, const char *msg_id, int64_t now)
{
    int i = hold_find(h, key, now);
    if (i < 0)
        return 0;
    outbox__hold_t *x = &h->v[i];
    if (!strcmp(x->msg_id, msg_id))
        return x->due_ms > now ? x->due_ms - now : 0;
    hold_enqueue(x, msg_id);
    int64_t w = x->due_ms - now;
    return w > FOLLOWER_MIN_WAIT_MS ? w : FOLLOWER_MIN_WAIT_MS;
}

outbox__hold_t *outbox__holds_fail(outbox__holds_t *h, const char *key, const char *msg_id,
                                   int64_t now, int64_t due_ms, int64_t expire_ms)
{
    int i = hold_find(h, key, now);
    if (i >= 0 && strcmp(h->v[i].msg_id, msg_id))
        return NULL; /* a follower: the head decides */
    if (i < 0) {
        if (h->n == h->cap) {
            int ncap = h->cap ? h->cap * 2 : 16;
            outbox__hold_t *nv = realloc(h->v, (size_t)ncap * sizeof(*nv));
            if (!nv)
                return NULL;
            h->v = nv;
            h->cap = ncap;
        }
        outbox__hold_t x = {strdup(key), strdup(msg_id), 0, 0, 0, NULL, 0, 0};
        if (!x.key || !x.msg_id) {
            hold_free(&x);
            return NULL;
        }
        i = h->n++;
        h->v[i] = x;
    }
    h->v[i].due_ms = due_ms;
    h->v[i].expire_ms = expire_ms;
    h->v[i].failures++;
    return &h->v[i];
}

void outbox__holds_release(outbox__holds_t *h, const char *key, const char *msg_id, int64_t now)
{
    for (int i = 0; i < h->n; i++) {
        outbox__hold_t *x = &h->v[i];
        if (strcmp(x->key, key) || strcmp(x->msg_id, msg_id))
            continue;
        if (!x->nq) {
            hold_remove(h, i);
            return;
        }
        /* The next follower leads now; the others stay behind it. */
        free(x->msg_id);
        x->msg_id = x->queue[0];
        memmove(x->queue, x->queue + 1, (size_t)(x->nq - 1) * sizeof(*x->queue));
        x->nq--;
        x->due_ms = now;
        x->expire_ms = now + HOLD_GRACE_MS;
        x->failures = 0;
        return;
    }
}

void outbox__holds_drop(outbox__holds_t *h, const char *key)
{
    for (int i = 0; i < h->n; i++)
        if (!strcmp(h->v[i].key, key)) {
            hold_remove(h, i);
            return;
        }
}

void outbox__holds_term(outbox__holds_t *h)
{
    for (int i = 0; i < h->n; i++)
        hold_free(&h->v[i]);
    free(h->v);
    memset(h, 0, sizeof(*h));
}

/* ------------------------------------------------------------------------ */
/* outbox_delivery_set_error: the handler's reason, for the error history    */

static _Thread_local struct {
    const outbox_delivery_t *d;
    outbox_consumer_t *c; /* whose handler call this is */
    int batched;          /* the call runs in a batch */
    int opened;           /* ... and opened its savepoint (outbox_delivery_batched) */
    char text[1024];
} g_cur;

int outbox_delivery_batched(const outbox_delivery_t *d)
{
    if (!d || d != g_cur.d || !g_cur.batched)
        return 0;
    if (g_cur.opened)
        return 1;
    /* The message's savepoint, on demand: a handler that does no database
     * work (an event it ignores) costs no round trip. After a handler that
     * worked, the next savepoint is already open (NEXT, below). One that
     * cannot be opened breaks the batch: it is rolled back whatever the
     * handler does now, and delivered again. */
    outbox__batch_t *b = &g_cur.c->batch;
    g_cur.opened = 1;
    if (!b->sp) {
        if (b->fn(OUTBOX_CONSUMER_BATCH_SAVEPOINT, 1, b->opaque) != OUTBOX_OK)
            b->broken = 1;
        b->sp = 1;
    }
    return 1;
}

void outbox_delivery_set_error(const outbox_delivery_t *d, const char *fmt, ...)
{
    if (!d || d != g_cur.d || !fmt)
        return; /* not inside this delivery's handler call */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_cur.text, sizeof(g_cur.text), fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------------ */
/* The database session                                                      */

outbox_err_t outbox__poison_init(outbox_consumer_t *c, char *errstr, size_t errstr_size)
{
    outbox__poison_t *p = &c->poison;
    p->max_attempts = (int)outbox__conf_int(c->conf, "consumer_max_attempts");
    p->backoff_ms = outbox__conf_ms(c->conf, "consumer_retry_backoff");
    p->backoff_max_ms = outbox__conf_ms(c->conf, "consumer_retry_backoff_max");
    /* Only a database the application configured: the DB_* defaults
     * (localhost/outbox_db) would be a guess. */
    int configured =
        outbox__conf_is_set(c->conf, "database_url") || outbox__conf_is_set(c->conf, "db_host");
    p->enabled = outbox__conf_bool(c->conf, "consumer_dead_letters") && configured;
    p->on_record = 1; /* unknown until the session is open */
    if (p->enabled && !(p->db_url = strdup(outbox__conf_database_url(c->conf))))
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    return OUTBOX_OK;
}

void outbox__poison_term(outbox_consumer_t *c)
{
    outbox__poison_t *p = &c->poison;
    outbox__store_close(p->store);
    p->store = NULL;
    free(p->db_url);
    p->db_url = NULL;
    outbox__holds_term(&p->holds);
}

/* After a failed op: the session is no longer usable (store/store.h). */
static void store_lost(outbox_consumer_t *c, const char *why)
{
    outbox__poison_t *p = &c->poison;
    if (!p->store_down)
        outbox__log(OUTBOX_LOG_ERROR, COMPONENT, "consumer_db_down",
                    why && *why ? why : "the consumer's database failed", "consumer", c->name,
                    "group", c->group, NULL);
    p->store_down = 1;
    outbox__store_close(p->store);
    p->store = NULL;
    p->store_retry_ms = outbox__now_ms() + STORE_RETRY_MS;
}

/* A consumer op failed: e OUTBOX_ERR_NOT_FOUND = the tables are missing (the
 * session is fine: said once, with what to do); else the session is lost. */
static void store_failed(outbox_consumer_t *c, outbox_err_t e, const char *why)
{
    outbox__poison_t *p = &c->poison;
    if (e != OUTBOX_ERR_NOT_FOUND) {
        store_lost(c, why);
        return;
    }
    if (!p->tables_missing)
        outbox__log(OUTBOX_LOG_ERROR, COMPONENT, "consumer_tables_missing",
                    "the consumer's database lacks outbox_consumer_attempt / "
                    "outbox_consumer_dead_letter: run outboxctl migrate (or outbox_migrate) on "
                    "it; until then failed messages are retried without being counted",
                    "consumer", c->name, "group", c->group, "error", why, NULL);
    p->tables_missing = 1;
}

/* The session for attempts and dead letters, opened on demand; NULL while
 * disabled or unreachable. */
static outbox_store_t *store(outbox_consumer_t *c)
{
    outbox__poison_t *p = &c->poison;
    if (!p->enabled)
        return NULL;
    if (p->store)
        return p->store;
    int64_t now = outbox__now_ms();
    if (now < p->store_retry_ms)
        return NULL;
    char app[128], err[512];
    snprintf(app, sizeof(app), "outbox-consumer %.100s", c->group);
    outbox_store_cfg_t cfg = {.url = p->db_url, .table = "outbox", .appname = app};
    outbox_store_t *s = outbox__store_open(&cfg, err, sizeof(err));
    if (!s) {
        store_lost(c, err);
        return NULL;
    }
    if (!s->ops->consumer_failed) {
        outbox__log(OUTBOX_LOG_ERROR, COMPONENT, "consumer_db_unsupported",
                    "this database back end keeps no consumer dead letters: failing messages "
                    "are retried for ever",
                    "consumer", c->name, "group", c->group, NULL);
        outbox__store_close(s);
        p->enabled = 0;
        return NULL;
    }
    p->store = s;
    if (p->store_down)
        outbox__log(OUTBOX_LOG_INFO, COMPONENT, "consumer_db_up",
                    "the consumer's database is reachable again", "consumer", c->name, "group",
                    c->group, NULL);
    p->store_down = 0;
    return s;
}

/* ------------------------------------------------------------------------ */
/* Handling one delivery                                                     */

static const char *delivery_key(const outbox_delivery_t *d)
{
    if (d->env.partitionkey && *d->env.partitionkey)
        return d->env.partitionkey;
    if (d->env.subject && *d->env.subject)
        return d->env.subject;
    return d->env.id;
}

/* The binary-mode attributes as a JSON array of names and values (caller
 * frees), or NULL. */
static char *attrs_json(const char *const *attrs)
{
    if (!attrs)
        return NULL;
    json_t *a = json_array();
    for (int i = 0; a && attrs[i] && attrs[i + 1]; i += 2) {
        json_array_append_new(a, json_string(attrs[i]));
        json_array_append_new(a, json_string(attrs[i + 1]));
    }
    char *s = a ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    return s;
}

/* The consumer's database is down (the handler said so, or recording an
 * attempt failed): pause the consumer, hold the key, charge nothing. */
static outbox_err_t db_down(outbox_consumer_t *c, const outbox_delivery_t *d, const char *key,
                            const char *error, int requeued, int64_t *retry_in)
{
    outbox__poison_t *p = &c->poison;
    int64_t now = outbox__now_ms();
    int64_t cap = p->backoff_max_ms < DB_PAUSE_MAX_MS ? p->backoff_max_ms : DB_PAUSE_MAX_MS;
    int64_t pause = outbox__consumer_retry_delay(++p->db_failures, p->backoff_ms, cap);
    p->pause_until_ms = now + pause;
    *retry_in = pause;
    if (!requeued)
        outbox__holds_fail(&p->holds, key, d->env.id, now, now + pause,
                           now + pause + HOLD_GRACE_MS);
    if (p->db_failures == 1 || outbox__log_enabled(OUTBOX_LOG_DEBUG)) {
        char in[24];
        snprintf(in, sizeof(in), "%lldms", (long long)pause);
        outbox__log(OUTBOX_LOG_WARN, COMPONENT, "retry_db_down",
                    "the consumer's database is unavailable: message kept for later, no attempt "
                    "charged",
                    "consumer", c->name, "group", c->group, "message_id", d->env.id, "topic",
                    d->topic, "error", error, "retry_in", in, NULL);
    }
    return OUTBOX_ERR_DB;
}

/* No database to count in or to dead-letter to (none configured, or its
 * tables are missing): retried for ever, with backoff counted in memory. */
static outbox_err_t retry_uncounted(outbox_consumer_t *c, const outbox_delivery_t *d,
                                    outbox__fate_t fate, outbox_err_t rc, const char *key,
                                    const char *error, int requeued, int64_t *retry_in)
{
    outbox__poison_t *p = &c->poison;
    int64_t now = outbox__now_ms();
    outbox__hold_t *h =
        requeued ? NULL : outbox__holds_fail(&p->holds, key, d->env.id, now, now, now);
    int n = h ? h->failures : 1;
    *retry_in = outbox__consumer_retry_delay(n, p->backoff_ms, p->backoff_max_ms);
    if (h) {
        h->due_ms = now + *retry_in;
        h->expire_ms = h->due_ms + HOLD_GRACE_MS;
    }
    char nf[16];
    snprintf(nf, sizeof(nf), "%d", n);
    outbox__log(OUTBOX_LOG_WARN, COMPONENT, "handler_failed",
                fate == OUTBOX__FATE_REJECT
                    ? "handler rejected the message, but there is no consumer dead-letter table "
                      "(database_url, migrations) to put it in: retried later"
                    : "handler failed: retried later (attempts are not counted: no consumer "
                      "database configured, or its tables are missing)",
                "consumer", c->name, "group", c->group, "message_id", d->env.id, "topic", d->topic,
                "failures", nf, "error", error, NULL);
    return rc;
}

/* The message failed for good or for now (fate REJECT or RETRY). */
static outbox_err_t failed(outbox_consumer_t *c, const outbox_delivery_t *d,
                           const char *const *attrs, outbox__fate_t fate, outbox_err_t rc,
                           const char *key, const char *error, int requeued, int64_t *retry_in)
{
    outbox__poison_t *p = &c->poison;
    int64_t now = outbox__now_ms();
    char nmax[48];
    outbox_store_t *s = store(c);
    if (!s) {
        if (p->enabled) /* configured but unreachable: an outage, not the message's fault */
            return db_down(c, d, key, error, requeued, retry_in);
        return retry_uncounted(c, d, fate, rc, key, error, requeued, retry_in);
    }
    char *aj = attrs_json(attrs);
    outbox_consumer_msg_t m = {.group = c->group,
                               .message_id = d->env.id,
                               .topic = d->topic,
                               .key = key,
                               .type = d->env.type,
                               .body = d->body,
                               .body_len = d->body_len,
                               .attrs = aj};
    int attempts = 0, dead = 0;
    char err[512];
    outbox_err_t e = s->ops->consumer_failed(s, &m, error, fate == OUTBOX__FATE_REJECT,
                                             p->max_attempts, &attempts, &dead, err, sizeof(err));
    free(aj);
    if (e == OUTBOX_ERR_NOT_FOUND) {
        store_failed(c, e, err);
        return retry_uncounted(c, d, fate, rc, key, error, requeued, retry_in);
    }
    if (e) {
        store_lost(c, err);
        return db_down(c, d, key, error, requeued, retry_in);
    }
    p->tables_missing = 0;
    p->db_failures = 0;
    p->on_record = 1;
    snprintf(nmax, sizeof(nmax), "%d/%d", attempts, p->max_attempts);
    if (dead != outbox__consumer_is_dead(fate, attempts, p->max_attempts))
        outbox__log(OUTBOX_LOG_ERROR, COMPONENT, "store_disagrees",
                    "the store's dead-letter decision differs from outbox__consumer_is_dead",
                    "consumer", c->name, "message_id", d->env.id, "attempt", nmax, NULL);
    if (dead) {
        outbox__holds_release(&p->holds, key, d->env.id,
                              outbox__now_ms()); /* its key flows again */
        outbox__log(OUTBOX_LOG_ERROR, COMPONENT, "dead_lettered",
                    fate == OUTBOX__FATE_REJECT
                        ? "handler rejected the message: moved to outbox_consumer_dead_letter"
                        : "attempts exhausted: message moved to outbox_consumer_dead_letter",
                    "consumer", c->name, "group", c->group, "message_id", d->env.id, "topic",
                    d->topic, "key", key, "attempt", nmax, "error", error, NULL);
        return OUTBOX_OK; /* acknowledge: it is safe in the dead letters */
    }
    *retry_in = outbox__consumer_retry_delay(attempts, p->backoff_ms, p->backoff_max_ms);
    if (!requeued)
        outbox__holds_fail(&p->holds, key, d->env.id, now, now + *retry_in,
                           now + *retry_in + HOLD_GRACE_MS);
    char in[24];
    snprintf(in, sizeof(in), "%lldms", (long long)*retry_in);
    outbox__log(OUTBOX_LOG_WARN, COMPONENT, "handler_failed",
                "handler failed: the message is retried later, its key waits behind it", "consumer",
                c->name, "group", c->group, "message_id", d->env.id, "topic", d->topic, "key", key,
                "attempt", nmax, "error", error, "retry_in", in, NULL);
    return rc;
}

static outbox_err_t handle(outbox_consumer_t *c, outbox_delivery_t *d, const char *const *attrs,
                           outbox_consumer_handler_fn fn, void *opaque, int requeued,
                           int64_t *retry_in)
{
    outbox__poison_t *p = &c->poison;
    const char *key = delivery_key(d);
    int64_t now = outbox__now_ms();
    *retry_in = 1;
    int64_t w = requeued ? 0 : outbox__holds_wait(&p->holds, key, d->env.id, now);
    if (now < p->pause_until_ms) { /* the database is down: not now */
        *retry_in = p->pause_until_ms - now > w ? p->pause_until_ms - now : w;
        if (!requeued && !w)
            outbox__holds_fail(&p->holds, key, d->env.id, now, p->pause_until_ms,
                               p->pause_until_ms + HOLD_GRACE_MS);
        return OUTBOX_ERR_DB;
    }
    if (w > 0) {
        *retry_in = w;
        return OUTBOX_ERR_TIMEOUT; /* behind a failed message of its key, or not due */
    }
    outbox__batch_t *b = &c->batch;
    g_cur.d = d;
    g_cur.c = c;
    g_cur.batched = b->open && !requeued;
    g_cur.opened = 0;
    g_cur.text[0] = '\0';
    outbox_err_t rc = fn(d, opaque);
    int opened = g_cur.opened;
    g_cur.d = NULL;
    g_cur.c = NULL;
    g_cur.batched = g_cur.opened = 0;
    if (opened && b->broken) { /* its savepoint failed: its work goes with the batch */
        *retry_in = BATCH_BROKEN_RETRY_MS;
        return OUTBOX_ERR_TIMEOUT;
    }
    if (opened && rc == OUTBOX_OK) {
        /* Keep its work; the next savepoint opens now, its answer read by
         * the next statement (outbox_consumer_batch_pg): the round trip
         * overlaps with the next message. */
        if (b->fn(OUTBOX_CONSUMER_BATCH_NEXT, b->sp + 1, b->opaque) != OUTBOX_OK)
            b->broken = 1; /* after it, nothing commits: ack nothing */
        b->sp++;
    } else if (opened && b->fn(OUTBOX_CONSUMER_BATCH_ROLLBACK_TO, b->sp, b->opaque) != OUTBOX_OK) {
        b->broken = 1; /* it failed anyway: charged as usual below */
    }
    char error[1100];
    snprintf(error, sizeof(error), "%s%s%s",
             rc == OUTBOX_ERR_REJECTED ? "rejected by the handler" : outbox_err_str(rc),
             g_cur.text[0] ? ": " : "", g_cur.text);
    outbox__fate_t fate = outbox__consumer_fate(rc);
    switch (fate) {
    case OUTBOX__FATE_DONE: {
        if (p->db_failures) {
            char n[16];
            snprintf(n, sizeof(n), "%d", p->db_failures);
            outbox__log(OUTBOX_LOG_INFO, COMPONENT, "db_recovered",
                        "handler succeeded again after database failures: consumer resumed",
                        "consumer", c->name, "group", c->group, "failures", n, NULL);
        }
        p->db_failures = 0;
        outbox__holds_release(&p->holds, key, d->env.id, outbox__now_ms());
        outbox_store_t *s = (p->on_record || d->redelivered || requeued) ? store(c) : NULL;
        char err[512];
        outbox_err_t e =
            s ? s->ops->consumer_done(s, c->group, d->env.id, err, sizeof(err)) : OUTBOX_OK;
        if (e)
            store_failed(c, e, err); /* a stale count stays; it is cleared next time */
        return OUTBOX_OK;
    }
    case OUTBOX__FATE_RETRY_FREE:
        return db_down(c, d, key, error, requeued, retry_in);
    default:
        return failed(c, d, attrs, fate, rc, key, error, requeued, retry_in);
    }
}

outbox_err_t outbox__poison_handle(outbox_consumer_t *c, outbox_delivery_t *d,
                                   const char *const *attrs, outbox_consumer_handler_fn fn,
                                   void *opaque, int64_t *retry_in_ms)
{
    outbox__batch_t *b = &c->batch;
    if (b->open && b->broken) { /* the batch is aborted: the rest of it waits too */
        *retry_in_ms = BATCH_BROKEN_RETRY_MS;
        return OUTBOX_ERR_TIMEOUT;
    }
    outbox_err_t rc = handle(c, d, attrs, fn, opaque, c->poison.requeued, retry_in_ms);
    if (rc == OUTBOX_OK && b->open) {
        b->ndone++;
        if (b->nkeys == b->capkeys) {
            int ncap = b->capkeys ? 2 * b->capkeys : 64;
            char **nk = realloc(b->keys, (size_t)ncap * sizeof(*nk));
            if (nk) {
                b->keys = nk;
                b->capkeys = ncap;
            }
        }
        if (b->nkeys < b->capkeys && (b->keys[b->nkeys] = strdup(delivery_key(d))))
            b->nkeys++;
    }
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Requeued dead letters                                                     */

typedef struct requeued_s {
    outbox_consumer_t *c;
    outbox_consumer_handler_fn fn;
    void *opaque;
    int stop;
} requeued_t;

static void on_requeued(void *arg, const outbox_consumer_dead_t *dl)
{
    requeued_t *r = arg;
    outbox_consumer_t *c = r->c;
    if (r->stop || !c->poison.store)
        return;
    /* Binary mode: the attributes come back from their JSON array. */
    const char **attrs = NULL;
    json_t *a = dl->attrs ? json_loads(dl->attrs, 0, NULL) : NULL;
    if (a && json_is_array(a) && (attrs = calloc(json_array_size(a) + 2, sizeof(*attrs)))) {
        size_t n = 0;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (json_is_string(json_array_get(a, i)))
                attrs[n++] = json_string_value(json_array_get(a, i));
        attrs[n & ~(size_t)1] = NULL;
    }
    outbox__log(OUTBOX_LOG_INFO, COMPONENT, "requeued",
                "handing a requeued dead letter to the handler again", "consumer", c->name, "group",
                c->group, "message_id", dl->message_id, "topic", dl->topic, NULL);
    int64_t retry_in = 0;
    /* Through dispatch for the parsing; outside the holds (its key moved on). */
    c->poison.requeued = 1;
    outbox_err_t rc =
        outbox__consumer_dispatch(c, dl->topic, dl->body ? dl->body : "", dl->body_len, attrs, 1,
                                  r->fn, r->opaque, &retry_in);
    c->poison.requeued = 0;
    if (rc == OUTBOX_ERR_DB)
        r->stop = 1; /* the database is down: later */
    free(attrs);
    json_decref(a);
}

int outbox__poison_before_poll(outbox_consumer_t *c, int timeout_ms, outbox_consumer_handler_fn fn,
                               void *opaque)
{
    outbox__poison_t *p = &c->poison;
    int64_t now = outbox__now_ms();
    if (now < p->pause_until_ms) {
        int64_t w = p->pause_until_ms - now;
        if (w > timeout_ms)
            w = timeout_ms;
        if (w > 0)
            outbox__sleep_ms(w, NULL);
        return 1;
    }
    if (!p->enabled || now - p->requeue_check_ms < REQUEUE_INTERVAL_MS)
        return 0;
    p->requeue_check_ms = now;
    outbox_store_t *s = store(c);
    if (!s)
        return 0;
    char err[512];
    if (now - p->on_record_check_ms >= ON_RECORD_CHECK_MS) {
        int any = 1;
        outbox_err_t e = s->ops->consumer_has_attempts(s, c->group, &any, err, sizeof(err));
        if (e) {
            store_failed(c, e, err);
            return 0;
        }
        p->on_record = any;
        p->on_record_check_ms = now;
    }
    requeued_t r = {c, fn, opaque, 0};
    outbox_err_t e;
    /* Per topic: the instances of a group may read different topics. */
    for (int i = 0; i < c->ntopics && !r.stop && c->poison.store; i++)
        if ((e = s->ops->cdl_list(s, c->group, c->topics[i], 1, REQUEUE_BATCH, on_requeued, &r, err,
                                  sizeof(err))) != OUTBOX_OK)
            store_failed(c, e, err);
    p->requeue_check_ms = outbox__now_ms();
    return 0;
}
