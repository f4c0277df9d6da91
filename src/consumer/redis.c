/* Redis consumer (hiredis): Streams with a consumer group, or Pub/Sub.
 *
 * redis://[:password@]host[:port][/db]
 *   XGROUP CREATE <topic> <group> 0 MKSTREAM (once; a new group reads the
 *   whole stream), then XREADGROUP GROUP <group> <name> ... STREAMS <topics> >.
 *   An entry is acknowledged (XACK) only after the handler returned
 *   OUTBOX_OK (or it was dead-lettered), i.e. after the handler's
 *   transaction committed. With a batch hook (outbox_consumer_set_batch())
 *   the entries of one read are handled in one transaction, each in a
 *   savepoint, and acknowledged together (one XACK) after its COMMIT; a
 *   batch that did not commit leaves them all pending, read again after
 *   BATCH_REDELIVER_MS. An entry the handler failed stays pending, and
 *   so do the later entries of its key (consumer_poison.c holds the key);
 *   entries of other keys are handled and acknowledged meanwhile, so one
 *   poison message never stalls the group. When its retry is due the
 *   consumer re-reads its own pending entries in stream order (id 0, then
 *   on from the last id read, a pass), which retries the failed entry
 *   first and then its key's followers.
 *   Every claim_idle/2 it takes over entries that another consumer of the
 *   group left pending for longer than consumer_claim_idle (XAUTOCLAIM,
 *   Redis >= 6.2): a crashed instance's messages are processed by the
 *   survivors. Entries deleted from the stream while pending are acked.
 *   About once a minute (consumer_stream_retention / 10, at least 1 s) it
 *   trims each stream: XTRIM MINID to the oldest entry some consumer group
 *   still needs (its oldest pending entry, or the one after the last it was
 *   delivered), but never past now - consumer_stream_retention (Redis's
 *   clock). Acknowledged history stays for the retention (outboxctl replay,
 *   a group added later), then goes: the stream no longer grows without bound.
 *
 * redis+pubsub://[:password@]host[:port][/db]
 *   SUBSCRIBE <topics>. Pub/Sub keeps nothing: messages published while no
 *   consumer is subscribed are lost, and there is nothing to acknowledge.
 *   Use Streams when every event matters.
 *
 * The connection is opened lazily and re-opened after errors. */
#include <errno.h>
#include <stdint.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#include "broker/redis.h"
#include "consumer/consumer.h"
#include "consumer/consumer_decode.h"
#include "core/conf.h"
#include "core/log.h"
#include "core/util.h"

#define CONNECT_TIMEOUT_MS 5000
#define BATCH_REDELIVER_MS 200 /* a batch that did not commit is read again no sooner */

typedef struct redis_consumer_s {
    outbox__redis_url_t addr;
    redisContext *ctx;
    int ready;         /* groups created / subscribed on this connection */
    int *backlog;      /* per topic: 1 = own pending entries to read (a pass) */
    int64_t *due_ms;   /* per topic: not before (a failed entry's retry time) */
    char **cursor;     /* per topic: where the pass goes on ("0" = from the start) */
    int *pass_left;    /* per topic: entries the pass left pending */
    int64_t *pass_min; /* per topic: the soonest retry among them */
    int64_t claim_idle_ms;
    int64_t next_claim_ms;
    char **claim_cursor;  /* per topic XAUTOCLAIM cursor */
    int64_t retention_ms; /* consumer_stream_retention; 0 = never trim */
    int64_t next_trim_ms;
    int trim_broken; /* XTRIM MINID refused (Redis < 6.2): logged once, given up */
    int batch;
    int down; /* for log-once-per-change */
} redis_consumer_t;

static void rc_close(outbox_consumer_t *c);

