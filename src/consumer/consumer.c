/* Consumer registry and the shared dispatch step. */
#include "consumer/consumer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/conf.h"
#include "core/json.h"
#include "core/log.h"
#include "core/util.h"

/* Generated from the files in src/consumer/ (see CMakeLists.txt), NULL-terminated. */
extern const outbox_consumer_ops_t *const outbox__consumer_registry[];

static const outbox_consumer_ops_t *find(const char *url)
{
    for (const outbox_consumer_ops_t *const *o = outbox__consumer_registry; *o; o++)
        for (const char *const *s = (*o)->schemes; *s; s++)
            if (outbox__url_scheme_is(url, *s))
                return *o;
    return NULL;
}

static void batch_forget(outbox__batch_t *b)
{
    for (int i = 0; i < b->nkeys; i++)
        free(b->keys[i]);
    b->nkeys = 0;
    b->ndone = 0;
}

outbox_consumer_t *outbox_consumer_new(const char *url, const char *group, const char *name,
                                       const char *const *topics, int ntopics,
                                       const outbox_conf_t *conf, char *errstr, size_t errstr_size)
{
    const outbox_consumer_ops_t *ops = find(url);
    if (!ops) {
        outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                    "no consumer for the URL scheme of \"%.*s\"",
                    url && strchr(url, ':') ? (int)(strchr(url, ':') - url) : 16, url ? url : "");
        return NULL;
    }
    if (!group || !*group || !name || !*name || ntopics <= 0 || !topics) {
        outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
                    "consumer needs a group, a name and a topic");
        return NULL;
    }
    outbox_consumer_t *c = calloc(1, sizeof(*c));
    if (!c)
        goto nomem;
    c->ops = ops;
    c->url = strdup(url);
    c->group = strdup(group);
    c->name = strdup(name);
    c->topics = calloc((size_t)ntopics, sizeof(char *));
    c->conf = conf ? outbox_conf_dup(conf) : outbox_conf_new();
    if (!c->url || !c->group || !c->name || !c->topics || !c->conf)
        goto nomem;
    for (int i = 0; i < ntopics; i++)
        if (!(c->topics[c->ntopics++] = strdup(topics[i])))
            goto nomem;
    c->batch.enabled = outbox__conf_bool(c->conf, "consumer_batch_transaction");
    if (outbox__poison_init(c, errstr, errstr_size) != OUTBOX_OK) {
        c->ops = NULL;
        outbox_consumer_destroy(c);
        return NULL;
    }
    if (ops->open(c, errstr, errstr_size) != OUTBOX_OK) {
        c->ops = NULL; /* nothing to close */
        outbox_consumer_destroy(c);
        return NULL;
    }
    return c;
nomem:
    if (c)
        c->ops = NULL;
    outbox_consumer_destroy(c);
    outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    return NULL;
}

outbox_err_t outbox_consumer_poll(outbox_consumer_t *c, int timeout_ms,
                                  outbox_consumer_handler_fn handler, void *opaque)
{
    if (!c || !handler)
        return OUTBOX_ERR_INVALID_ARG;
    if (outbox__poison_before_poll(c, timeout_ms, handler, opaque))
        return OUTBOX_OK; /* the consumer's database is down: messages stay in the broker */
    return c->ops->poll(c, timeout_ms, handler, opaque);
}

void outbox_consumer_set_batch(outbox_consumer_t *c, outbox_consumer_batch_fn fn, void *opaque)
{
    if (!c)
        return;
    c->batch.fn = fn;
    c->batch.opaque = opaque;
}

void outbox_consumer_set_batch_max(outbox_consumer_t *c, int max)
{
    if (c)
        c->batch.max = max > 0 ? max : 0;
}

int outbox__batch_begin(outbox_consumer_t *c, int nmsgs)
{
    outbox__batch_t *b = &c->batch;
    if (!b->fn || !b->enabled || nmsgs < 2 || b->open)
        return 0;
    batch_forget(b);
    b->broken = 0;
    b->sp = 0;
    if (b->fn(OUTBOX_CONSUMER_BATCH_BEGIN, 0, b->opaque) != OUTBOX_OK) {
        outbox__log(OUTBOX_LOG_WARN, "consumer", "batch_begin_failed",
                    "could not open the batch transaction: messages handled one by one", "consumer",
                    c->name, "group", c->group, NULL);
        return 0;
    }
    b->open = 1;
    return 1;
}

