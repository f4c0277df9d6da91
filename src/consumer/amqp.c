/* AMQP 0-9-1 consumer (RabbitMQ) on rabbitmq-c.
 *
 * The group is a durable queue bound to every topic's exchange (a durable
 * topic exchange, declared here too) with routing key "#": the instances of
 * a group share the queue, other groups get their own copy. Prefetch
 * (amqp_prefetch) bounds the unacknowledged messages per instance. A
 * message is acknowledged after the handler returns OUTBOX_OK (or it was
 * dead-lettered). A message the handler failed is neither acked nor
 * nacked: this instance keeps it unacknowledged, with a copy, and hands it
 * to the handler again when its retry is due (a nack would bring it back at
 * once: a hot loop). Later messages of its key are kept the same way,
 * behind it, in arrival order; other keys flow. The broker still holds
 * them all: if this instance dies or its connection drops, they are
 * redelivered (the copies are dropped). Keep amqp_prefetch well above the
 * number of keys expected to fail at once, and RabbitMQ's consumer_timeout
 * (30 min by default) above the longest retry sequence. A message left
 * unacknowledged by a dead instance is redelivered by the broker
 * (redelivered flag set). Structured mode
 * (body = CloudEvents document) and binary mode (body = data, ce_* headers)
 * are both understood. Connects lazily and reconnects after a loss. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer/consumer.h"
#include "consumer/consumer_decode.h"
#include "core/conf.h"
#include "core/log.h"
#include "core/util.h"
#include "broker/amqp.h"

/* A delivery kept unacknowledged for a later retry (copies: the
 * connection's buffers are reused). */
typedef struct deferred_s {
    uint64_t tag;
    char *topic, *body;
    size_t len;
    char **attrs;
    int64_t due_ms;
} deferred_t;

typedef struct amqp_consumer_s {
    outbox__amqp_url_t url;
    char ca_file[1024];
    int prefetch;
    int heartbeat_s;
    int64_t connect_timeout_ms;
    amqp_connection_state_t conn;
    deferred_t *deferred; /* in arrival order */
    int ndeferred, cap_deferred;
} amqp_consumer_t;

static void deferred_free(deferred_t *d)
{
    free(d->topic);
    free(d->body);
    outbox__consumer_amqp_attrs_free(d->attrs);
}

/* The connection is gone: the broker redelivers what we kept. */
static void deferred_drop(amqp_consumer_t *a)
{
    for (int i = 0; i < a->ndeferred; i++)
        deferred_free(&a->deferred[i]);
    a->ndeferred = 0;
}

static outbox_err_t amqpc_open(outbox_consumer_t *c, char *errstr, size_t errstr_size)
{
    amqp_consumer_t *a = calloc(1, sizeof(*a));
    if (!a)
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    outbox_err_t err = outbox__amqp_url_parse(&a->url, c->url, errstr, errstr_size);
    if (err) {
        free(a);
        return err;
    }
    if (strlen(c->group) > 255) {
        outbox__amqp_url_term(&a->url);
        free(a);
        return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
                           "AMQP queue names are at most 255 bytes; group \"%.40s...\" is longer",
                           c->group);
    }
    snprintf(a->ca_file, sizeof(a->ca_file), "%s", outbox__conf_str(c->conf, "amqp_ca_file"));
    a->prefetch = (int)outbox__conf_int(c->conf, "amqp_prefetch");
    int64_t hb = outbox__conf_ms(c->conf, "amqp_heartbeat");
    a->heartbeat_s = hb > 0 && hb < 1000 ? 1 : (int)(hb / 1000);
    a->connect_timeout_ms = outbox__conf_ms(c->conf, "publish_timeout");
    c->state = a;
    return OUTBOX_OK;
}

static void set_err(outbox_consumer_t *c, const char *what, amqp_rpc_reply_t r)
{
    amqp_consumer_t *a = c->state;
    char why[256];
    outbox__amqp_reply_str(r, why, sizeof(why));
    snprintf(c->errstr, sizeof(c->errstr), "AMQP %s on %s failed: %s", what, a->url.shown, why);
}