static outbox_err_t rc_open(outbox_consumer_t *c, char *errstr, size_t errstr_size)
{
    redis_consumer_t *r = calloc(1, sizeof(*r));
    if (!r)
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    c->state = r;
    outbox_err_t err = outbox__redis_url_parse(c->url, &r->addr, errstr, errstr_size);
    if (err) {
        rc_close(c);
        return err;
    }
    if (!r->addr.password[0])
        snprintf(r->addr.password, sizeof(r->addr.password), "%s",
                 outbox__conf_str(c->conf, "redis_password"));
    r->claim_idle_ms = outbox__conf_ms(c->conf, "consumer_claim_idle");
    r->batch = (int)outbox__conf_int(c->conf, "consumer_batch");
    r->retention_ms = outbox__conf_ms(c->conf, "consumer_stream_retention");
    r->backlog = calloc((size_t)c->ntopics, sizeof(int));
    r->due_ms = calloc((size_t)c->ntopics, sizeof(int64_t));
    r->cursor = calloc((size_t)c->ntopics, sizeof(char *));
    r->pass_left = calloc((size_t)c->ntopics, sizeof(int));
    r->pass_min = calloc((size_t)c->ntopics, sizeof(int64_t));
    r->claim_cursor = calloc((size_t)c->ntopics, sizeof(char *));
    if (!r->backlog || !r->claim_cursor || !r->due_ms || !r->cursor || !r->pass_left ||
        !r->pass_min) {
        rc_close(c);
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    }
    for (int i = 0; i < c->ntopics; i++) {
        r->backlog[i] = 1; /* entries delivered to this name before a restart */
        r->pass_min[i] = INT64_MAX;
        if (!(r->claim_cursor[i] = strdup("0-0")) || !(r->cursor[i] = strdup("0"))) {
            rc_close(c);
            return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
        }
    }
    return OUTBOX_OK;
}

static void drop(redis_consumer_t *r)
{
    if (r->ctx)
        redisFree(r->ctx);
    r->ctx = NULL;
    r->ready = 0;
}

/* c->errstr says what failed: logs it once per outage, drops the connection
 * (re-opened by the next poll). */
static outbox_err_t broker_down(outbox_consumer_t *c)
{
    redis_consumer_t *r = c->state;
    if (!r->down)
        outbox__log(OUTBOX_LOG_ERROR, "consumer", "broker_down", c->errstr, "consumer", c->name,
                    NULL);
    r->down = 1;
    drop(r);
    return OUTBOX_ERR_BROKER;
}

/* Records "<what> at host:port: detail", then as broker_down(). */
static outbox_err_t fail(outbox_consumer_t *c, const char *what, const char *detail)
{
    redis_consumer_t *r = c->state;
    snprintf(c->errstr, sizeof(c->errstr), "%s at %s:%d%s%s", what, r->addr.host, r->addr.port,
             detail && *detail ? ": " : "", detail ? detail : "");
    return broker_down(c);
}

static redisReply *cmd_argv(redis_consumer_t *r, int argc, const char **argv)
{
    return redisCommandArgv(r->ctx, argc, argv, NULL);
}

/* Topic i's pending entries are to be read from the start, not before due. */
static void start_pass(redis_consumer_t *r, int i, int64_t due)
{
    if (r->backlog[i] && r->due_ms[i] <= due && !strcmp(r->cursor[i], "0"))
        return; /* a pass from the start is already planned, sooner */
    char *z = strdup("0");
    if (z) {
        free(r->cursor[i]);
        r->cursor[i] = z;
    }
    r->backlog[i] = 1;
    r->due_ms[i] = due;
    r->pass_left[i] = 0;
    r->pass_min[i] = INT64_MAX;
}

