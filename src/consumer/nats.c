/* NATS JetStream consumer (nats.c): a durable pull consumer per topic.
 *
 * nats://[user:pass@]host[:port][,host[:port]...]  (nats+tls://... over TLS)
 *
 * For each topic, js_PullSubscribe on "<topic>.>" with durable name = the
 * group (characters a durable cannot hold become '_'): every instance of a
 * group shares the consumer and the server splits the messages among them.
 * The consumer is created (explicit ack, ack wait nats_ack_wait, deliver
 * all) when missing, and so is the stream when nats_stream_create is on, so
 * consumers may start before the first event is published.
 *
 * A message is acknowledged (AckSync: the server confirmed it) only after
 * the handler returned OUTBOX_OK (or it was dead-lettered), i.e. after its
 * transaction committed. When the handler fails, the message is negatively
 * acknowledged with a delay (its retry time: consumer_retry_backoff,
 * doubling per attempt; at least nats_nak_delay), and so are the later
 * messages of its key (consumer_poison.c holds the key, also when they come
 * back before it); other keys are handled on. JetStream may redeliver a
 * key's nak'ed messages in any order: the hold keeps the handler's order.
 * The holds are in memory: on close, the messages this instance nak'ed and
 * has not acknowledged since are nak'ed once more, in stream order and with
 * one delay, so that the next instance gets each key's messages back in
 * order (hand_back). A message an instance received but never acknowledged
 * (it crashed) is redelivered after nats_ack_wait. delivery.redelivered
 * comes from the JetStream metadata (delivery count > 1); delivery.topic is
 * the topic, not the subject.
 * Binary-mode messages (a ce-specversion header) are rebuilt from their ce-*
 * headers, content-type and traceparent.
 *
 * The connection is opened lazily and reconnects in the background; while
 * it is down, poll waits briefly and returns OUTBOX_ERR_BROKER. When fetches
 * stay empty, every 5 s the consumer checks that its durable still exists
 * (a server that lost its store forgets it) and subscribes again if not. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "consumer/consumer.h"
#include "consumer/consumer_decode.h"
#include "core/conf.h"
#include "core/log.h"
#include "core/util.h"
#include "broker/nats.h"

#define COMPONENT "consumer.nats"
#define CONNECT_TIMEOUT_MS 5000
#define MAX_ATTRS 64
#define CHECK_INTERVAL_MS 5000
#define NAKED_MAX 65536 /* nak'ed messages remembered for close() */

/* A message this instance nak'ed and has not acknowledged since. */
typedef struct naked_s {
    int t;         /* topic index */
    uint64_t sseq; /* stream sequence */
    char *reply;   /* its latest ack subject */
} naked_t;

typedef struct nats_consumer_s {
    outbox__nats_url_t url;
    char durable[128];
    natsConnection *nc;
    jsCtx *js;
    natsSubscription **subs; /* per topic; NULL until subscribed */
    int64_t *checked_ms;     /* per topic: last check that the durable still exists */
    int batch;
    int64_t ack_wait_ms, nak_delay_ms;
    int down;       /* log once per change */
    naked_t *naked; /* sorted by (t, sseq) */
    int nnaked, capnaked;
} nats_consumer_t;

static void drop_conn(outbox_consumer_t *c)
{
    nats_consumer_t *n = c->state;
    for (int i = 0; i < c->ntopics; i++) {
        natsSubscription_Destroy(n->subs[i]); /* keeps the durable consumer on the server */
        n->subs[i] = NULL;
    }
    if (n->nc)
        natsConnection_Close(n->nc);
    jsCtx_Destroy(n->js);
    n->js = NULL;
    natsConnection_Destroy(n->nc);
    n->nc = NULL;
}

/* ------------------------------------------------------------------------ */
/* Nak'ed messages, handed back in stream order on close                     */

/* Where (t, sseq) is in n->naked, or would go: 1 if it is there. */
static int naked_find(const nats_consumer_t *n, int t, uint64_t sseq, int *at)
{
    int lo = 0, hi = n->nnaked;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        const naked_t *e = &n->naked[mid];
        if (e->t < t || (e->t == t && e->sseq < sseq))
            lo = mid + 1;
        else
            hi = mid;
    }
    *at = lo;
    return lo < n->nnaked && n->naked[lo].t == t && n->naked[lo].sseq == sseq;
}

static uint64_t stream_seq(natsMsg *m)
{
    jsMsgMetaData *meta = NULL;
    uint64_t sseq = 0;
    if (natsMsg_GetMetaData(&meta, m) == NATS_OK) {
        sseq = meta->Sequence.Stream;
        jsMsgMetaData_Destroy(meta);
    }
    return sseq;
}

