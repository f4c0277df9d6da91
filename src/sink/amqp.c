/* AMQP 0-9-1 sink (RabbitMQ) on rabbitmq-c.
 *
 * amqp://user:pass@host:port/vhost    (amqps:// for TLS; see amqp_ca_file)
 *
 * Each topic is a durable topic exchange (declared once per connection),
 * the routing key is the event type. Messages are persistent (delivery
 * mode 2) with message-id = event id, type = event type, timestamp = event
 * time, the traceparent as a header and the event's own headers
 * (core/headers.h: a string value as it is, any other JSON value as its
 * compact JSON text). content_mode=structured sends the
 * CloudEvents document (content-type application/cloudevents+json);
 * content_mode=binary sends the data as body (application/json) and the
 * CloudEvents attributes as ce_* headers.
 *
 * A call is pipelined on a channel in confirm mode: every message is
 * published, then the broker's basic.ack/basic.nack for each delivery tag
 * is awaited until the call's deadline (sink->deadline_ms, at most
 * publish_timeout). Each message has its own result: the engine hands a
 * call at most one event per key and applies the per-key rule itself. basic.ack is RabbitMQ's
 * promise that the message is routed to and persisted in every queue bound for it (or that no queue
 * was bound: see amqp_mandatory). The connection is opened lazily, so a relay starts while the
 * broker is down; any connection error drops it, the call returns OUTBOX_ERR_BROKER and the next
 * call or ping() reconnects. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/conf.h"
#include "core/headers.h"
#include "core/log.h"
#include "core/util.h"
#include "broker/amqp.h"
#include "sink/sink.h"

#define CT_STRUCTURED "application/cloudevents+json"
#define CT_JSON "application/json"

typedef struct amqp_sink_s {
    outbox__amqp_url_t url;
    char ca_file[1024];
    int binary;    /* content_mode=binary */
    int mandatory; /* amqp_mandatory */
    amqp_connection_state_t conn;
    uint64_t next_tag; /* delivery tag of the next publish on the channel */
    char **declared;   /* exchanges declared on this connection */
    size_t ndeclared, cap_declared;
} amqp_sink_t;

/* Per-message state within one publish call. */
enum { PS_UNSENT = 0, PS_WAIT, PS_ACKED, PS_FAILED };

static outbox_err_t amqp_open(outbox_sink_t *sink, char *errstr, size_t errstr_size)
{
    amqp_sink_t *a = calloc(1, sizeof(*a));
    if (!a)
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    outbox_err_t err = outbox__amqp_url_parse(&a->url, sink->url, errstr, errstr_size);
    if (err) {
        free(a);
        return err;
    }
    a->binary = !strcmp(outbox__conf_str(sink->conf, "content_mode"), "binary");
    a->mandatory = outbox__conf_bool(sink->conf, "amqp_mandatory");
    snprintf(a->ca_file, sizeof(a->ca_file), "%s", outbox__conf_str(sink->conf, "amqp_ca_file"));
    sink->state = a;
    return OUTBOX_OK;
}

static void forget_declared(amqp_sink_t *a)
{
    for (size_t i = 0; i < a->ndeclared; i++)
        free(a->declared[i]);
    a->ndeclared = 0;
}

static void drop(amqp_sink_t *a)
{
    outbox__amqp_drop(&a->conn);
    forget_declared(a);
}

/* Connects and puts channel 1 in confirm mode, unless already connected;
 * each step bounded by timeout_ms. */