static outbox_err_t ensure(outbox_consumer_t *c)
{
    redis_consumer_t *r = c->state;
    if (r->ctx && !r->ctx->err && r->ready)
        return OUTBOX_OK;
    drop(r);
    r->ctx = outbox__redis_connect(&r->addr, CONNECT_TIMEOUT_MS, c->errstr, sizeof(c->errstr));
    if (!r->ctx)
        return broker_down(c);
    redisReply *rep;
    if (r->addr.pubsub) {
        for (int i = 0; i < c->ntopics; i++) {
            const char *av[2] = {"SUBSCRIBE", c->topics[i]};
            if (redisAppendCommandArgv(r->ctx, 2, av, NULL) != REDIS_OK)
                return fail(c, "Redis SUBSCRIBE failed", r->ctx->errstr);
        }
        for (int i = 0; i < c->ntopics; i++) {
            rep = NULL;
            if (redisGetReply(r->ctx, (void **)&rep) != REDIS_OK || !rep)
                return fail(c, "Redis SUBSCRIBE failed", r->ctx->errstr);
            freeReplyObject(rep);
        }
    } else {
        for (int i = 0; i < c->ntopics; i++) {
            const char *av[6] = {"XGROUP", "CREATE", c->topics[i], c->group, "0", "MKSTREAM"};
            rep = cmd_argv(r, 6, av);
            if (!rep)
                return fail(c, "Redis XGROUP CREATE failed", r->ctx->errstr);
            int bad = rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "BUSYGROUP", 9) != 0;
            if (bad) {
                char why[256];
                snprintf(why, sizeof(why), "%s", rep->str);
                freeReplyObject(rep);
                return fail(c, "Redis XGROUP CREATE failed", why);
            }
            freeReplyObject(rep);
            start_pass(r, i, 0);
        }
    }
    r->ready = 1;
    if (r->down)
        outbox__log(OUTBOX_LOG_INFO, "consumer", "broker_up", "Redis reachable again", "consumer",
                    c->name, NULL);
    r->down = 0;
    return OUTBOX_OK;
}

static const char *field(const redisReply *fields, const char *name, size_t *len)
{
    if (!fields || fields->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply *k = fields->element[i], *v = fields->element[i + 1];
        if (k->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING &&
            !strcmp(k->str, name)) {
            *len = v->len;
            return v->str;
        }
    }
    return NULL;
}

int outbox__consumer_redis_entry(const redisReply *entry, const char **id, const char **body,
                                 size_t *len)
{
    *id = *body = NULL;
    *len = 0;
    if (entry->type != REDIS_REPLY_ARRAY || entry->elements < 2 ||
        entry->element[0]->type != REDIS_REPLY_STRING)
        return 0;
    *id = entry->element[0]->str;
    *body = field(entry->element[1], "event", len);
    return 1;
}

int outbox__consumer_redis_pubsub(const redisReply *rep, const char **channel, const char **body,
                                  size_t *len)
{
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 ||
        rep->element[0]->type != REDIS_REPLY_STRING || strcmp(rep->element[0]->str, "message") ||
        rep->element[1]->type != REDIS_REPLY_STRING || rep->element[2]->type != REDIS_REPLY_STRING)
        return 0;
    *channel = rep->element[1]->str;
    *body = rep->element[2]->str;
    *len = rep->element[2]->len;
    return 1;
}

/* XAUTOCLAIM ... JUSTID for every topic: claimed entries join this
 * consumer's pending list and are processed through the backlog read. */
static outbox_err_t autoclaim(outbox_consumer_t *c)
{
    redis_consumer_t *r = c->state;
    char idle[24], count[16];
    snprintf(idle, sizeof(idle), "%lld", (long long)r->claim_idle_ms);
    snprintf(count, sizeof(count), "%d", r->batch);
    for (int i = 0; i < c->ntopics; i++) {
        const char *av[9] = {"XAUTOCLAIM",       c->topics[i], c->group, c->name, idle,
                             r->claim_cursor[i], "COUNT",      count,    "JUSTID"};
        redisReply *rep = cmd_argv(r, 9, av);
        if (!rep)
            return fail(c, "Redis XAUTOCLAIM failed", r->ctx->errstr);
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements >= 2) {
            const redisReply *cur = rep->element[0], *ids = rep->element[1];
            if (cur->type == REDIS_REPLY_STRING) {
                char *nc = strdup(cur->str);
                if (nc) {
                    free(r->claim_cursor[i]);
                    r->claim_cursor[i] = nc;
                }
            }
            if (ids->type == REDIS_REPLY_ARRAY && ids->elements > 0) {
                char n[16];
                snprintf(n, sizeof(n), "%zu", ids->elements);
                outbox__log(OUTBOX_LOG_INFO, "consumer", "claimed",
                            "took over messages left pending by another consumer", "consumer",
                            c->name, "topic", c->topics[i], "count", n, NULL);
                start_pass(r, i, 0);
            }
        }
        freeReplyObject(rep);
    }
    return OUTBOX_OK;
}