/* m (topic t) was nak'ed: remember its latest ack subject. Best effort:
 * without memory (or past NAKED_MAX messages) it is not handed back on
 * close. */
static void naked_put(nats_consumer_t *n, int t, natsMsg *m)
{
    uint64_t sseq = stream_seq(m);
    const char *reply = natsMsg_GetReply(m);
    char *r = sseq && reply ? strdup(reply) : NULL;
    if (!r)
        return;
    int at;
    if (naked_find(n, t, sseq, &at)) {
        free(n->naked[at].reply);
        n->naked[at].reply = r;
        return;
    }
    if (n->nnaked == n->capnaked) {
        int ncap = n->capnaked ? 2 * n->capnaked : 64;
        naked_t *nv = ncap <= NAKED_MAX ? realloc(n->naked, (size_t)ncap * sizeof(*nv)) : NULL;
        if (!nv) {
            free(r);
            return;
        }
        n->naked = nv;
        n->capnaked = ncap;
    }
    memmove(&n->naked[at + 1], &n->naked[at], (size_t)(n->nnaked - at) * sizeof(*n->naked));
    n->naked[at] = (naked_t){t, sseq, r};
    n->nnaked++;
}

/* m (topic t) was acknowledged. */
static void naked_drop(nats_consumer_t *n, int t, natsMsg *m)
{
    int at;
    if (!n->nnaked || !naked_find(n, t, stream_seq(m), &at))
        return;
    free(n->naked[at].reply);
    memmove(&n->naked[at], &n->naked[at + 1], (size_t)(n->nnaked - at - 1) * sizeof(*n->naked));
    n->nnaked--;
}

/* On close: naks every message this instance nak'ed and has not
 * acknowledged since once more, in stream order, all with the same delay.
 * The holds that keep a key's order (consumer_poison.c) are in memory and
 * end with this instance, and JetStream redelivers in the order the delays
 * run out. Left as they were (the head nak'ed for its backoff, a follower
 * for what was left of the head's wait, at least nats_nak_delay, so a
 * follower seen while the head was due but not back yet gets 50 ms while
 * the head, back and failed again, gets its next backoff), a follower can
 * come back before its head or an earlier follower, and the next instance,
 * holding nothing, hands it to the handler first. Nak'ed anew one after the
 * other with one delay, they come back in stream order. The delay is never
 * 0: a plain nak leaves a message already due where it is in the server's
 * redelivery queue. The server ignores naks of messages acknowledged since
 * (by another instance). */
static void hand_back(outbox_consumer_t *c)
{
    nats_consumer_t *n = c->state;
    if (!n->nnaked || !n->nc || natsConnection_Status(n->nc) != NATS_CONN_STATUS_CONNECTED)
        return;
    char body[64];
    int64_t delay = n->nak_delay_ms > 0 ? n->nak_delay_ms : 1;
    int len = snprintf(body, sizeof(body), "-NAK {\"delay\": %lld}", (long long)delay * 1000000);
    int sent = 0;
    for (int i = 0; i < n->nnaked; i++)
        if (natsConnection_Publish(n->nc, n->naked[i].reply, body, len) == NATS_OK)
            sent++;
    natsStatus st = natsConnection_FlushTimeout(n->nc, CONNECT_TIMEOUT_MS);
    char cnt[16];
    snprintf(cnt, sizeof(cnt), "%d", sent);
    outbox__log(st == NATS_OK ? OUTBOX_LOG_DEBUG : OUTBOX_LOG_WARN, COMPONENT, "handed_back",
                st == NATS_OK
                    ? "unacknowledged messages nak'ed again in stream order"
                    : "unacknowledged messages nak'ed again in stream order: flush failed",
                "consumer", c->name, "messages", cnt, NULL);
}

static void naked_term(nats_consumer_t *n)
{
    for (int i = 0; i < n->nnaked; i++)
        free(n->naked[i].reply);
    free(n->naked);
    n->naked = NULL;
    n->nnaked = n->capnaked = 0;
}

