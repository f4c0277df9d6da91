/* Redis sink (hiredis): Streams by default, Pub/Sub with redis+pubsub://.
 *
 * redis://[:password@]host[:port][/db]          XADD <topic> * id <uuid> type <type>
 *                                               key <key> event <CloudEvents JSON>
 * redis+pubsub://[:password@]host[:port][/db]   PUBLISH <topic> <CloudEvents JSON>
 *
 * A call is pipelined: every command is written (every FLUSH_BYTES of them
 * as they are formatted), then every reply read.
 * XADD's reply is Redis's confirmation (the entry is in the stream; with
 * appendonly it is as durable as the server is configured to make it). A
 * command Redis refuses (an error reply: WRONGTYPE, OOM, ...) fails its
 * event alone; a lost connection, or replies missing at the call's deadline
 * (sink->deadline_ms, at most publish_timeout), fail the call
 * (OUTBOX_ERR_BROKER: nothing counts, the relay probes). With no time left
 * nothing is sent (OUTBOX_ERR_TIMEOUT, not sent). The connection (AUTH,
 * SELECT: broker/redis.c) is opened lazily, so a relay starts while Redis is
 * down. See docs/sinks/redis.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "broker/redis.h"
#include "core/buf.h"
#include "core/conf.h"
#include "core/log.h"
#include "core/util.h"
#include "sink/sink.h"

typedef struct redis_sink_s {
    outbox__redis_url_t addr;
    long long maxlen;
    redisContext *ctx;
    outbox__buf_t out; /* commands in RESP not yet handed to hiredis (< ~2 x FLUSH_BYTES) */
} redis_sink_t;

/* A call's commands go to the socket every FLUSH_BYTES of RESP, not all at
 * the end. Building the whole call first held its bytes twice (our buffer,
 * then hiredis's output buffer) on top of the batch's envelopes: a round of
 * 333 events of the footprint bench was 256 KB + 360 KB per worker, a round
 * of 2,000 distinct keys ~1.4 MB + 1.4 MB. Redis starts on the first
 * commands while the rest are formatted; writing before reading cannot
 * deadlock, as Redis queues its replies (a few bytes each) for us. */
#define FLUSH_BYTES (64 * 1024)

/* Appends one RESP bulk string ($len CRLF bytes CRLF). */
static void resp_bulk(outbox__buf_t *b, const char *s, size_t len)
{
    char *p = outbox__buf_reserve(b, len + 24);
    if (!p)
        return;
    char digits[20];
    int k = 0;
    size_t u = len;
    do
        digits[k++] = (char)('0' + u % 10);
    while ((u /= 10) != 0);
    char *q = p;
    *q++ = '$';
    while (k)
        *q++ = digits[--k];
    *q++ = '\r';
    *q++ = '\n';
    memcpy(q, s, len);
    q += len;
    *q++ = '\r';
    *q++ = '\n';
    b->len += (size_t)(q - p);
}

static outbox_err_t redis_open(outbox_sink_t *sink, char *errstr, size_t errstr_size)
{
    redis_sink_t *r = calloc(1, sizeof(*r));
    if (!r)
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    outbox_err_t err = outbox__redis_url_parse(sink->url, &r->addr, errstr, errstr_size);
    if (err) {
        free(r);
        return err;
    }
    if (!r->addr.password[0])
        snprintf(r->addr.password, sizeof(r->addr.password), "%s",
                 outbox__conf_str(sink->conf, "redis_password"));
    r->maxlen = outbox__conf_int(sink->conf, "redis_stream_maxlen");
    sink->state = r;
    return OUTBOX_OK;
}

static void drop(redis_sink_t *r)
{
    if (r->ctx)
        redisFree(r->ctx);
    r->ctx = NULL;
}

static struct timeval ms_tv(int64_t ms)
{
    if (ms < 1)
        ms = 1;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    return tv;
}