/* A stream entry id "ms-seq" (or "ms") as two numbers; 0 when it is not one. */
static int parse_sid(const char *s, uint64_t *ms, uint64_t *seq)
{
    char *end;
    if (!s || !*s)
        return 0;
    *ms = strtoull(s, &end, 10);
    *seq = 0;
    if (*end == '-')
        *seq = strtoull(end + 1, &end, 10);
    return *end == '\0';
}

static const redisReply *map_get(const redisReply *m, const char *key)
{
    if (!m || m->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < m->elements; i += 2)
        if (m->element[i]->type == REDIS_REPLY_STRING && !strcmp(m->element[i]->str, key))
            return m->element[i + 1];
    return NULL;
}

/* Lowers (*ms, *seq) to the id s when s is older. */
static void lower_to(const char *s, uint64_t *ms, uint64_t *seq)
{
    uint64_t a, b;
    if (parse_sid(s, &a, &b) && (a < *ms || (a == *ms && b < *seq))) {
        *ms = a;
        *seq = b;
    }
}

/* Trims topic i to the entries some group still needs or that are younger
 * than the retention (see the top of the file). The bound is taken from
 * XINFO GROUPS before XPENDING: a group moving on in between only makes it
 * older (safer). Errors are not the consumer's business: they leave the
 * stream as it is (a refused MINID is logged once and trimming stops). */
static void trim_topic(outbox_consumer_t *c, int i)
{
    redis_consumer_t *r = c->state;
    const char *topic = c->topics[i];
    redisReply *t = redisCommand(r->ctx, "TIME");
    if (!t || t->type != REDIS_REPLY_ARRAY || t->elements < 1 ||
        t->element[0]->type != REDIS_REPLY_STRING) {
        if (t)
            freeReplyObject(t);
        return;
    }
    int64_t now_ms = strtoll(t->element[0]->str, NULL, 10) * 1000;
    freeReplyObject(t);
    if (now_ms <= r->retention_ms)
        return;
    uint64_t ms = (uint64_t)(now_ms - r->retention_ms), seq = 0;
    const char *av[4] = {"XINFO", "GROUPS", topic, NULL};
    redisReply *g = cmd_argv(r, 3, av);
    int ok = g && g->type == REDIS_REPLY_ARRAY && g->elements > 0;
    for (size_t k = 0; ok && k < g->elements; k++) {
        const redisReply *grp = g->element[k], *name = map_get(grp, "name"),
                         *last = map_get(grp, "last-delivered-id"), *pend = map_get(grp, "pending");
        if (!name || name->type != REDIS_REPLY_STRING || !last ||
            last->type != REDIS_REPLY_STRING || !pend || pend->type != REDIS_REPLY_INTEGER) {
            ok = 0;
            break;
        }
        /* "after the last delivered" is kept as the last delivered: one entry more */
        lower_to(last->str, &ms, &seq);
        if (pend->integer > 0) {
            const char *pv[3] = {"XPENDING", topic, name->str};
            redisReply *p = cmd_argv(r, 3, pv);
            if (p && p->type == REDIS_REPLY_ARRAY && p->elements >= 2 &&
                p->element[1]->type == REDIS_REPLY_STRING)
                lower_to(p->element[1]->str, &ms, &seq);
            else if (!p || p->type != REDIS_REPLY_ARRAY || p->elements < 2 ||
                     p->element[1]->type != REDIS_REPLY_NIL)
                ok = 0; /* nil: acknowledged meanwhile */
            if (p)
                freeReplyObject(p);
        }
    }
    if (g)
        freeReplyObject(g);
    if (!ok || (ms == 0 && seq == 0))
        return;
    char minid[48];
    snprintf(minid, sizeof(minid), "%llu-%llu", (unsigned long long)ms, (unsigned long long)seq);
    const char *xv[4] = {"XTRIM", topic, "MINID", minid};
    redisReply *x = cmd_argv(r, 4, xv);
    if (x && x->type == REDIS_REPLY_ERROR) {
        r->trim_broken = 1;
        outbox__log(OUTBOX_LOG_WARN, "consumer", "trim_unsupported",
                    "XTRIM MINID refused (Redis >= 6.2 needed): streams are not trimmed",
                    "consumer", c->name, "topic", topic, "error", x->str, NULL);
    }
    if (x)
        freeReplyObject(x);
}