static outbox_err_t ensure(outbox_sink_t *sink, int64_t timeout_ms, char *errstr,
                           size_t errstr_size)
{
    amqp_sink_t *a = sink->state;
    if (a->conn)
        return OUTBOX_OK;
    forget_declared(a);
    outbox_err_t err =
        outbox__amqp_connect(&a->url, a->ca_file, timeout_ms, 0, &a->conn, errstr, errstr_size);
    if (err)
        return err;
    amqp_confirm_select(a->conn, OUTBOX__AMQP_CHANNEL);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(a->conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        char why[256];
        outbox__amqp_reply_str(r, why, sizeof(why));
        drop(a);
        return outbox__err(OUTBOX_ERR_BROKER, errstr, errstr_size,
                           "AMQP confirm.select on %s failed: %s", a->url.shown, why);
    }
    a->next_tag = 1;
    outbox__log(OUTBOX_LOG_INFO, "sink", "amqp_connected", "connected to the AMQP broker", "worker",
                sink->name, "url", a->url.shown, NULL);
    return OUTBOX_OK;
}

/*
 * Reads whatever the broker sent while we were idle, without blocking: a
 * connection.close (broker shutting down) or a dead socket is found here
 * rather than by a failed publish. Returns 0 if the connection is still
 * good, -1 if it was dropped.
 */
static int check_idle(amqp_sink_t *a)
{
    if (!a->conn)
        return -1;
    for (;;) {
        amqp_frame_t f;
        struct timeval zero = {0, 0};
        int st = amqp_simple_wait_frame_noblock(a->conn, &f, &zero);
        if (st == AMQP_STATUS_TIMEOUT)
            return 0;
        if (st != AMQP_STATUS_OK || (f.frame_type == AMQP_FRAME_METHOD &&
                                     (f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD ||
                                      f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD))) {
            drop(a);
            return -1;
        }
        amqp_maybe_release_buffers(a->conn);
    }
}

static int is_declared(const amqp_sink_t *a, const char *exchange)
{
    for (size_t i = 0; i < a->ndeclared; i++)
        if (!strcmp(a->declared[i], exchange))
            return 1;
    return 0;
}

/*
 * Declares exchange as a durable topic exchange (once per connection).
 * OUTBOX_OK; OUTBOX_ERR_REJECTED when the broker refused this exchange
 * (channel error: bad name, exists with another type, access refused; the
 * channel is re-opened); OUTBOX_ERR_BROKER when the connection failed (it
 * has been dropped). errstr says why.
 */
static outbox_err_t declare(outbox_sink_t *sink, const char *exchange, char *errstr,
                            size_t errstr_size)
{
    amqp_sink_t *a = sink->state;
    if (is_declared(a, exchange))
        return OUTBOX_OK;
    amqp_exchange_declare(a->conn, OUTBOX__AMQP_CHANNEL, amqp_cstring_bytes(exchange),
                          amqp_cstring_bytes("topic"), 0, 1, 0, 0, amqp_empty_table);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(a->conn);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        if (a->ndeclared == a->cap_declared) {
            size_t cap = a->cap_declared ? 2 * a->cap_declared : 8;
            char **d = realloc(a->declared, cap * sizeof(*d));
            if (!d)
                return OUTBOX_OK; /* not cached: declared again next time */
            a->declared = d;
            a->cap_declared = cap;
        }
        if ((a->declared[a->ndeclared] = strdup(exchange)))
            a->ndeclared++;
        return OUTBOX_OK;
    }
    char why[256];
    outbox__amqp_reply_str(r, why, sizeof(why));
    outbox__err(OUTBOX_ERR_BROKER, errstr, errstr_size,
                "AMQP exchange.declare \"%s\" on %s failed: %s", exchange, a->url.shown, why);
    if (!outbox__amqp_is_channel_error(r)) {
        drop(a);
        return OUTBOX_ERR_BROKER;
    }
    /* The connection survives a channel error: re-open the channel. */
    outbox__amqp_channel_close_ok(a->conn, OUTBOX__AMQP_CHANNEL);
    amqp_channel_open(a->conn, OUTBOX__AMQP_CHANNEL);
    r = amqp_get_rpc_reply(a->conn);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        amqp_confirm_select(a->conn, OUTBOX__AMQP_CHANNEL);
        r = amqp_get_rpc_reply(a->conn);
    }
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        drop(a);
        return OUTBOX_ERR_BROKER;
    }
    a->next_tag = 1;
    return OUTBOX_ERR_REJECTED;
}

