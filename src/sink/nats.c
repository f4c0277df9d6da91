/* NATS JetStream sink (nats.c).
 *
 * nats://[user:pass@]host[:port][,host[:port]...]      (token: nats://:token@host, so logs redact
 * it); nats+tls://... over TLS (broker/nats.h, nats_ca_file)
 *
 * Each event goes to subject "<topic>.<type>" with header Nats-Msg-Id = the
 * event id: the stream drops a re-publish of an id it stored within its
 * duplicate window (nats_dup_window), so a relay retry after a lost
 * acknowledgement does not duplicate. An event counts as confirmed when its
 * PubAck arrives; a PubAck flagged Duplicate counts as confirmed too.
 *
 * Structured mode (default): body = CloudEvents JSON, header content-type
 * application/cloudevents+json. Binary mode (content_mode=binary): body =
 * the data, attributes as ce-* headers, content-type application/json.
 * Both modes carry the W3C "traceparent" header when the event has one and
 * the event's own headers (core/headers.h: a string value as it is, any
 * other JSON value as its compact JSON text; reserved names and values with
 * a line break are left out).
 *
 * Publishing is asynchronous (js_PublishMsgAsync): the engine hands a call
 * at most one event per key, so the whole call is sent at once and costs
 * one round trip; each event gets its own result. The call is bounded by
 * the engine's deadline (sink->deadline_ms, at most publish_timeout):
 * events not sent before it are reported not sent (OUTBOX_ERR_TIMEOUT),
 * unanswered ones time out.
 *
 * With nats_stream_create (default) the stream <TOPIC> with subjects
 * "<topic>.>" is created on first use. The connection is opened lazily (a
 * relay starts while NATS is down) and reconnects in the background. */
#define _GNU_SOURCE /* qsort_r */
#include "broker/nats.h"

#include <ctype.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/conf.h"
#include "core/headers.h"
#include "core/log.h"
#include "core/util.h"
#include "sink/sink.h"

#define COMPONENT "sink.nats"

extern const outbox_sink_ops_t outbox__sink_nats_ops;

/* ------------------------------------------------------------------------ */
/* The sink                                                                  */

enum { SLOT_WAIT = 0, SLOT_INFLIGHT, SLOT_DONE };

typedef struct nats_sink_s {
    outbox__nats_url_t url;
    int binary;
    natsConnection *nc;
    jsCtx *js;
    char **streams_ok; /* topics whose stream is known to exist on this connection */
    int nstreams_ok;

    pthread_mutex_t mu; /* guards the fields below against the ack callback thread */
    pthread_cond_t cv;
    outbox_pub_result_t *res; /* the call in progress (NULL between calls) */
    int *slot;
    const char **ids; /* ids of the call */
    size_t *by_id;    /* indexes sorted by id, for the ack callback */
    size_t n;
    size_t inflight;
    int no_responders; /* some publish found no stream */
    uint64_t duplicates;
} nats_sink_t;

static void forget_streams(nats_sink_t *s)
{
    for (int i = 0; i < s->nstreams_ok; i++)
        free(s->streams_ok[i]);
    s->nstreams_ok = 0;
}

static void drop_conn(nats_sink_t *s)
{
    if (s->nc)
        natsConnection_Close(s->nc);
    jsCtx_Destroy(s->js);
    s->js = NULL;
    natsConnection_Destroy(s->nc);
    s->nc = NULL;
    forget_streams(s);
    free(s->streams_ok);
    s->streams_ok = NULL;
}

/* Finds the call's indexes whose id is id: [*lo, *hi). Caller holds mu. */
static void find_id(nats_sink_t *s, const char *id, size_t *lo, size_t *hi)
{
    size_t a = 0, b = s->n;
    while (a < b) {
        size_t mid = a + (b - a) / 2;
        if (strcmp(s->ids[s->by_id[mid]], id) < 0)
            a = mid + 1;
        else
            b = mid;
    }
    *lo = a;
    while (b < s->n && !strcmp(s->ids[s->by_id[b]], id))
        b++;
    *hi = b < a ? a : b;
}