/* Connects (AUTH, SELECT) within timeout_ms unless connected. */
static outbox_err_t ensure(outbox_sink_t *sink, int64_t timeout_ms, char *errstr,
                           size_t errstr_size)
{
    redis_sink_t *r = sink->state;
    if (r->ctx && !r->ctx->err)
        return OUTBOX_OK;
    drop(r);
    r->ctx = outbox__redis_connect(&r->addr, timeout_ms > 0 ? timeout_ms : 1, errstr, errstr_size);
    return r->ctx ? OUTBOX_OK : OUTBOX_ERR_BROKER;
}

/* Hands r->out to hiredis and writes it all to the socket (the timeout set on
 * the context bounds each write). Returns 0, or -1: the connection is broken
 * (r->ctx->errstr says why) or r->out is (out of memory). */
static int flush_out(redis_sink_t *r)
{
    if (r->out.broken)
        return -1;
    if (r->out.len && redisAppendFormattedCommand(r->ctx, r->out.p, r->out.len) != REDIS_OK)
        return -1;
    if (r->out.cap > 4 * FLUSH_BYTES)
        outbox__buf_free(&r->out); /* grown by one large event: do not keep it */
    else
        outbox__buf_reset(&r->out);
    int done = 0;
    while (!done)
        if (redisBufferWrite(r->ctx, &done) != REDIS_OK)
            return -1;
    return 0;
}

/* Sets the context's timeout to what is left of the call, at most every
 * 10 ms (*armed_at: when it was last set; a setsockopt per event would be a
 * syscall per event, and the call may overrun its deadline by that much).
 * -1 when nothing is left. */
static int rearm(redis_sink_t *r, outbox_sink_t *sink, int64_t *armed_at)
{
    int64_t now = outbox__now_ms(), left = outbox__sink_deadline(sink) - now;
    if (left <= 0)
        return -1;
    if (now - *armed_at >= 10) {
        redisSetTimeout(r->ctx, ms_tv(left));
        *armed_at = now;
    }
    return 0;
}