outbox_err_t outbox__batch_end(outbox_consumer_t *c)
{
    outbox__batch_t *b = &c->batch;
    if (!b->open)
        return OUTBOX_OK;
    b->open = 0;
    outbox_err_t rc = OUTBOX_ERR_DB;
    if (!b->broken)
        rc = b->fn(OUTBOX_CONSUMER_BATCH_COMMIT, 0, b->opaque);
    else
        (void)b->fn(OUTBOX_CONSUMER_BATCH_ABORT, 0, b->opaque);
    if (rc != OUTBOX_OK && b->ndone) {
        char n[16];
        snprintf(n, sizeof(n), "%d", b->ndone);
        outbox__log(OUTBOX_LOG_WARN, "consumer", "batch_not_committed",
                    b->broken ? "a savepoint failed: batch rolled back, its messages are "
                                "delivered again"
                              : "batch COMMIT failed or its outcome is unknown: nothing "
                                "acknowledged, its messages are delivered again",
                    "consumer", c->name, "group", c->group, "messages", n, NULL);
        /* Their keys start over from the broker's order. */
        for (int i = 0; i < b->nkeys; i++)
            outbox__holds_drop(&c->poison.holds, b->keys[i]);
    }
    batch_forget(b);
    b->broken = 0;
    return rc;
}

const char *outbox_consumer_errstr(const outbox_consumer_t *c)
{
    return c ? c->errstr : "";
}

void outbox_consumer_destroy(outbox_consumer_t *c)
{
    if (!c)
        return;
    if (c->ops && c->ops->close)
        c->ops->close(c);
    for (int i = 0; i < c->ntopics; i++)
        free(c->topics[i]);
    free(c->topics);
    free(c->url);
    free(c->group);
    free(c->name);
    outbox__poison_term(c);
    batch_forget(&c->batch);
    free(c->batch.keys);
    outbox_conf_destroy(c->conf);
    free(c);
}

outbox_err_t outbox__consumer_dispatch(outbox_consumer_t *c, const char *topic, const char *body,
                                       size_t len, const char *const *attrs, int redelivered,
                                       outbox_consumer_handler_fn fn, void *opaque,
                                       int64_t *retry_in_ms)
{
    int64_t ignored;
    if (!retry_in_ms)
        retry_in_ms = &ignored;
    *retry_in_ms = 1;
    outbox_delivery_t d;
    memset(&d, 0, sizeof(d));
    d.topic = topic;
    d.body = body;
    d.body_len = len;
    d.redelivered = redelivered;
    char err[256];
    outbox_err_t perr;
    if (attrs) {
        /* Binary mode: rebuild a structured document from ce_* attributes. */
        json_t *o = json_object();
        for (int i = 0; attrs[i] && attrs[i + 1]; i += 2)
            if (!strncmp(attrs[i], "ce_", 3) || !strncmp(attrs[i], "ce-", 3))
                json_object_set_new(o, attrs[i] + 3, json_string(attrs[i + 1]));
        /* data: the body as sent when it is JSON (spliced, never re-encoded),
         * else the body as a JSON string. */
        int raw = body && len && !outbox__json_check(body, len, NULL);
        if (!raw)
            json_object_set_new(o, "data", json_stringn(body ? body : "", body ? len : 0));
        char *attrs_doc = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        outbox__buf_t doc = {0};
        size_t alen = attrs_doc ? strlen(attrs_doc) : 0;
        if (alen >= 2 && raw) { /* "{...}": reopen it for "data" */
            outbox__buf_add(&doc, attrs_doc, alen - 1);
            outbox__buf_adds(&doc, alen > 2 ? ",\"data\":" : "\"data\":");
            outbox__buf_add(&doc, body, len);
            outbox__buf_add(&doc, "}", 1);
        } else if (attrs_doc) {
            outbox__buf_adds(&doc, attrs_doc);
        }
        free(attrs_doc);
        perr = doc.p && !doc.broken
                   ? outbox_envelope_parse(doc.p, doc.len, &d.env, err, sizeof(err))
                   : OUTBOX_ERR_NOMEM;
        free(doc.p);
    } else {
        perr = outbox_envelope_parse(body, len, &d.env, err, sizeof(err));
    }
    if (perr != OUTBOX_OK) {
        outbox__log(OUTBOX_LOG_ERROR, "consumer", "bad_message", err, "consumer", c->name, "topic",
                    topic, NULL);
        return OUTBOX_OK; /* can never succeed: acknowledge and move on */
    }
    outbox_err_t rc = outbox__poison_handle(c, &d, attrs, fn, opaque, retry_in_ms);
    outbox_envelope_term(&d.env);
    return rc;
}