static void set_result(outbox_pub_result_t *r, natsStatus st, jsErrCode code, const char *text)
{
    if (st == NATS_OK && !code) {
        r->err = OUTBOX_OK;
        r->errstr[0] = '\0';
        return;
    }
    if (code == JSStreamMessageExceedsMaximumErr || st == NATS_MAX_PAYLOAD) {
        r->err = OUTBOX_ERR_REJECTED;
    } else if (st == NATS_TIMEOUT) {
        r->err = OUTBOX_ERR_TIMEOUT;
    } else {
        r->err = OUTBOX_ERR_BROKER;
    }
    if (st == NATS_NO_RESPONDERS)
        snprintf(r->errstr, sizeof(r->errstr),
                 "NATS: no JetStream stream answered (no responders)");
    else if (code)
        snprintf(r->errstr, sizeof(r->errstr), "JetStream error %d: %s", (int)code,
                 text ? text : "");
    else if (text && !strncmp(text, natsStatus_GetText(st), strlen(natsStatus_GetText(st))))
        snprintf(r->errstr, sizeof(r->errstr), "NATS: %s", text); /* already says the status */
    else
        snprintf(r->errstr, sizeof(r->errstr), "NATS: %s%s%s", natsStatus_GetText(st),
                 text ? ": " : "", text ? text : "");
}

static void on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    nats_sink_t *s = closure;
    const char *id = NULL;
    natsMsgHeader_Get(msg, "Nats-Msg-Id", &id);
    pthread_mutex_lock(&s->mu);
    if (id && s->res) {
        size_t lo, hi;
        find_id(s, id, &lo, &hi);
        for (size_t k = lo; k < hi; k++) {
            size_t i = s->by_id[k];
            if (s->slot[i] != SLOT_INFLIGHT)
                continue;
            if (pa) {
                set_result(&s->res[i], NATS_OK, 0, NULL);
                if (pa->Duplicate)
                    s->duplicates++;
            } else {
                set_result(&s->res[i], pae ? pae->Err : NATS_ERR, pae ? pae->ErrCode : 0,
                           pae ? pae->ErrText : NULL);
                if (pae && pae->Err == NATS_NO_RESPONDERS)
                    s->no_responders = 1;
            }
            s->slot[i] = SLOT_DONE;
            s->inflight--;
        }
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    natsMsg_Destroy(msg);
}

/* Connects (within timeout_ms) and creates the JetStream context, unless
 * connected. OUTBOX_ERR_BROKER while nats.c is reconnecting. */
static outbox_err_t ensure_conn(outbox_sink_t *sink, int64_t timeout_ms, char *errstr,
                                size_t errstr_size)
{
    nats_sink_t *s = sink->state;
    if (s->nc) {
        natsConnStatus cs = natsConnection_Status(s->nc);
        if (cs == NATS_CONN_STATUS_CONNECTED)
            return OUTBOX_OK;
        if (cs != NATS_CONN_STATUS_CLOSED)
            return outbox__err(OUTBOX_ERR_BROKER, errstr, errstr_size,
                               "NATS connection to %s is down (reconnecting)", s->url.servers[0]);
        drop_conn(s);
    }
    if (timeout_ms > sink->timeout_ms)
        timeout_ms = sink->timeout_ms;
    if (timeout_ms < 1)
        timeout_ms = 1;
    outbox_err_t err =
        outbox__nats_connect(&s->url, sink->name, timeout_ms, &s->nc, errstr, errstr_size);
    if (err)
        return err;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = sink->timeout_ms;
    jo.PublishAsync.MaxPending = 1 << 20; /* a whole batch is in flight at once */
    jo.PublishAsync.StallWait = sink->timeout_ms;
    jo.PublishAsync.AckHandler = on_ack;
    jo.PublishAsync.AckHandlerClosure = s;
    natsStatus st = natsConnection_JetStream(&s->js, s->nc, &jo);
    if (st != NATS_OK) {
        drop_conn(s);
        return outbox__err(OUTBOX_ERR_BROKER, errstr, errstr_size, "NATS JetStream context: %s",
                           natsStatus_GetText(st));
    }
    char url[300] = "";
    natsConnection_GetConnectedUrl(s->nc, url, sizeof(url));
    outbox__log(OUTBOX_LOG_INFO, COMPONENT, "connected", "connected to NATS", "worker", sink->name,
                "server", url, NULL);
    return OUTBOX_OK;
}