/* Seconds since the epoch of an RFC 3339 UTC time ("2026-11-22T10:00:00.123Z"), 0 if unparsable. */
static uint64_t epoch_seconds(const char *rfc3339)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (!rfc3339 || sscanf(rfc3339, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                           &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    return t < 0 ? 0 : (uint64_t)t;
}

/* The headers table of one message. The attributes' strings are borrowed
 * from the message; the event's own headers are copies in owned[]. */
typedef struct msg_headers_s {
    amqp_table_entry_t *e;
    int n, cap;
    char **owned; /* names and values of the event's own headers */
    int nowned, cap_owned;
    int nomem;
} msg_headers_t;

static void headers_term(msg_headers_t *h)
{
    for (int i = 0; i < h->nowned; i++)
        free(h->owned[i]);
    free(h->owned);
    free(h->e);
    memset(h, 0, sizeof(*h));
}

/* Adds key: val (len bytes) unless key is there already: the first one wins,
 * so ce_* and traceparent beat the event's own headers. */
static void header_addn(msg_headers_t *h, const char *key, const char *val, size_t len)
{
    if (!val || h->nomem)
        return;
    for (int i = 0; i < h->n; i++)
        if (h->e[i].key.len == strlen(key) && !memcmp(h->e[i].key.bytes, key, h->e[i].key.len))
            return;
    if (h->n == h->cap) {
        int cap = h->cap ? 2 * h->cap : 16;
        amqp_table_entry_t *e = realloc(h->e, (size_t)cap * sizeof(*e));
        if (!e) {
            h->nomem = 1;
            return;
        }
        h->e = e;
        h->cap = cap;
    }
    h->e[h->n].key = amqp_cstring_bytes(key);
    h->e[h->n].value.kind = AMQP_FIELD_KIND_UTF8;
    h->e[h->n].value.value.bytes.bytes = (void *)val;
    h->e[h->n].value.value.bytes.len = len;
    h->n++;
}

static void header_add(msg_headers_t *h, const char *key, const char *val)
{
    header_addn(h, key, val, val ? strlen(val) : 0);
}

/* Keeps a copy of s[0..len) (NUL-terminated) in h->owned; NULL on ENOMEM. */
static char *own(msg_headers_t *h, const char *s, size_t len)
{
    if (h->nowned == h->cap_owned) {
        int cap = h->cap_owned ? 2 * h->cap_owned : 16;
        char **o = realloc(h->owned, (size_t)cap * sizeof(*o));
        if (!o)
            return NULL;
        h->owned = o;
        h->cap_owned = cap;
    }
    char *c = malloc(len + 1);
    if (c) {
        memcpy(c, s, len);
        c[len] = '\0';
        h->owned[h->nowned++] = c;
    }
    return c;
}

/* outbox__headers_each callback: one of the event's own headers. */
static outbox_err_t add_event_header(void *opaque, const char *name, const char *value, size_t len)
{
    msg_headers_t *h = opaque;
    const char *n = own(h, name, strlen(name));
    const char *v = n ? own(h, value, len) : NULL;
    if (!v)
        return OUTBOX_ERR_NOMEM;
    header_addn(h, n, v, len);
    return h->nomem ? OUTBOX_ERR_NOMEM : OUTBOX_OK;
}

/* Builds the headers: traceparent, ce_* (binary mode), then the event's own
 * headers (core/headers.h: strings as they are, other JSON values as their
 * JSON text; headers that are not a JSON object are left out). -1 on ENOMEM. */
static int headers_build(msg_headers_t *h, const outbox_msg_t *m, int binary)
{
    memset(h, 0, sizeof(*h));
    header_add(h, "traceparent", m->traceparent);
    if (binary) {
        header_add(h, "ce_specversion", "1.0");
        header_add(h, "ce_id", m->id);
        header_add(h, "ce_source", m->source);
        header_add(h, "ce_type", m->type);
        header_add(h, "ce_time", m->time);
        header_add(h, "ce_subject", m->key);
        header_add(h, "ce_partitionkey", m->key);
        header_add(h, "ce_datacontenttype", CT_JSON);
        header_add(h, "ce_traceparent", m->traceparent);
    }
    if (outbox__headers_each(m->headers, add_event_header, h) == OUTBOX_ERR_NOMEM)
        return -1;
    return h->nomem ? -1 : 0;
}

/* Sizes of the event's own headers, for msg_fits. */
typedef struct header_sizes_s {
    size_t total;
    char too_long[40]; /* the first name over 255 bytes (its start), or "" */
} header_sizes_t;

static outbox_err_t size_header(void *opaque, const char *name, const char *value, size_t len)
{
    header_sizes_t *hs = opaque;
    (void)value;
    if (strlen(name) > 255) {
        snprintf(hs->too_long, sizeof(hs->too_long), "%.32s", name);
        return OUTBOX_ERR_REJECTED;
    }
    hs->total += strlen(name) + 8 + len;
    return OUTBOX_OK;
}

/* 1 if m can be sent: AMQP short strings (exchange, routing key, header
 * names) hold at most 255 bytes, and the properties must fit in one frame. */
static int msg_fits(const outbox_msg_t *m, char *why, size_t why_size)
{
    size_t tl = strlen(m->topic), yl = strlen(m->type);
    if (tl == 0 || tl > 255) {
        snprintf(why, why_size, "topic must be 1..255 bytes to name an AMQP exchange (got %zu)",
                 tl);
        return 0;
    }
    if (yl > 255) {
        snprintf(why, why_size,
                 "type must be at most 255 bytes to be an AMQP routing key (got %zu)", yl);
        return 0;
    }
    header_sizes_t hs = {.total = strlen(m->id) + yl +
                                  (m->traceparent ? 2 * strlen(m->traceparent) : 0) + 12 * 64 +
                                  strlen(m->source ? m->source : "") +
                                  strlen(m->time ? m->time : "") + 2 * strlen(m->key)};
    if (outbox__headers_each(m->headers, size_header, &hs) == OUTBOX_ERR_REJECTED) {
        snprintf(why, why_size, "header name \"%s...\" is longer than 255 bytes (AMQP limit)",
                 hs.too_long);
        return 0;
    }
    if (hs.total > 64 * 1024) {
        snprintf(
            why, why_size,
            "headers and key take %zu bytes; AMQP properties must fit in one frame (64 KiB here)",
            hs.total);
        return 0;
    }
    return 1;
}

static void fail_all(outbox_pub_result_t *res, size_t n, outbox_err_t err, const char *why)
{
    for (size_t i = 0; i < n; i++) {
        res[i].err = err;
        res[i].not_sent = 0;
        snprintf(res[i].errstr, sizeof(res[i].errstr), "%s", why);
    }
}

static void fail_one(outbox_pub_result_t *r, int *state, outbox_err_t err, const char *why)
{
    *state = PS_FAILED;
    r->err = err;
    snprintf(r->errstr, sizeof(r->errstr), "%s", why);
}

/* Index of the message whose message-id is id among msgs[0..n), or n. */
static size_t find_by_id(const outbox_msg_t *msgs, size_t n, amqp_bytes_t id)
{
    for (size_t i = 0; i < n; i++)
        if (id.len == strlen(msgs[i].id) && !memcmp(id.bytes, msgs[i].id, id.len))
            return i;
    return n;
}

/* Bounds the next RPCs (declares) by what is left of the call's deadline. */
static void rpc_deadline(amqp_sink_t *a, int64_t deadline)
{
    int64_t left = deadline - outbox__now_ms();
    struct timeval tv = outbox__amqp_tv(left > 1 ? left : 1);
    amqp_set_rpc_timeout(a->conn, &tv);
}

/* One publish call in progress. */
typedef struct amqp_call_s {
    outbox_msg_t *msgs;
    outbox_pub_result_t *res;
    size_t n;
    int *state;     /* per message: PS_* */
    size_t *by_tag; /* message index of delivery tag first_tag + k */
    uint64_t first_tag;
    size_t nsent;   /* messages published on the channel */
    size_t pending; /* of those, still without a confirm */
    int64_t deadline;
    char why[512]; /* why the connection failed */
} amqp_call_t;

/* 0. What AMQP cannot carry is refused for good (dead letter now): it
 *    would fail the same way on every retry. */
static void reject_unfit(amqp_call_t *c)
{
    char why[512];
    for (size_t i = 0; i < c->n; i++)
        if (!msg_fits(&c->msgs[i], why, sizeof(why)))
            fail_one(&c->res[i], &c->state[i], OUTBOX_ERR_REJECTED, why);
}

/* 1. Exchanges, before any publish so no RPC reply interleaves with
 *    confirms. A refused exchange fails its topic's messages only.
 *    OUTBOX_ERR_BROKER (c->why set) when the connection failed. */
static outbox_err_t declare_all(outbox_sink_t *sink, amqp_call_t *c)
{
    rpc_deadline(sink->state, c->deadline);
    for (size_t i = 0; i < c->n; i++) {
        if (c->state[i] == PS_FAILED)
            continue;
        outbox_err_t e = declare(sink, c->msgs[i].topic, c->why, sizeof(c->why));
        if (e == OUTBOX_ERR_BROKER)
            return e;
        if (e != OUTBOX_OK)
            for (size_t j = i; j < c->n; j++)
                if (!strcmp(c->msgs[j].topic, c->msgs[i].topic))
                    fail_one(&c->res[j], &c->state[j], OUTBOX_ERR_BROKER, c->why);
    }
    return OUTBOX_OK;
}

/* Publishes one message on the channel. OUTBOX_ERR_NOMEM (the message
 * fails alone) or OUTBOX_ERR_BROKER (the connection failed, c->why set). */
static outbox_err_t publish_one(amqp_sink_t *a, amqp_call_t *c, const outbox_msg_t *m)
{
    msg_headers_t h;
    if (headers_build(&h, m, a->binary)) {
        headers_term(&h);
        return OUTBOX_ERR_NOMEM;
    }
    amqp_basic_properties_t p;
    memset(&p, 0, sizeof(p));
    p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
               AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TYPE_FLAG | AMQP_BASIC_HEADERS_FLAG;
    p.content_type = amqp_cstring_bytes(a->binary ? CT_JSON : CT_STRUCTURED);
    p.delivery_mode = 2; /* persistent */
    p.message_id = amqp_cstring_bytes(m->id);
    p.type = amqp_cstring_bytes(m->type);
    p.headers.num_entries = h.n;
    p.headers.entries = h.e;
    uint64_t ts = epoch_seconds(m->time);
    if (ts) {
        p._flags |= AMQP_BASIC_TIMESTAMP_FLAG;
        p.timestamp = ts;
    }
    amqp_bytes_t body;
    if (a->binary) {
        body.bytes = (void *)(m->payload ? m->payload : "null");
        body.len = strlen(body.bytes);
    } else {
        body.bytes = m->envelope;
        body.len = m->envelope_len;
    }
    int st = amqp_basic_publish(a->conn, OUTBOX__AMQP_CHANNEL, amqp_cstring_bytes(m->topic),
                                amqp_cstring_bytes(m->type), a->mandatory, 0, &p, body);
    headers_term(&h);
    if (st != AMQP_STATUS_OK) {
        snprintf(c->why, sizeof(c->why), "AMQP publish to %s failed: %s", a->url.shown,
                 amqp_error_string2(st));
        return OUTBOX_ERR_BROKER;
    }
    return OUTBOX_OK;
}

/* 2. Publishes every message still unsent, in order, until the deadline;
 *    the ones left then are out of time (not sent). */
static outbox_err_t publish_all(amqp_sink_t *a, amqp_call_t *c)
{
    c->first_tag = a->next_tag;
    for (size_t i = 0; i < c->n; i++) {
        if (c->state[i] == PS_FAILED)
            continue;
        if (outbox__now_ms() >= c->deadline) {
            c->state[i] = PS_FAILED;
            outbox__sink_out_of_time(&c->res[i], 1);
            continue;
        }
        outbox_err_t e = publish_one(a, c, &c->msgs[i]);
        if (e == OUTBOX_ERR_BROKER)
            return e;
        if (e != OUTBOX_OK) {
            fail_one(&c->res[i], &c->state[i], OUTBOX_ERR_BROKER,
                     "out of memory building AMQP headers");
            continue;
        }
        c->state[i] = PS_WAIT;
        c->by_tag[c->nsent++] = i;
        a->next_tag++;
    }
    c->pending = c->nsent;
    return OUTBOX_OK;
}

/* Applies a basic.ack (ok) or basic.nack to delivery tag (and, with
 * multiple, every earlier one of the call). */
static void apply_confirm(amqp_call_t *c, uint64_t tag, int multiple, int ok)
{
    if (tag < c->first_tag || tag >= c->first_tag + c->nsent)
        return; /* not ours (cannot happen: earlier calls waited or dropped) */
    size_t lo = multiple ? 0 : (size_t)(tag - c->first_tag), hi = (size_t)(tag - c->first_tag);
    for (size_t k = lo; k <= hi; k++) {
        size_t i = c->by_tag[k];
        if (c->state[i] != PS_WAIT)
            continue;
        c->pending--;
        if (ok && c->res[i].err == OUTBOX_OK) {
            c->state[i] = PS_ACKED;
            continue;
        }
        c->state[i] = PS_FAILED;
        if (c->res[i].err == OUTBOX_OK) {
            c->res[i].err = OUTBOX_ERR_BROKER;
            snprintf(c->res[i].errstr, sizeof(c->res[i].errstr),
                     "AMQP broker nacked the message (internal error in a queue)");
        }
    }
}

/* A basic.return (mandatory, unroutable): reads the returned message and
 * marks its event failed; its ack follows and is counted then. */
static outbox_err_t on_return(amqp_sink_t *a, amqp_call_t *c, const amqp_frame_t *f)
{
    const amqp_basic_return_t *m = f->payload.method.decoded;
    char rwhy[256];
    snprintf(rwhy, sizeof(rwhy),
             "AMQP broker returned the message: %u %.*s (no queue bound to exchange \"%.*s\" "
             "for routing key \"%.*s\")",
             m->reply_code, (int)m->reply_text.len, (const char *)m->reply_text.bytes,
             (int)m->exchange.len, (const char *)m->exchange.bytes, (int)m->routing_key.len,
             (const char *)m->routing_key.bytes);
    amqp_message_t rm;
    amqp_rpc_reply_t r = amqp_read_message(a->conn, f->channel, &rm, 0);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        outbox__amqp_reply_str(r, c->why, sizeof(c->why));
        return OUTBOX_ERR_BROKER;
    }
    size_t i = (rm.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG)
                   ? find_by_id(c->msgs, c->n, rm.properties.message_id)
                   : c->n;
    amqp_destroy_message(&rm);
    if (i < c->n && c->state[i] == PS_WAIT) {
        c->res[i].err = OUTBOX_ERR_BROKER;
        snprintf(c->res[i].errstr, sizeof(c->res[i].errstr), "%s", rwhy);
    }
    return OUTBOX_OK;
}