/* Connects and sets up queue, bindings and the consumer, unless connected. */
static outbox_err_t ensure(outbox_consumer_t *c)
{
    amqp_consumer_t *a = c->state;
    if (a->conn)
        return OUTBOX_OK;
    if (outbox__amqp_connect(&a->url, a->ca_file, a->connect_timeout_ms, a->heartbeat_s, &a->conn,
                             c->errstr, sizeof(c->errstr)) != OUTBOX_OK)
        return OUTBOX_ERR_BROKER;
    amqp_connection_state_t conn = a->conn;
    const amqp_channel_t ch = OUTBOX__AMQP_CHANNEL;
    amqp_bytes_t queue = amqp_cstring_bytes(c->group);
    amqp_rpc_reply_t r;
    amqp_basic_qos(conn, ch, 0, (uint16_t)a->prefetch, 0);
    if ((r = amqp_get_rpc_reply(conn)).reply_type != AMQP_RESPONSE_NORMAL) {
        set_err(c, "basic.qos", r);
        goto fail;
    }
    amqp_queue_declare(conn, ch, queue, 0, 1, 0, 0, amqp_empty_table);
    if ((r = amqp_get_rpc_reply(conn)).reply_type != AMQP_RESPONSE_NORMAL) {
        set_err(c, "queue.declare", r);
        goto fail;
    }
    for (int i = 0; i < c->ntopics; i++) {
        amqp_bytes_t ex = amqp_cstring_bytes(c->topics[i]);
        amqp_exchange_declare(conn, ch, ex, amqp_cstring_bytes("topic"), 0, 1, 0, 0,
                              amqp_empty_table);
        if ((r = amqp_get_rpc_reply(conn)).reply_type != AMQP_RESPONSE_NORMAL) {
            set_err(c, "exchange.declare", r);
            goto fail;
        }
        amqp_queue_bind(conn, ch, queue, ex, amqp_cstring_bytes("#"), amqp_empty_table);
        if ((r = amqp_get_rpc_reply(conn)).reply_type != AMQP_RESPONSE_NORMAL) {
            set_err(c, "queue.bind", r);
            goto fail;
        }
    }
    amqp_basic_consume(conn, ch, queue, amqp_cstring_bytes(c->name), 0, 0, 0, amqp_empty_table);
    if ((r = amqp_get_rpc_reply(conn)).reply_type != AMQP_RESPONSE_NORMAL) {
        set_err(c, "basic.consume", r);
        goto fail;
    }
    outbox__log(OUTBOX_LOG_INFO, "consumer", "amqp_connected", "consuming from the AMQP broker",
                "consumer", c->name, "queue", c->group, "url", a->url.shown, NULL);
    return OUTBOX_OK;
fail:
    outbox__amqp_drop(&a->conn);
    return OUTBOX_ERR_BROKER;
}

static void lost(outbox_consumer_t *c, const char *why)
{
    amqp_consumer_t *a = c->state;
    snprintf(c->errstr, sizeof(c->errstr), "AMQP connection to %s lost: %s", a->url.shown, why);
    outbox__log(OUTBOX_LOG_WARN, "consumer", "amqp_connection_lost", c->errstr, "consumer", c->name,
                NULL);
    outbox__amqp_drop(&a->conn);
    deferred_drop(a);
}

static char *dup_bytes(amqp_bytes_t b)
{
    char *s = malloc(b.len + 1);
    if (s) {
        memcpy(s, b.bytes, b.len);
        s[b.len] = '\0';
    }
    return s;
}

/* Binary mode: the ce_* string headers as a NULL-terminated name/value list
 * (malloc'd strings), or NULL when the message is structured. */
char **outbox__consumer_amqp_attrs(const amqp_basic_properties_t *p)
{
    if (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG) {
        const char *ct = "application/cloudevents";
        if (p->content_type.len >= strlen(ct) && !memcmp(p->content_type.bytes, ct, strlen(ct)))
            return NULL;
    }
    if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG))
        return NULL;
    const amqp_table_t *t = &p->headers;
    int has_specversion = 0;
    for (int i = 0; i < t->num_entries; i++)
        if (t->entries[i].key.len == 14 && !memcmp(t->entries[i].key.bytes, "ce_specversion", 14))
            has_specversion = 1;
    if (!has_specversion)
        return NULL;
    char **attrs = calloc(2 * (size_t)t->num_entries + 1, sizeof(*attrs));
    if (!attrs)
        return NULL;
    int n = 0;
    for (int i = 0; i < t->num_entries; i++) {
        const amqp_table_entry_t *e = &t->entries[i];
        if (e->key.len < 3 || memcmp(e->key.bytes, "ce_", 3) ||
            (e->value.kind != AMQP_FIELD_KIND_UTF8 && e->value.kind != AMQP_FIELD_KIND_BYTES))
            continue;
        attrs[n] = dup_bytes(e->key);
        attrs[n + 1] = dup_bytes(e->value.value.bytes);
        if (!attrs[n] || !attrs[n + 1]) {
            free(attrs[n]);
            free(attrs[n + 1]);
            attrs[n] = attrs[n + 1] = NULL;
            break;
        }
        n += 2;
    }
    return attrs;
}