/* Makes sure topic's stream exists (cached per connection), asking the
 * server within timeout_ms. */
static outbox_err_t ensure_stream(outbox_sink_t *sink, const char *topic, int64_t timeout_ms,
                                  char *errstr, size_t errstr_size)
{
    nats_sink_t *s = sink->state;
    for (int i = 0; i < s->nstreams_ok; i++)
        if (!strcmp(s->streams_ok[i], topic))
            return OUTBOX_OK;
    if (timeout_ms < 1)
        return outbox__err(OUTBOX_ERR_BROKER, errstr, errstr_size,
                           "no time left to check the stream of topic %s", topic);
    outbox_err_t err =
        outbox__nats_ensure_stream(s->js, sink->conf, topic, timeout_ms, errstr, errstr_size);
    if (err)
        return err;
    char **grown = realloc(s->streams_ok, sizeof(char *) * (size_t)(s->nstreams_ok + 1));
    if (!grown)
        return OUTBOX_OK; /* only the cache is lost */
    s->streams_ok = grown;
    if ((s->streams_ok[s->nstreams_ok] = strdup(topic)))
        s->nstreams_ok++;
    return OUTBOX_OK;
}

static outbox_err_t nats_open(outbox_sink_t *sink, char *errstr, size_t errstr_size)
{
    nats_sink_t *s = calloc(1, sizeof(*s));
    if (!s)
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    outbox_err_t err = outbox__nats_parse_url(sink->url, &s->url, errstr, errstr_size);
    if (err) {
        free(s);
        return err;
    }
    snprintf(s->url.ca_file, sizeof(s->url.ca_file), "%s",
             outbox__conf_str(sink->conf, "nats_ca_file"));
    s->binary = !strcmp(outbox__conf_str(sink->conf, "content_mode"), "binary");
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    sink->state = s;
    return OUTBOX_OK;
}

/* A subject token must be non-empty and free of white space and wildcards. */
static int subject_ok(const char *p)
{
    if (!p || !*p || *p == '.')
        return 0;
    for (; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (isspace(c) || c == '*' || c == '>' || (c == '.' && (p[1] == '.' || p[1] == '\0')))
            return 0;
    }
    return 1;
}

static int header_name_ok(const char *k)
{
    if (!*k || !strncasecmp(k, "Nats-", 5) || !strcasecmp(k, "content-type") ||
        !strncasecmp(k, "ce-", 3) || !strcasecmp(k, "traceparent"))
        return 0; /* reserved: set by the sink */
    for (; *k; k++)
        if (*k <= ' ' || *k == ':' || (unsigned char)*k >= 127)
            return 0;
    return 1;
}

static int header_value_ok(const char *v)
{
    return !strpbrk(v, "\r\n");
}

/* Creates the message for m: subject "<topic>.<type>", the body (the
 * document, or the data in binary mode). OUTBOX_ERR_REJECTED (a permanent
 * problem with this event) or OUTBOX_ERR_NOMEM, errstr set. */