/* Handles the entries of one stream reply in order, in one batch
 * transaction when the application gave a batch hook (see
 * outbox_consumer_set_batch()), then acknowledges the finished ones with
 * one XACK (after the batch's COMMIT). An entry the handler did not finish
 * (failed, or behind a failed entry of its key), or every entry of a batch
 * that did not commit, stays pending: *left counts them and *min_retry gets
 * the soonest time one of them may be tried again. OUTBOX_ERR_BROKER when
 * the XACK failed. */
static outbox_err_t handle_entries(outbox_consumer_t *c, int ti, const redisReply *entries,
                                   int redelivered, outbox_consumer_handler_fn fn, void *opaque,
                                   int *left, int64_t *min_retry)
{
    redis_consumer_t *r = c->state;
    const char **av = calloc(entries->elements + 3, sizeof(char *));
    if (!av) {
        snprintf(c->errstr, sizeof(c->errstr), "out of memory");
        return OUTBOX_ERR_NOMEM;
    }
    int nack = 0;
    int batch = outbox__batch_begin(c, (int)entries->elements);
    for (size_t e = 0; e < entries->elements; e++) {
        const char *sid, *body;
        size_t blen;
        if (!outbox__consumer_redis_entry(entries->element[e], &sid, &body, &blen))
            continue;
        outbox_err_t rc = OUTBOX_OK;
        int64_t retry_in = 1;
        if (!body) {
            /* Deleted (trimmed) while pending, or not written by an outbox sink. */
            outbox__log(OUTBOX_LOG_WARN, "consumer", "bad_message",
                        "stream entry without an event field: dropped", "consumer", c->name,
                        "topic", c->topics[ti], "entry", sid, NULL);
        } else {
            rc = outbox__consumer_dispatch(c, c->topics[ti], body, blen, NULL, redelivered, fn,
                                           opaque, &retry_in);
        }
        if (rc != OUTBOX_OK) {
            (*left)++;
            int64_t at = outbox__now_ms() + retry_in;
            if (at < *min_retry)
                *min_retry = at;
            snprintf(c->errstr, sizeof(c->errstr), "%s entry %s left pending for a retry (%s)",
                     c->topics[ti], sid,
                     rc == OUTBOX_ERR_TIMEOUT ? "behind a failed entry of its key"
                                              : outbox_err_str(rc));
            continue;
        }
        av[3 + nack++] = sid;
    }
    if (batch && outbox__batch_end(c) != OUTBOX_OK) {
        /* Not committed, or not known to be: acknowledge nothing. */
        *left += nack;
        int64_t at = outbox__now_ms() + BATCH_REDELIVER_MS;
        if (nack && at < *min_retry)
            *min_retry = at;
        if (nack)
            snprintf(c->errstr, sizeof(c->errstr),
                     "%s: a batch of %d entries did not commit: left pending for redelivery",
                     c->topics[ti], nack);
        nack = 0;
    }
    outbox_err_t result = OUTBOX_OK;
    if (nack) {
        av[0] = "XACK";
        av[1] = c->topics[ti];
        av[2] = c->group;
        redisReply *rep = cmd_argv(r, 3 + nack, av);
        int ok = rep && rep->type == REDIS_REPLY_INTEGER;
        if (rep)
            freeReplyObject(rep);
        if (!ok)
            result = fail(c, "Redis XACK failed", r->ctx ? r->ctx->errstr : "");
    }
    free(av);
    return result;
}