void outbox__consumer_amqp_attrs_free(char **attrs)
{
    for (int i = 0; attrs && attrs[i]; i++)
        free(attrs[i]);
    free(attrs);
}

/* Keeps a failed (or held back) delivery for a retry at due_ms. 0 on success. */
static int defer(amqp_consumer_t *a, uint64_t tag, const char *topic, const void *body, size_t len,
                 char **attrs, int64_t due_ms)
{
    if (a->ndeferred == a->cap_deferred) {
        int ncap = a->cap_deferred ? 2 * a->cap_deferred : 16;
        deferred_t *nd = realloc(a->deferred, (size_t)ncap * sizeof(*nd));
        if (!nd)
            return -1;
        a->deferred = nd;
        a->cap_deferred = ncap;
    }
    deferred_t d = {tag, strdup(topic), malloc(len ? len : 1), len, attrs, due_ms};
    if (!d.topic || !d.body) {
        free(d.topic);
        free(d.body);
        return -1;
    }
    memcpy(d.body, body, len);
    a->deferred[a->ndeferred++] = d;
    return 0;
}

/* Handles one delivery: dispatch, then ack; when the handler did not
 * finish it, the delivery is kept for a retry (nack + requeue only when
 * it cannot be kept: out of memory). attrs is taken over. Returns the
 * handler's verdict, or OUTBOX_ERR_BROKER if the ack could not be sent. */
static outbox_err_t handle_one(outbox_consumer_t *c, uint64_t tag, const char *topic,
                               const void *body, size_t len, char **attrs, int redelivered,
                               int kept, outbox_consumer_handler_fn fn, void *opaque,
                               int64_t *due_ms)
{
    amqp_consumer_t *a = c->state;
    int64_t retry_in = 1;
    outbox_err_t rc = outbox__consumer_dispatch(c, topic, body, len, (const char *const *)attrs,
                                                redelivered, fn, opaque, &retry_in);
    int st = AMQP_STATUS_OK;
    *due_ms = outbox__now_ms() + retry_in;
    if (rc == OUTBOX_OK) {
        st = amqp_basic_ack(a->conn, OUTBOX__AMQP_CHANNEL, tag, 0);
    } else if (!kept) {
        if (defer(a, tag, topic, body, len, attrs, *due_ms) == 0)
            attrs = NULL; /* owned by the deferred copy */
        else
            st = amqp_basic_nack(a->conn, OUTBOX__AMQP_CHANNEL, tag, 0, 1);
    }
    if (!kept)
        outbox__consumer_amqp_attrs_free(attrs);
    if (st != AMQP_STATUS_OK) {
        lost(c, amqp_error_string2(st));
        return OUTBOX_ERR_BROKER;
    }
    return rc;
}

static outbox_err_t handle(outbox_consumer_t *c, amqp_envelope_t *env,
                           outbox_consumer_handler_fn fn, void *opaque)
{
    char *topic = dup_bytes(env->exchange);
    char **attrs = outbox__consumer_amqp_attrs(&env->message.properties);
    if (!topic) {
        outbox__consumer_amqp_attrs_free(attrs);
        return OUTBOX_ERR_NOMEM;
    }
    int64_t due;
    outbox_err_t rc =
        handle_one(c, env->delivery_tag, topic, env->message.body.bytes, env->message.body.len,
                   attrs, env->redelivered, 0, fn, opaque, &due);
    free(topic);
    return rc;
}

/* Retries the kept deliveries that are due, in arrival order: a key's
 * later messages stay behind its failed one (the holds say so). */