static outbox_err_t nats_c_open(outbox_consumer_t *c, char *errstr, size_t errstr_size)
{
    nats_consumer_t *n = calloc(1, sizeof(*n));
    if (!n || !(n->subs = calloc((size_t)c->ntopics, sizeof(*n->subs))) ||
        !(n->checked_ms = calloc((size_t)c->ntopics, sizeof(*n->checked_ms)))) {
        if (n)
            free(n->subs);
        free(n);
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    }
    outbox_err_t err = outbox__nats_parse_url(c->url, &n->url, errstr, errstr_size);
    if (err) {
        free(n->subs);
        free(n->checked_ms);
        free(n);
        return err;
    }
    snprintf(n->url.ca_file, sizeof(n->url.ca_file), "%s",
             outbox__conf_str(c->conf, "nats_ca_file"));
    size_t i = 0;
    for (; c->group[i] && i + 1 < sizeof(n->durable); i++) {
        unsigned char ch = (unsigned char)c->group[i];
        n->durable[i] = (ch == '.' || ch == '*' || ch == '>' || ch == '/' || ch == '\\' ||
                         isspace(ch) || ch < 32 || ch >= 127)
                            ? '_'
                            : (char)ch;
    }
    n->durable[i] = '\0';
    for (int t = 0; t < c->ntopics; t++) {
        if (!*c->topics[t] || strpbrk(c->topics[t], " \t\r\n*>")) {
            free(n->subs);
            free(n->checked_ms);
            free(n);
            return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                               "topic \"%s\" cannot form a NATS subject", c->topics[t]);
        }
    }
    n->batch = (int)outbox__conf_int(c->conf, "nats_fetch_batch");
    n->ack_wait_ms = outbox__conf_ms(c->conf, "nats_ack_wait");
    n->nak_delay_ms = outbox__conf_ms(c->conf, "nats_nak_delay");
    c->state = n;
    return OUTBOX_OK;
}

static outbox_err_t ensure_conn(outbox_consumer_t *c, int timeout_ms)
{
    nats_consumer_t *n = c->state;
    if (n->nc) {
        natsConnStatus cs = natsConnection_Status(n->nc);
        if (cs == NATS_CONN_STATUS_CONNECTED)
            return OUTBOX_OK;
        if (cs != NATS_CONN_STATUS_CLOSED) {
            /* nats.c is reconnecting: don't let the caller spin */
            outbox__sleep_ms(timeout_ms < 200 ? (timeout_ms > 0 ? timeout_ms : 1) : 200, NULL);
            if (natsConnection_Status(n->nc) == NATS_CONN_STATUS_CONNECTED)
                return OUTBOX_OK;
            return outbox__err(OUTBOX_ERR_BROKER, c->errstr, sizeof(c->errstr),
                               "NATS connection to %s is down (reconnecting)", n->url.servers[0]);
        }
        drop_conn(c);
    }
    outbox_err_t err = outbox__nats_connect(&n->url, c->name, CONNECT_TIMEOUT_MS, &n->nc, c->errstr,
                                            sizeof(c->errstr));
    if (err)
        return err;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = CONNECT_TIMEOUT_MS;
    natsStatus st = natsConnection_JetStream(&n->js, n->nc, &jo);
    if (st != NATS_OK) {
        drop_conn(c);
        return outbox__err(OUTBOX_ERR_BROKER, c->errstr, sizeof(c->errstr),
                           "NATS JetStream context: %s", natsStatus_GetText(st));
    }
    return OUTBOX_OK;
}

static outbox_err_t ensure_sub(outbox_consumer_t *c, int t)
{
    nats_consumer_t *n = c->state;
    if (n->subs[t])
        return OUTBOX_OK;
    outbox_err_t err = outbox__nats_ensure_stream(n->js, c->conf, c->topics[t], CONNECT_TIMEOUT_MS,
                                                  c->errstr, sizeof(c->errstr));
    if (err)
        return OUTBOX_ERR_BROKER;
    char filter[512];
    snprintf(filter, sizeof(filter), "%s.>", c->topics[t]);
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.ManualAck = true;
    so.Config.AckPolicy = js_AckExplicit;
    so.Config.DeliverPolicy = js_DeliverAll;
    so.Config.AckWait = n->ack_wait_ms * 1000000;
    jsErrCode jerr = 0;
    natsStatus st = js_PullSubscribe(&n->subs[t], n->js, filter, n->durable, NULL, &so, &jerr);
    if (st != NATS_OK) {
        char txt[200];
        outbox__nats_errtext(st, txt, sizeof(txt));
        n->subs[t] = NULL;
        return outbox__err(OUTBOX_ERR_BROKER, c->errstr, sizeof(c->errstr),
                           "cannot create JetStream pull consumer %s on %s: %s (code %d)",
                           n->durable, filter, txt, (int)jerr);
    }
    outbox__log(OUTBOX_LOG_INFO, COMPONENT, "subscribed", "JetStream pull consumer ready",
                "consumer", c->name, "durable", n->durable, "filter", filter, NULL);
    return OUTBOX_OK;
}