/* Sends XREADGROUP GROUP g name COUNT n [BLOCK ms] STREAMS t... id...: with
 * a backlog, the own pending entries (after the pass cursor) of the topics
 * whose pass is due, without blocking; otherwise new entries (">") of every
 * topic, blocking up to timeout_ms. tix[0..*nt) gets the topic index of each stream asked.
 * Returns the reply (caller frees) or NULL with c->errstr set. */
static redisReply *xreadgroup(outbox_consumer_t *c, int timeout_ms, int any_backlog, int *tix,
                              int *nt)
{
    redis_consumer_t *r = c->state;
    const char **av = calloc((size_t)(10 + 2 * c->ntopics), sizeof(char *));
    if (!av) {
        snprintf(c->errstr, sizeof(c->errstr), "out of memory");
        return NULL;
    }
    char count[16], block[24];
    /* A batch transaction holds a savepoint per message: past 64 a
     * PostgreSQL backend's subtransactions overflow its shared cache and
     * every snapshot in the server then reads pg_subtrans (measured: the
     * inventory consumer fell from 1,386 to 81 orders/s under load, waiting
     * on SubtransSLRU). Reads stay under that while batches are on, unless
     * the application says its batches need no savepoint per message
     * (outbox_consumer_set_batch_max()). */
    int n = r->batch, most = c->batch.max > 0 ? c->batch.max : OUTBOX__BATCH_TX_MAX;
    if (c->batch.fn && c->batch.enabled && n > most)
        n = most;
    snprintf(count, sizeof(count), "%d", n);
    snprintf(block, sizeof(block), "%d", timeout_ms > 0 ? timeout_ms : 1);
    int ac = 0;
    av[ac++] = "XREADGROUP";
    av[ac++] = "GROUP";
    av[ac++] = c->group;
    av[ac++] = c->name;
    av[ac++] = "COUNT";
    av[ac++] = count;
    if (!any_backlog) {
        av[ac++] = "BLOCK";
        av[ac++] = block;
    }
    av[ac++] = "STREAMS";
    *nt = 0;
    int64_t now = outbox__now_ms();
    for (int i = 0; i < c->ntopics; i++)
        if (!any_backlog || (r->backlog[i] && r->due_ms[i] <= now)) {
            tix[(*nt)++] = i;
            av[ac++] = c->topics[i];
        }
    for (int k = 0; k < *nt; k++)
        av[ac++] = any_backlog ? r->cursor[tix[k]] : ">";
    int64_t wait = (int64_t)timeout_ms + CONNECT_TIMEOUT_MS;
    struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)((wait % 1000) * 1000)};
    redisSetTimeout(r->ctx, tv);
    redisReply *rep = cmd_argv(r, ac, av);
    free(av);
    if (!rep) {
        fail(c, "Redis XREADGROUP failed", r->ctx->errstr);
        return NULL;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        char why[256];
        snprintf(why, sizeof(why), "%s", rep->str);
        freeReplyObject(rep);
        fail(c, "Redis XREADGROUP failed", why); /* e.g. NOGROUP: stream deleted */
        return NULL;
    }
    return rep;
}

/* Ends topic i's pass over its pending entries: another one is due at the
 * soonest retry of the entries it left, or none if it left none. */