static outbox_err_t retry_deferred(outbox_consumer_t *c, outbox_consumer_handler_fn fn,
                                   void *opaque)
{
    amqp_consumer_t *a = c->state;
    for (int i = 0; i < a->ndeferred && a->conn; i++) {
        deferred_t *d = &a->deferred[i];
        if (d->due_ms > outbox__now_ms())
            continue;
        int64_t due;
        outbox_err_t rc =
            handle_one(c, d->tag, d->topic, d->body, d->len, d->attrs, 1, 1, fn, opaque, &due);
        if (rc == OUTBOX_ERR_BROKER && !a->conn)
            return OUTBOX_ERR_BROKER; /* the list was dropped with the connection */
        if (rc != OUTBOX_OK) {
            d->due_ms = due;
            continue;
        }
        deferred_free(d);
        memmove(d, d + 1, (size_t)(a->ndeferred - i - 1) * sizeof(*d));
        a->ndeferred--;
        i--;
    }
    return OUTBOX_OK;
}

static outbox_err_t amqpc_poll(outbox_consumer_t *c, int timeout_ms, outbox_consumer_handler_fn fn,
                               void *opaque)
{
    amqp_consumer_t *a = c->state;
    if (ensure(c) != OUTBOX_OK)
        return OUTBOX_ERR_BROKER;
    if (retry_deferred(c, fn, opaque) != OUTBOX_OK)
        return OUTBOX_ERR_BROKER;
    int64_t deadline = outbox__now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        int64_t left = deadline - outbox__now_ms();
        struct timeval tv = outbox__amqp_tv(left);
        amqp_envelope_t env;
        amqp_maybe_release_buffers(a->conn);
        amqp_rpc_reply_t r = amqp_consume_message(a->conn, &env, &tv, 0);
        if (r.reply_type == AMQP_RESPONSE_NORMAL) {
            outbox_err_t rc = handle(c, &env, fn, opaque);
            amqp_destroy_envelope(&env);
            if (rc == OUTBOX_ERR_BROKER && !a->conn)
                return OUTBOX_ERR_BROKER;
            if (outbox__now_ms() >= deadline)
                return OUTBOX_OK;
            continue;
        }
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_TIMEOUT)
            return OUTBOX_OK;
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
            /* Some other method arrived: read it and decide. */
            amqp_frame_t f;
            int st = amqp_simple_wait_frame_noblock(a->conn, &f, &tv);
            if (st == AMQP_STATUS_TIMEOUT)
                return OUTBOX_OK;
            if (st != AMQP_STATUS_OK) {
                lost(c, amqp_error_string2(st));
                return OUTBOX_ERR_BROKER;
            }
            if (f.frame_type != AMQP_FRAME_METHOD)
                continue;
            switch (f.payload.method.id) {
            case AMQP_CHANNEL_CLOSE_METHOD:
            case AMQP_CONNECTION_CLOSE_METHOD: {
                amqp_rpc_reply_t x = {.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION,
                                      .reply = f.payload.method};
                char why[256];
                outbox__amqp_reply_str(x, why, sizeof(why));
                lost(c, why);
                return OUTBOX_ERR_BROKER;
            }
            case AMQP_BASIC_CANCEL_METHOD: /* queue deleted: reconnect re-declares it */
                lost(c, "the broker cancelled the consumer (queue deleted?)");
                return OUTBOX_ERR_BROKER;
            default:
                continue;
            }
        }
        char why[256];
        outbox__amqp_reply_str(r, why, sizeof(why));
        lost(c, why);
        return OUTBOX_ERR_BROKER;
    }
}

static void amqpc_close(outbox_consumer_t *c)
{
    amqp_consumer_t *a = c->state;
    if (!a)
        return;
    deferred_drop(a);
    free(a->deferred);
    outbox__amqp_close(&a->conn);
    outbox__amqp_url_term(&a->url);
    free(a);
    c->state = NULL;
}

static const char *const amqpc_schemes[] = {"amqp", "amqps", NULL};

const outbox_consumer_ops_t outbox__consumer_amqp_ops = {
    .name = "amqp",
    .schemes = amqpc_schemes,
    .open = amqpc_open,
    .poll = amqpc_poll,
    .close = amqpc_close,
};