/* Binary mode: collects "ce-*" headers (plus content-type as
 * ce-datacontenttype and traceparent as ce-traceparent) into attrs, a
 * NULL-terminated key/value list. Returns 1 if the message is binary mode. */
static int binary_attrs(natsMsg *m, const char **attrs, size_t max)
{
    const char *v = NULL;
    if (natsMsgHeader_Get(m, "ce-specversion", &v) != NATS_OK)
        return 0;
    const char **keys = NULL;
    int nk = 0;
    size_t k = 0;
    if (natsMsgHeader_Keys(m, &keys, &nk) == NATS_OK) {
        for (int i = 0; i < nk && k + 3 < max; i++) {
            const char *val = NULL;
            if (natsMsgHeader_Get(m, keys[i], &val) != NATS_OK || !val)
                continue;
            if (!strncasecmp(keys[i], "ce-", 3)) {
                attrs[k++] = keys[i];
                attrs[k++] = val;
            } else if (!strcasecmp(keys[i], "traceparent")) {
                attrs[k++] = "ce_traceparent";
                attrs[k++] = val;
            } else if (!strcasecmp(keys[i], "content-type")) {
                attrs[k++] = "ce_datacontenttype";
                attrs[k++] = val;
            }
        }
        free((void *)keys);
    }
    attrs[k] = NULL;
    return 1;
}

outbox_err_t outbox__consumer_nats_handle(outbox_consumer_t *c, const char *topic, natsMsg *m,
                                          outbox_consumer_handler_fn fn, void *opaque,
                                          int64_t *retry_in)
{
    int redelivered = 0;
    jsMsgMetaData *meta = NULL;
    if (natsMsg_GetMetaData(&meta, m) == NATS_OK) {
        redelivered = meta->NumDelivered > 1;
        jsMsgMetaData_Destroy(meta);
    }
    const char *attrs[2 * MAX_ATTRS + 1];
    int bin = binary_attrs(m, attrs, sizeof(attrs) / sizeof(attrs[0]));
    const char *data = natsMsg_GetData(m);
    int len = natsMsg_GetDataLength(m);
    return outbox__consumer_dispatch(c, topic, data ? data : "", (size_t)(len > 0 ? len : 0),
                                     bin ? attrs : NULL, redelivered, fn, opaque, retry_in);
}

/* Connects and subscribes every topic; logs the broker going down or
 * coming back once per change. OUTBOX_ERR_BROKER (c->errstr set) when down. */
static outbox_err_t ensure_all(outbox_consumer_t *c, int timeout_ms)
{
    nats_consumer_t *n = c->state;
    outbox_err_t err = ensure_conn(c, timeout_ms);
    for (int t = 0; !err && t < c->ntopics; t++)
        err = ensure_sub(c, t);
    if (err) {
        if (!n->down)
            outbox__log(OUTBOX_LOG_WARN, COMPONENT, "broker_down", c->errstr, "consumer", c->name,
                        NULL);
        n->down = 1;
        return OUTBOX_ERR_BROKER;
    }
    if (n->down) {
        outbox__log(OUTBOX_LOG_INFO, COMPONENT, "broker_up", "NATS reachable again", "consumer",
                    c->name, NULL);
        for (int t = 0; t < c->ntopics; t++)
            n->checked_ms[t] = 0; /* the server may have come back without our durable */
    }
    n->down = 0;
    return OUTBOX_OK;
}

/* After an empty fetch: every CHECK_INTERVAL_MS, checks that topic t's
 * durable still exists (a server that lost its state forgets it, and
 * fetches to a missing consumer just time out); if not, drops the
 * subscription so the next poll subscribes again. */
static void check_durable(outbox_consumer_t *c, int t)
{
    nats_consumer_t *n = c->state;
    int64_t now = outbox__now_ms();
    if (now - n->checked_ms[t] < CHECK_INTERVAL_MS)
        return;
    n->checked_ms[t] = now;
    jsConsumerInfo *ci = NULL;
    jsErrCode cerr = 0;
    natsStatus cs = natsSubscription_GetConsumerInfo(&ci, n->subs[t], NULL, &cerr);
    jsConsumerInfo_Destroy(ci);
    if (cs != NATS_NOT_FOUND && cerr != JSConsumerNotFoundErr && cerr != JSStreamNotFoundErr)
        return;
    outbox__log(OUTBOX_LOG_WARN, COMPONENT, "consumer_lost",
                "JetStream consumer no longer exists; subscribing again", "consumer", c->name,
                "durable", n->durable, "topic", c->topics[t], NULL);
    natsSubscription_Destroy(n->subs[t]);
    n->subs[t] = NULL;
}