static void end_pass(redis_consumer_t *r, int i)
{
    int left = r->pass_left[i];
    int64_t at = r->pass_min[i];
    r->backlog[i] = 0;
    if (left)
        start_pass(r, i, at);
}

/* Handles the streams of an XREADGROUP reply in order. A backlog read
 * moves the pass cursor on, and ends the pass when it returned less than a
 * full batch; a read of new entries plans a pass for the entries it left. */
static outbox_err_t handle_reply(outbox_consumer_t *c, const redisReply *rep, const int *tix,
                                 int nt, int any_backlog, outbox_consumer_handler_fn fn,
                                 void *opaque)
{
    redis_consumer_t *r = c->state;
    outbox_err_t result = OUTBOX_OK;
    int *seen = calloc((size_t)(nt > 0 ? nt : 1), sizeof(int));
    if (!seen)
        return OUTBOX_ERR_NOMEM;
    for (size_t s = 0; rep->type == REDIS_REPLY_ARRAY && s < rep->elements && !result; s++) {
        const redisReply *st = rep->element[s];
        if (st->type != REDIS_REPLY_ARRAY || st->elements < 2 ||
            st->element[0]->type != REDIS_REPLY_STRING)
            continue;
        int ti = -1;
        for (int k = 0; k < nt; k++)
            if (!strcmp(c->topics[tix[k]], st->element[0]->str)) {
                ti = tix[k];
                seen[k] = 1;
            }
        if (ti < 0)
            continue;
        const redisReply *entries = st->element[1];
        if (entries->type != REDIS_REPLY_ARRAY)
            continue;
        int left = 0;
        int64_t min_retry = INT64_MAX;
        result = handle_entries(c, ti, entries, any_backlog, fn, opaque, &left, &min_retry);
        if (result)
            break;
        if (!any_backlog) {
            if (left)
                start_pass(r, ti, min_retry);
            continue;
        }
        r->pass_left[ti] += left;
        if (min_retry < r->pass_min[ti])
            r->pass_min[ti] = min_retry;
        const redisReply *last = entries->elements ? entries->element[entries->elements - 1] : NULL;
        if ((int)entries->elements >= r->batch && last && last->type == REDIS_REPLY_ARRAY &&
            last->elements >= 1 && last->element[0]->type == REDIS_REPLY_STRING) {
            char *cur = strdup(last->element[0]->str); /* more pending: go on from here */
            if (cur) {
                free(r->cursor[ti]);
                r->cursor[ti] = cur;
            }
        } else {
            end_pass(r, ti);
        }
    }
    for (int k = 0; any_backlog && !result && k < nt; k++)
        if (!seen[k]) /* nothing pending after the cursor */
            end_pass(r, tix[k]);
    free(seen);
    return result;
}

static outbox_err_t poll_streams(outbox_consumer_t *c, int timeout_ms,
                                 outbox_consumer_handler_fn fn, void *opaque)
{
    redis_consumer_t *r = c->state;
    int64_t now = outbox__now_ms();
    if (now >= r->next_claim_ms) {
        outbox_err_t e = autoclaim(c);
        if (e)
            return e;
        r->next_claim_ms = now + (r->claim_idle_ms / 2 > 0 ? r->claim_idle_ms / 2 : 1);
    }
    if (r->retention_ms > 0 && !r->trim_broken && now >= r->next_trim_ms) {
        for (int i = 0; i < c->ntopics && r->ctx && !r->ctx->err; i++)
            trim_topic(c, i);
        if (!r->ctx || r->ctx->err)
            return fail(c, "Redis connection lost while trimming", r->ctx ? r->ctx->errstr : "");
        int64_t every = r->retention_ms / 10;
        r->next_trim_ms = now + (every < 1000 ? 1000 : every > 60000 ? 60000 : every);
    }
    int any_backlog = 0;
    for (int i = 0; i < c->ntopics; i++)
        any_backlog |= r->backlog[i] && r->due_ms[i] <= now;
    int *tix = calloc((size_t)c->ntopics, sizeof(int));
    if (!tix) {
        snprintf(c->errstr, sizeof(c->errstr), "out of memory");
        return OUTBOX_ERR_NOMEM;
    }
    int nt = 0;
    redisReply *rep = xreadgroup(c, timeout_ms, any_backlog, tix, &nt);
    if (!rep) {
        free(tix);
        return r->ctx ? OUTBOX_ERR_NOMEM : OUTBOX_ERR_BROKER;
    }
    outbox_err_t result = handle_reply(c, rep, tix, nt, any_backlog, fn, opaque);
    freeReplyObject(rep);
    free(tix);
    return result;
}