static outbox_err_t create_msg(nats_sink_t *s, const outbox_msg_t *m, natsMsg **out, char *errstr,
                               size_t errstr_size)
{
    if (!subject_ok(m->topic) || !subject_ok(m->type))
        return outbox__err(OUTBOX_ERR_REJECTED, errstr, errstr_size,
                           "topic \"%s\" / type \"%s\" cannot form a NATS subject (empty token, "
                           "white space, '*' or '>')",
                           m->topic ? m->topic : "", m->type ? m->type : "");
    if (s->binary && (strpbrk(m->key ? m->key : "", "\r\n") ||
                      strpbrk(m->source ? m->source : "", "\r\n") || strpbrk(m->type, "\r\n")))
        return outbox__err(
            OUTBOX_ERR_REJECTED, errstr, errstr_size,
            "event %s: a line break in key/source/type cannot travel as a ce-* header "
            "(binary mode); use content_mode=structured",
            m->id);
    const char *body = s->binary ? (m->payload ? m->payload : "null") : m->envelope;
    size_t len = s->binary ? strlen(body) : m->envelope_len;
    if (len > INT_MAX)
        return outbox__err(OUTBOX_ERR_REJECTED, errstr, errstr_size,
                           "event body of %zu bytes is too large", len);
    size_t sl = strlen(m->topic) + strlen(m->type) + 2;
    char stack[256];
    char *subj = sl <= sizeof(stack) ? stack : malloc(sl);
    if (!subj)
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    snprintf(subj, sl, "%s.%s", m->topic, m->type);
    natsStatus st = natsMsg_Create(out, subj, NULL, body, (int)len);
    if (subj != stack)
        free(subj);
    if (st != NATS_OK)
        return outbox__err(st == NATS_NO_MEMORY ? OUTBOX_ERR_NOMEM : OUTBOX_ERR_REJECTED, errstr,
                           errstr_size, "cannot build NATS message: %s", natsStatus_GetText(st));
    return OUTBOX_OK;
}

/* Sets the headers the sink owns: Nats-Msg-Id, content-type, ce-* (binary
 * mode), traceparent. */
static natsStatus set_attr_headers(nats_sink_t *s, const outbox_msg_t *m, natsMsg *msg)
{
    natsStatus st = NATS_OK;
#define HDR(k, v)                                                                                  \
    do {                                                                                           \
        if (st == NATS_OK && (v))                                                                  \
            st = natsMsgHeader_Set(msg, (k), (v));                                                 \
    } while (0)
    HDR("Nats-Msg-Id", m->id);
    if (s->binary) {
        HDR("content-type", "application/json");
        HDR("ce-specversion", "1.0");
        HDR("ce-id", m->id);
        HDR("ce-source", m->source && *m->source ? m->source : "/outbox");
        HDR("ce-type", m->type);
        HDR("ce-time", m->time);
        HDR("ce-subject", m->key);
        HDR("ce-partitionkey", m->key);
    } else {
        HDR("content-type", "application/cloudevents+json");
    }
    if (m->traceparent && *m->traceparent && header_value_ok(m->traceparent))
        HDR("traceparent", m->traceparent);
#undef HDR
    return st;
}

typedef struct event_headers_s {
    natsMsg *msg;
    natsStatus st;
} event_headers_t;

/* outbox__headers_each callback: one of the event's own headers. Reserved
 * names, names a NATS header cannot have and values with a line break or a
 * NUL byte are left out. natsMsgHeader_Set copies name and value. */
static outbox_err_t add_event_header(void *opaque, const char *name, const char *value, size_t len)
{
    event_headers_t *eh = opaque;
    if (!header_name_ok(name) || strlen(value) != len || !header_value_ok(value))
        return OUTBOX_OK;
    eh->st = natsMsgHeader_Set(eh->msg, name, value);
    return eh->st == NATS_OK ? OUTBOX_OK : OUTBOX_ERR_BROKER;
}

/* Builds the NATS message for m. Returns OUTBOX_OK or OUTBOX_ERR_REJECTED
 * (a permanent problem with this event) / OUTBOX_ERR_NOMEM, errstr set. */
static outbox_err_t build_msg(nats_sink_t *s, const outbox_msg_t *m, natsMsg **out, char *errstr,
                              size_t errstr_size)
{
    *out = NULL;
    natsMsg *msg = NULL;
    outbox_err_t err = create_msg(s, m, &msg, errstr, errstr_size);
    if (err)
        return err;
    event_headers_t eh = {.msg = msg, .st = set_attr_headers(s, m, msg)};
    if (eh.st == NATS_OK &&
        outbox__headers_each(m->headers, add_event_header, &eh) == OUTBOX_ERR_NOMEM)
        eh.st = NATS_NO_MEMORY;
    if (eh.st != NATS_OK) {
        natsMsg_Destroy(msg);
        return outbox__err(eh.st == NATS_NO_MEMORY ? OUTBOX_ERR_NOMEM : OUTBOX_ERR_REJECTED, errstr,
                           errstr_size, "cannot build NATS message: %s", natsStatus_GetText(eh.st));
    }
    *out = msg;
    return OUTBOX_OK;
}