/* The broker is there but refused something on the channel (e.g. 403
 * access refused, 404 exchange deleted, 406 message too large): the
 * unconfirmed messages fail (charged, so a permanent refusal ends in the
 * dead-letter table), the confirmed ones stand. The connection is reset. */
static void on_channel_close(outbox_sink_t *sink, amqp_call_t *c, const amqp_frame_t *f)
{
    amqp_sink_t *a = sink->state;
    char why[512];
    amqp_rpc_reply_t r = {.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION, .reply = f->payload.method};
    outbox__amqp_reply_str(r, why, sizeof(why));
    for (size_t k = 0; k < c->nsent; k++)
        if (c->state[c->by_tag[k]] == PS_WAIT)
            fail_one(&c->res[c->by_tag[k]], &c->state[c->by_tag[k]], OUTBOX_ERR_BROKER, why);
    c->pending = 0;
    outbox__log(OUTBOX_LOG_WARN, "sink", "amqp_channel_closed", why, "worker", sink->name, NULL);
    outbox__amqp_channel_close_ok(a->conn, OUTBOX__AMQP_CHANNEL);
    drop(a);
}

/* Handles one method frame while confirms are awaited. */
static outbox_err_t on_frame(outbox_sink_t *sink, amqp_call_t *c, const amqp_frame_t *f)
{
    amqp_sink_t *a = sink->state;
    switch (f->payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
        const amqp_basic_ack_t *m = f->payload.method.decoded;
        apply_confirm(c, m->delivery_tag, m->multiple, 1);
        break;
    }
    case AMQP_BASIC_NACK_METHOD: {
        const amqp_basic_nack_t *m = f->payload.method.decoded;
        apply_confirm(c, m->delivery_tag, m->multiple, 0);
        break;
    }
    case AMQP_BASIC_RETURN_METHOD:
        return on_return(a, c, f);
    case AMQP_CHANNEL_CLOSE_METHOD:
        on_channel_close(sink, c, f);
        return OUTBOX_OK;
    case AMQP_CONNECTION_CLOSE_METHOD: {
        amqp_rpc_reply_t r = {.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION,
                              .reply = f->payload.method};
        outbox__amqp_reply_str(r, c->why, sizeof(c->why));
        return OUTBOX_ERR_BROKER;
    }
    default:
        return OUTBOX_OK;
    }
    amqp_maybe_release_buffers(a->conn);
    return OUTBOX_OK;
}