static outbox_err_t redis_publish(outbox_sink_t *sink, outbox_msg_t *msgs, size_t n,
                                  outbox_pub_result_t *res)
{
    redis_sink_t *r = sink->state;
    char errbuf[256];
    int64_t left = outbox__sink_deadline(sink) - outbox__now_ms();
    if (left <= 0) {
        outbox__sink_out_of_time(res, n);
        return OUTBOX_OK;
    }
    if (ensure(sink, left, errbuf, sizeof(errbuf)) != OUTBOX_OK) {
        for (size_t i = 0; i < n; i++) {
            res[i].err = OUTBOX_ERR_BROKER;
            snprintf(res[i].errstr, sizeof(res[i].errstr), "%s", errbuf);
        }
        return OUTBOX_ERR_BROKER;
    }
    /* Every reply must be in before the deadline. */
    redisSetTimeout(r->ctx, ms_tv(outbox__sink_deadline(sink) - outbox__now_ms()));
    char maxlen[24];
    snprintf(maxlen, sizeof(maxlen), "%lld", r->maxlen);
    /* Every command written once, in RESP, into a buffer handed to hiredis as
     * is (no per-argument formatting, one copy), every FLUSH_BYTES. */
    outbox__buf_reset(&r->out);
    int64_t armed_at = outbox__now_ms();
    int flushed = 0; /* some commands already went out */
    for (size_t i = 0; i < n; i++) {
        outbox_msg_t *m = &msgs[i];
        const char *argv[14];
        size_t lens[14];
        int argc = 0;
#define ARG(s, l) (argv[argc] = (s), lens[argc] = (l), argc++)
        if (r->addr.pubsub) {
            ARG("PUBLISH", 7);
            ARG(m->topic, strlen(m->topic));
            ARG(m->envelope, m->envelope_len);
        } else {
            ARG("XADD", 4);
            ARG(m->topic, strlen(m->topic));
            if (r->maxlen > 0) {
                ARG("MAXLEN", 6);
                ARG("~", 1);
                ARG(maxlen, strlen(maxlen));
            }
            ARG("*", 1);
            ARG("id", 2);
            ARG(m->id, strlen(m->id));
            ARG("type", 4);
            ARG(m->type, strlen(m->type));
            ARG("key", 3);
            ARG(m->key, strlen(m->key));
            ARG("event", 5);
            ARG(m->envelope, m->envelope_len);
        }
#undef ARG
        char head[24];
        int hl = snprintf(head, sizeof(head), "*%d\r\n", argc);
        outbox__buf_add(&r->out, head, (size_t)hl);
        for (int a = 0; a < argc; a++)
            resp_bulk(&r->out, argv[a], lens[a]);
        if (r->out.broken && !flushed) {
            outbox__buf_free(&r->out);
            for (size_t j = 0; j < n; j++) {
                res[j].err = OUTBOX_ERR_BROKER;
                res[j].not_sent = 1;
                snprintf(res[j].errstr, sizeof(res[j].errstr), "out of memory for %zu commands", n);
            }
            return OUTBOX_OK;
        }
        if (r->out.len >= FLUSH_BYTES || i == n - 1 || r->out.broken) {
            /* Each write gets at most what is left of the call. */
            if (rearm(r, sink, &armed_at) || flush_out(r))
                goto broken;
            flushed = 1;
        }
    }
    for (size_t i = 0; i < n; i++) {
        /* hiredis applies the timeout to each read: re-armed with what is
         * left, so a broker answering slowly cannot stretch the call past
         * the deadline one reply at a time. */
        redisReply *rep = NULL;
        /* A reply already read is taken without a look at the clock (a
         * clock_gettime per event was 4% of the relay's CPU); the clock is
         * read, and the timeout re-armed, only before a read that may wait. */
        if (redisGetReplyFromReader(r->ctx, (void **)&rep) != REDIS_OK)
            goto broken;
        if (!rep &&
            (rearm(r, sink, &armed_at) || redisGetReply(r->ctx, (void **)&rep) != REDIS_OK || !rep))
            goto broken;
        if (rep->type == REDIS_REPLY_ERROR) {
            res[i].err = OUTBOX_ERR_BROKER;
            snprintf(res[i].errstr, sizeof(res[i].errstr), "Redis: %s", rep->str);
        } else {
            res[i].err = OUTBOX_OK;
        }
        freeReplyObject(rep);
    }
    return OUTBOX_OK;

broken:
    snprintf(errbuf, sizeof(errbuf), "Redis connection to %s:%d lost: %s", r->addr.host,
             r->addr.port,
             r->ctx && r->ctx->errstr[0] ? r->ctx->errstr
             : r->out.broken             ? "out of memory"
                                         : "no reply");
    outbox__buf_reset(&r->out);
    for (size_t i = 0; i < n; i++) {
        res[i].err = OUTBOX_ERR_BROKER;
        snprintf(res[i].errstr, sizeof(res[i].errstr), "%s", errbuf);
    }
    drop(r);
    return OUTBOX_ERR_BROKER;
}

static outbox_err_t redis_ping(outbox_sink_t *sink, char *errstr, size_t errstr_size)
{
    redis_sink_t *r = sink->state;
    outbox_err_t err = ensure(sink, sink->timeout_ms, errstr, errstr_size);
    if (err)
        return err;
    redisSetTimeout(r->ctx, ms_tv(sink->timeout_ms));
    redisReply *rep = redisCommand(r->ctx, "PING");
    int ok = rep && rep->type != REDIS_REPLY_ERROR;
    if (!ok)
        outbox__err(OUTBOX_ERR_BROKER, errstr, errstr_size, "Redis PING failed: %s",
                    rep ? rep->str : r->ctx->errstr);
    if (rep)
        freeReplyObject(rep);
    if (!ok)
        drop(r);
    return ok ? OUTBOX_OK : OUTBOX_ERR_BROKER;
}

static void redis_close(outbox_sink_t *sink)
{
    redis_sink_t *r = sink->state;
    if (!r)
        return;
    drop(r);
    outbox__buf_free(&r->out);
    free(r);
    sink->state = NULL;
}

static const char *const redis_schemes[] = {"redis", "redis+pubsub", "rediss", "rediss+pubsub",
                                            NULL};

const outbox_sink_ops_t outbox__sink_redis_ops = {
    .name = "redis",
    .schemes = redis_schemes,
    .open = redis_open,
    .publish = redis_publish,
    .ping = redis_ping,
    .close = redis_close,
};