static int cmp_by_id(const void *a, const void *b, void *msgs)
{
    const outbox_msg_t *m = msgs;
    return strcmp(m[*(const size_t *)a].id, m[*(const size_t *)b].id);
}

static void fail_all(outbox_pub_result_t *res, size_t n, outbox_err_t err, const char *why)
{
    for (size_t i = 0; i < n; i++) {
        res[i].err = err;
        res[i].not_sent = 0;
        snprintf(res[i].errstr, sizeof(res[i].errstr), "%s", why);
    }
}

/* One publish call. slot[], res[] and the id index are shared with
 * on_ack through the sink state while the call runs (under s->mu). */
typedef struct call_s {
    outbox_msg_t *msgs;
    outbox_pub_result_t *res;
    size_t n;
    int *slot; /* per event: SLOT_* */
    const char **ids;
    size_t *by_id; /* event indexes sorted by id */
    int64_t deadline;
    int stopped; /* NATS stopped answering: send nothing more */
} call_t;

static void call_term(call_t *c)
{
    free(c->slot);
    free(c->ids);
    free(c->by_id);
}

static int call_init(call_t *c, outbox_msg_t *msgs, size_t n, outbox_pub_result_t *res,
                     int64_t deadline)
{
    memset(c, 0, sizeof(*c));
    c->msgs = msgs;
    c->res = res;
    c->n = n;
    c->deadline = deadline;
    c->slot = calloc(n, sizeof(*c->slot));
    c->ids = calloc(n, sizeof(*c->ids));
    c->by_id = calloc(n, sizeof(*c->by_id));
    if (!c->slot || !c->ids || !c->by_id) {
        call_term(c);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        c->ids[i] = msgs[i].id;
        c->by_id[i] = i;
        memset(&res[i], 0, sizeof(res[i]));
    }
    qsort_r(c->by_id, n, sizeof(*c->by_id), cmp_by_id, msgs);
    return 0;
}

/* Hands every event to nats.c (asynchronous publish), in order, until the
 * deadline: an event that cannot be built fails alone; events left when
 * the deadline passes are out of time (not sent). Returns the number
 * handed over; sets c->stopped on a connection-level failure. */
static size_t send_all(nats_sink_t *s, call_t *c)
{
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = c->deadline - outbox__now_ms();
    size_t sent = 0;
    for (size_t i = 0; i < c->n && !c->stopped; i++) {
        outbox_pub_result_t *r = &c->res[i];
        if (outbox__now_ms() >= c->deadline) {
            c->slot[i] = SLOT_DONE;
            outbox__sink_out_of_time(r, 1);
            continue;
        }
        natsMsg *nm = NULL;
        outbox_err_t be = build_msg(s, &c->msgs[i], &nm, r->errstr, sizeof(r->errstr));
        if (be) {
            c->slot[i] = SLOT_DONE;
            r->err = be == OUTBOX_ERR_NOMEM ? OUTBOX_ERR_BROKER : be;
            continue;
        }
        pthread_mutex_lock(&s->mu);
        c->slot[i] = SLOT_INFLIGHT;
        s->inflight++;
        pthread_mutex_unlock(&s->mu);
        natsStatus st = js_PublishMsgAsync(s->js, &nm, &po);
        if (st == NATS_OK) {
            sent++;
            continue;
        }
        char txt[200];
        outbox__nats_errtext(st, txt, sizeof(txt));
        pthread_mutex_lock(&s->mu);
        if (c->slot[i] == SLOT_INFLIGHT) {
            c->slot[i] = SLOT_DONE;
            s->inflight--;
            set_result(r, st, 0, txt);
        }
        pthread_mutex_unlock(&s->mu);
        natsMsg_Destroy(nm);
        if (outbox__nats_is_broker_status(st))
            c->stopped = 1;
    }
    return sent;
}

/* Waits for the PubAcks of what was sent, up to the call's deadline; what
 * is still unanswered then is a timeout. */