/* 3. Confirms: one basic.ack/nack per delivery tag (or several at once
 *    with "multiple"); a basic.return (mandatory, unroutable) comes before
 *    the ack of the same message. OUTBOX_ERR_TIMEOUT when the deadline
 *    passes first, OUTBOX_ERR_BROKER when the connection fails. */
static outbox_err_t await_confirms(outbox_sink_t *sink, amqp_call_t *c)
{
    amqp_sink_t *a = sink->state;
    while (c->pending > 0) {
        int64_t left = c->deadline - outbox__now_ms();
        if (left <= 0) {
            snprintf(c->why, sizeof(c->why),
                     "AMQP broker %s did not confirm %zu of %zu messages before the publish "
                     "deadline",
                     a->url.shown, c->pending, c->nsent);
            return OUTBOX_ERR_TIMEOUT;
        }
        struct timeval tv = outbox__amqp_tv(left);
        amqp_frame_t f;
        int st = amqp_simple_wait_frame_noblock(a->conn, &f, &tv);
        if (st == AMQP_STATUS_TIMEOUT)
            continue;
        if (st != AMQP_STATUS_OK) {
            snprintf(c->why, sizeof(c->why),
                     "AMQP connection to %s lost while waiting for confirms: %s", a->url.shown,
                     amqp_error_string2(st));
            return OUTBOX_ERR_BROKER;
        }
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        outbox_err_t e = on_frame(sink, c, &f);
        if (e)
            return e;
    }
    return OUTBOX_OK;
}