/* Handles a fetched list in order: each message is acknowledged (AckSync)
 * after its handler succeeded; one that is not done is handed back (nak,
 * with a delay until its retry). OUTBOX_ERR_BROKER when an acknowledgement
 * failed: the rest of the list is handed back at once. */
static outbox_err_t handle_list(outbox_consumer_t *c, int t, natsMsgList *list,
                                outbox_consumer_handler_fn fn, void *opaque)
{
    nats_consumer_t *n = c->state;
    outbox_err_t rc = OUTBOX_OK;
    int failed = 0;
    for (int i = 0; i < list->Count; i++) {
        natsMsg *m = list->Msgs[i];
        int64_t retry_in = n->nak_delay_ms;
        /* Handed to the handler; when it is not done, offered again in retry_in. */
        if (!failed &&
            outbox__consumer_nats_handle(c, c->topics[t], m, fn, opaque, &retry_in) == OUTBOX_OK) {
            jsOptions jo;
            jsOptions_Init(&jo);
            jo.Wait = CONNECT_TIMEOUT_MS;
            jsErrCode jerr = 0;
            natsStatus as = natsMsg_AckSync(m, &jo, &jerr);
            if (as == NATS_OK) {
                naked_drop(n, t, m);
            } else {
                /* Redelivered later; the inbox makes the second delivery a no-op. */
                char txt[200];
                outbox__nats_errtext(as, txt, sizeof(txt));
                outbox__err(OUTBOX_ERR_BROKER, c->errstr, sizeof(c->errstr),
                            "JetStream ack failed: %s", txt);
                outbox__log(OUTBOX_LOG_WARN, COMPONENT, "ack_failed", c->errstr, "consumer",
                            c->name, NULL);
                rc = OUTBOX_ERR_BROKER;
                failed = 1;
            }
            continue;
        }
        if (retry_in < n->nak_delay_ms)
            retry_in = n->nak_delay_ms;
        if (retry_in > 0)
            natsMsg_NakWithDelay(m, retry_in, NULL);
        else
            natsMsg_Nak(m, NULL);
        naked_put(n, t, m);
    }
    return rc;
}

static outbox_err_t nats_c_poll(outbox_consumer_t *c, int timeout_ms, outbox_consumer_handler_fn fn,
                                void *opaque)
{
    nats_consumer_t *n = c->state;
    if (ensure_all(c, timeout_ms) != OUTBOX_OK)
        return OUTBOX_ERR_BROKER;
    int64_t per = timeout_ms / c->ntopics;
    if (per < 1)
        per = 1;
    outbox_err_t rc = OUTBOX_OK;
    for (int t = 0; t < c->ntopics; t++) {
        natsMsgList list = {0};
        jsErrCode jerr = 0;
        natsStatus st = natsSubscription_Fetch(&list, n->subs[t], n->batch, per, &jerr);
        if (st == NATS_TIMEOUT && list.Count == 0) {
            check_durable(c, t); /* nothing new, or the durable is gone */
            continue;
        }
        if (st != NATS_OK && list.Count == 0) {
            char txt[200];
            outbox__nats_errtext(st, txt, sizeof(txt));
            outbox__err(OUTBOX_ERR_BROKER, c->errstr, sizeof(c->errstr),
                        "JetStream fetch on %s.> failed: %s (code %d)", c->topics[t], txt,
                        (int)jerr);
            /* The consumer may be gone (server lost its state): subscribe again next time. */
            natsSubscription_Destroy(n->subs[t]);
            n->subs[t] = NULL;
            rc = OUTBOX_ERR_BROKER;
            continue;
        }
        if (handle_list(c, t, &list, fn, opaque) != OUTBOX_OK)
            rc = OUTBOX_ERR_BROKER;
        natsMsgList_Destroy(&list);
    }
    return rc;
}

static void nats_c_close(outbox_consumer_t *c)
{
    nats_consumer_t *n = c->state;
    if (!n)
        return;
    hand_back(c);
    drop_conn(c);
    naked_term(n);
    free(n->subs);
    free(n->checked_ms);
    free(n);
    c->state = NULL;
}

static const char *const nats_c_schemes[] = {"nats", "nats+tls", NULL};

const outbox_consumer_ops_t outbox__consumer_nats_ops = {
    .name = "nats",
    .schemes = nats_c_schemes,
    .open = nats_c_open,
    .poll = nats_c_poll,
    .close = nats_c_close,
};