static void await_acks(outbox_sink_t *sink, call_t *c)
{
    nats_sink_t *s = sink->state;
    /* Push the messages out now: nats.c's flusher would otherwise sit on
     * them for about a millisecond. (js_PublishAsyncComplete polls, equally
     * slow: on_ack signals each PubAck instead.) */
    int64_t left = c->deadline - outbox__now_ms();
    natsConnection_FlushTimeout(s->nc, left > 0 ? left : 1);
    pthread_mutex_lock(&s->mu);
    while (s->inflight > 0 && outbox__now_ms() < c->deadline) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 10 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    size_t unanswered = s->inflight;
    pthread_mutex_unlock(&s->mu);
    if (!unanswered)
        return;
    /* Take the unanswered messages back: late PubAcks are then ignored,
     * and a retry of one the server did store is dropped by Nats-Msg-Id. */
    natsMsgList pending = {0};
    if (js_PublishAsyncGetPendingList(&pending, s->js) == NATS_OK)
        natsMsgList_Destroy(&pending);
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < c->n; i++)
        if (c->slot[i] == SLOT_INFLIGHT) {
            c->slot[i] = SLOT_DONE;
            c->res[i].err = OUTBOX_ERR_TIMEOUT;
            snprintf(c->res[i].errstr, sizeof(c->res[i].errstr),
                     "no JetStream PubAck before the publish deadline");
        }
    s->inflight = 0;
    pthread_mutex_unlock(&s->mu);
    c->stopped = 1;
}

/* Fills in events never sent and decides the call's result: when nothing
 * got through and nothing was refused for good, NATS is unreachable
 * (OUTBOX_ERR_BROKER for all, nothing charged an attempt). */
static outbox_err_t call_verdict(call_t *c)
{
    size_t nok = 0, nperm = 0;
    const char *first_err = NULL;
    for (size_t i = 0; i < c->n; i++) {
        outbox_pub_result_t *r = &c->res[i];
        if (c->slot[i] == SLOT_WAIT) {
            r->err = OUTBOX_ERR_BROKER;
            snprintf(r->errstr, sizeof(r->errstr), "not sent: NATS stopped answering");
        }
        if (r->err == OUTBOX_OK)
            nok++;
        else if (r->err == OUTBOX_ERR_REJECTED)
            nperm++;
        else if (!first_err)
            first_err = r->errstr;
    }
    if (nok || nperm)
        return OUTBOX_OK;
    char why[256];
    snprintf(why, sizeof(why), "%s", first_err ? first_err : "NATS did not answer");
    fail_all(c->res, c->n, OUTBOX_ERR_BROKER, why);
    return OUTBOX_ERR_BROKER;
}

/* Connects and makes sure the streams of the call's topics exist, within
 * the deadline. OUTBOX_ERR_BROKER (errstr set) when that fails: not the
 * events' fault, nothing is charged. */
static outbox_err_t prepare(outbox_sink_t *sink, const outbox_msg_t *msgs, size_t n,
                            int64_t deadline, char *errstr, size_t errstr_size)
{
    if (ensure_conn(sink, deadline - outbox__now_ms(), errstr, errstr_size) != OUTBOX_OK)
        return OUTBOX_ERR_BROKER;
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].topic || !*msgs[i].topic)
            continue;
        if (ensure_stream(sink, msgs[i].topic, deadline - outbox__now_ms(), errstr, errstr_size)) {
            outbox__log(OUTBOX_LOG_ERROR, COMPONENT, "stream_failed", errstr, "worker", sink->name,
                        NULL);
            return OUTBOX_ERR_BROKER;
        }
    }
    return OUTBOX_OK;
}

/* Points the ack handler at call c (or, with c NULL, at nothing). Returns
 * the call's duplicate count so far and whether a publish found no stream. */
static void attach_call(nats_sink_t *s, call_t *c, uint64_t *dups, int *no_responders)
{
    pthread_mutex_lock(&s->mu);
    s->res = c ? c->res : NULL;
    s->slot = c ? c->slot : NULL;
    s->ids = c ? c->ids : NULL;
    s->by_id = c ? c->by_id : NULL;
    s->n = c ? c->n : 0;
    if (c) {
        s->inflight = 0;
        s->no_responders = 0;
    }
    *dups = s->duplicates;
    *no_responders = s->no_responders;
    pthread_mutex_unlock(&s->mu);
}