/* Publishes the call in three steps (declares, publishes, confirms), each
 * message with its own result. A connection failure or a confirm timeout
 * fails the whole call (nothing in it counts; the relay probes). */
static outbox_err_t amqp_publish(outbox_sink_t *sink, outbox_msg_t *msgs, size_t n,
                                 outbox_pub_result_t *res)
{
    amqp_sink_t *a = sink->state;
    amqp_call_t c = {.msgs = msgs, .res = res, .n = n, .deadline = outbox__sink_deadline(sink)};
    int64_t left = c.deadline - outbox__now_ms();
    if (left <= 0) {
        outbox__sink_out_of_time(res, n);
        return OUTBOX_OK;
    }
    if (a->conn && check_idle(a) != 0)
        outbox__log(OUTBOX_LOG_INFO, "sink", "amqp_reconnect",
                    "AMQP connection lost while idle; reconnecting", "worker", sink->name, NULL);
    /* 4 connect steps, each bounded by a quarter of what is left. */
    if (ensure(sink, left / 4 > 0 ? left / 4 : 1, c.why, sizeof(c.why)) != OUTBOX_OK) {
        fail_all(res, n, OUTBOX_ERR_BROKER, c.why);
        return OUTBOX_ERR_BROKER;
    }
    c.state = calloc(n ? n : 1, sizeof(*c.state));
    c.by_tag = calloc(n ? n : 1, sizeof(*c.by_tag));
    if (!c.state || !c.by_tag) {
        free(c.state);
        free(c.by_tag);
        fail_all(res, n, OUTBOX_ERR_BROKER, "out of memory");
        return OUTBOX_OK;
    }
    for (size_t i = 0; i < n; i++)
        memset(&res[i], 0, sizeof(res[i]));
    reject_unfit(&c);
    outbox_err_t ret = declare_all(sink, &c);
    if (!ret)
        ret = publish_all(a, &c);
    if (!ret)
        ret = await_confirms(sink, &c);
    if (ret) {
        fail_all(res, n, ret, c.why);
        outbox__log(OUTBOX_LOG_WARN, "sink", "amqp_connection_lost", c.why, "worker", sink->name,
                    NULL);
        drop(a);
    }
    free(c.state);
    free(c.by_tag);
    return ret;
}