static outbox_err_t poll_pubsub(outbox_consumer_t *c, int timeout_ms, outbox_consumer_handler_fn fn,
                                void *opaque)
{
    redis_consumer_t *r = c->state;
    int64_t deadline = outbox__now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        void *reply = NULL;
        if (redisGetReplyFromReader(r->ctx, &reply) != REDIS_OK)
            return fail(c, "Redis protocol error", r->ctx->errstr);
        if (!reply) {
            int64_t left = deadline - outbox__now_ms();
            if (left <= 0)
                return OUTBOX_OK;
            struct pollfd pfd = {.fd = r->ctx->fd, .events = POLLIN};
            int pr = poll(&pfd, 1, (int)left);
            if (pr < 0 && errno != EINTR)
                return fail(c, "poll on the Redis connection failed", strerror(errno));
            if (pr <= 0)
                return OUTBOX_OK;
            if (redisBufferRead(r->ctx) != REDIS_OK)
                return fail(c, "Redis connection lost", r->ctx->errstr);
            continue;
        }
        redisReply *rep = reply;
        const char *channel, *body;
        size_t blen;
        if (outbox__consumer_redis_pubsub(rep, &channel, &body, &blen)) {
            outbox_err_t rc =
                outbox__consumer_dispatch(c, channel, body, blen, NULL, 0, fn, opaque, NULL);
            if (rc != OUTBOX_OK)
                outbox__log(OUTBOX_LOG_WARN, "consumer", "pubsub_lost",
                            "handler failed on a Pub/Sub message: Pub/Sub cannot redeliver it",
                            "consumer", c->name, NULL);
        }
        freeReplyObject(rep);
    }
}

static outbox_err_t rc_poll(outbox_consumer_t *c, int timeout_ms, outbox_consumer_handler_fn fn,
                            void *opaque)
{
    redis_consumer_t *r = c->state;
    outbox_err_t err = ensure(c);
    if (err) {
        outbox__sleep_ms(timeout_ms > 0 && timeout_ms < 1000 ? timeout_ms : 1000, NULL);
        return err;
    }
    return r->addr.pubsub ? poll_pubsub(c, timeout_ms, fn, opaque)
                          : poll_streams(c, timeout_ms, fn, opaque);
}

static void rc_close(outbox_consumer_t *c)
{
    redis_consumer_t *r = c->state;
    if (!r)
        return;
    drop(r);
    for (int i = 0; r->claim_cursor && i < c->ntopics; i++)
        free(r->claim_cursor[i]);
    for (int i = 0; r->cursor && i < c->ntopics; i++)
        free(r->cursor[i]);
    free(r->claim_cursor);
    free(r->cursor);
    free(r->due_ms);
    free(r->pass_left);
    free(r->pass_min);
    free(r->backlog);
    free(r);
    c->state = NULL;
}

static const char *const redis_schemes[] = {"redis", "redis+pubsub", "rediss", "rediss+pubsub",
                                            NULL};

const outbox_consumer_ops_t outbox__consumer_redis_ops = {
    .name = "redis",
    .schemes = redis_schemes,
    .open = rc_open,
    .poll = rc_poll,
    .close = rc_close,
};