static outbox_err_t nats_publish(outbox_sink_t *sink, outbox_msg_t *msgs, size_t n,
                                 outbox_pub_result_t *res)
{
    nats_sink_t *s = sink->state;
    char err[256];
    if (!n)
        return OUTBOX_OK;
    int64_t deadline = outbox__sink_deadline(sink);
    if (deadline - outbox__now_ms() <= 0) {
        outbox__sink_out_of_time(res, n);
        return OUTBOX_OK;
    }
    if (prepare(sink, msgs, n, deadline, err, sizeof(err)) != OUTBOX_OK) {
        fail_all(res, n, OUTBOX_ERR_BROKER, err);
        return OUTBOX_ERR_BROKER;
    }
    call_t c;
    if (call_init(&c, msgs, n, res, deadline)) {
        fail_all(res, n, OUTBOX_ERR_BROKER, "out of memory");
        return OUTBOX_ERR_BROKER;
    }
    uint64_t dups_before, dups_after;
    int no_resp;
    attach_call(s, &c, &dups_before, &no_resp);
    if (send_all(s, &c))
        await_acks(sink, &c);
    attach_call(s, NULL, &dups_after, &no_resp);
    if (no_resp)
        forget_streams(s); /* the stream may be gone (server lost its store): re-check next time */
    if (dups_after > dups_before) {
        char cnt[24];
        snprintf(cnt, sizeof(cnt), "%llu", (unsigned long long)(dups_after - dups_before));
        outbox__log(OUTBOX_LOG_INFO, COMPONENT, "duplicates_dropped",
                    "JetStream already held these event ids (Nats-Msg-Id): re-publish dropped, "
                    "counted as delivered",
                    "worker", sink->name, "count", cnt, NULL);
    }
    outbox_err_t rc = call_verdict(&c);
    call_term(&c);
    return rc;
}

static outbox_err_t nats_ping(outbox_sink_t *sink, char *errstr, size_t errstr_size)
{
    nats_sink_t *s = sink->state;
    outbox_err_t err = ensure_conn(sink, sink->timeout_ms, errstr, errstr_size);
    if (err)
        return err;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = sink->timeout_ms;
    jsAccountInfo *ai = NULL;
    jsErrCode jerr = 0;
    natsStatus st = js_GetAccountInfo(&ai, s->js, &jo, &jerr);
    if (st != NATS_OK) {
        char t[200];
        outbox__nats_errtext(st, t, sizeof(t));
        return outbox__err(OUTBOX_ERR_BROKER, errstr, errstr_size,
                           "JetStream at %s does not answer: %s%s", s->url.servers[0], t,
                           jerr == JSNotEnabledErr || jerr == JSNotEnabledForAccountErr ||
                                   st == NATS_NO_RESPONDERS
                               ? " (is JetStream enabled on the server, -js?)"
                               : "");
    }
    jsAccountInfo_Destroy(ai);
    return OUTBOX_OK;
}

static void nats_close(outbox_sink_t *sink)
{
    nats_sink_t *s = sink->state;
    if (!s)
        return;
    drop_conn(s);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
    sink->state = NULL;
}

uint64_t outbox__nats_sink_duplicates(const outbox_sink_t *sink)
{
    if (!sink || sink->ops != &outbox__sink_nats_ops || !sink->state)
        return 0;
    nats_sink_t *s = sink->state;
    pthread_mutex_lock(&s->mu);
    uint64_t d = s->duplicates;
    pthread_mutex_unlock(&s->mu);
    return d;
}

static const char *const nats_schemes[] = {"nats", "nats+tls", NULL};

const outbox_sink_ops_t outbox__sink_nats_ops = {
    .name = "nats",
    .schemes = nats_schemes,
    .open = nats_open,
    .publish = nats_publish,
    .ping = nats_ping,
    .close = nats_close,
};