static outbox_err_t amqp_ping(outbox_sink_t *sink, char *errstr, size_t errstr_size)
{
    amqp_sink_t *a = sink->state;
    if (a->conn)
        check_idle(a);
    outbox_err_t err = ensure(sink, sink->timeout_ms, errstr, errstr_size);
    if (err)
        return err;
    /* One round trip: amq.topic exists in every vhost. */
    rpc_deadline(a, outbox__now_ms() + sink->timeout_ms);
    amqp_exchange_declare(a->conn, OUTBOX__AMQP_CHANNEL, amqp_cstring_bytes("amq.topic"),
                          amqp_cstring_bytes("topic"), 1, 1, 0, 0, amqp_empty_table);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(a->conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        char why[256];
        outbox__amqp_reply_str(r, why, sizeof(why));
        drop(a);
        return outbox__err(OUTBOX_ERR_BROKER, errstr, errstr_size, "AMQP ping of %s failed: %s",
                           a->url.shown, why);
    }
    return OUTBOX_OK;
}

static void amqp_close_sink(outbox_sink_t *sink)
{
    amqp_sink_t *a = sink->state;
    if (!a)
        return;
    outbox__amqp_close(&a->conn);
    forget_declared(a);
    free(a->declared);
    outbox__amqp_url_term(&a->url);
    free(a);
    sink->state = NULL;
}

static const char *const amqp_schemes[] = {"amqp", "amqps", NULL};

const outbox_sink_ops_t outbox__sink_amqp_ops = {
    .name = "amqp",
    .schemes = amqp_schemes,
    .open = amqp_open,
    .publish = amqp_publish,
    .ping = amqp_ping,
    .close = amqp_close_sink,
};
