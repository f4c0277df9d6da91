/* Kafka sink (librdkafka): one idempotent producer per relay worker.
 *
 * kafka://[user:password@]host:port[,host:port...]
 *
 * topic = the event topic; message key = the event key (aggregate id), so a
 * key lives in one partition and keeps its order (partitioner murmur2_random,
 * the Java client's, so other producers agree on the partition of a key).
 * Structured mode (content_mode=structured, default): value = the CloudEvents
 * JSON, headers content-type: application/cloudevents+json and ce_id,
 * ce_type, ce_source, ce_specversion for routing without parsing. Binary
 * mode: value = data, attributes as ce_* headers, content-type:
 * application/json. traceparent (when set) and the event's own headers are
 * carried as headers in both modes (core/headers.h: a string value as it
 * is, any other JSON value as its compact JSON text).
 *
 * Confirmation: an event counts as published only from its delivery report
 * (acks=all, enable.idempotence=true). publish() produces the whole call
 * (the engine hands it at most one event per key) and serves delivery
 * reports until every message has one or the call's deadline
 * (sink->deadline_ms, at most publish_timeout) is near; then it purges what
 * is left (queued and in flight) and reports those as OUTBOX_ERR_BROKER, so
 * no report can arrive after publish() returned, and it returns by the
 * deadline. Events not produced before the deadline are reported not sent
 * (OUTBOX_ERR_TIMEOUT). message.timeout.ms is infinite and
 * enable.gapless.guarantee is on: librdkafka retries inside the window in
 * order, and a failure that would leave a gap in a partition raises a fatal
 * error. A fatal error drops the producer; the next call creates a new one
 * (new producer id).
 */
#include "broker/kafka.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/conf.h"
#include "core/headers.h"
#include "core/log.h"
#include "core/util.h"
#include "sink/sink.h"

#define COMPONENT "kafka"
#define RESERVE_MAX_MS 1000 /* end of a call kept for the purge and the probe */
#define PROBE_MS 1000       /* metadata probe when a whole batch failed */

/* ------------------------------------------------------------------------ */
/* The sink                                                                  */

/* Delivery state of one message of the current publish call. */
typedef struct kafka_slot_s {
    int sent, done;
    rd_kafka_resp_err_t err;
} kafka_slot_t;

typedef struct kafka_sink_s {
    outbox_sink_t *sink; /* back pointer (name, conf, url) */
    rd_kafka_t *rk;      /* NULL after a fatal error until the next call */
    int binary;          /* content_mode=binary */
    kafka_slot_t *slots; /* one per message of the current call */
    size_t cap;
    size_t pending; /* messages produced and still without a report */
    int fatal;      /* set by error_cb: recreate the producer */
    int all_down;   /* last error_cb said all brokers are down */
} kafka_sink_t;

/* Delivery reports and errors are served by rd_kafka_poll/flush in the
 * worker's own thread, so no locking. */
static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    kafka_sink_t *k = opaque;
    kafka_slot_t *s = m->_private;
    if (!k || !s || s->done)
        return;
    s->done = 1;
    s->err = m->err;
    if (k->pending)
        k->pending--;
    if (!m->err)
        k->all_down = 0;
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    kafka_sink_t *k = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char fs[512];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, fs, sizeof(fs));
        k->fatal = 1;
        outbox__log(OUTBOX_LOG_ERROR, COMPONENT, "producer_fatal", fs, "worker", k->sink->name,
                    "error", rd_kafka_err2name(orig), NULL);
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
        if (!k->all_down)
            outbox__log(OUTBOX_LOG_WARN, COMPONENT, "all_brokers_down", reason, "worker",
                        k->sink->name, NULL);
        k->all_down = 1;
        return;
    }
    outbox__log(OUTBOX_LOG_INFO, COMPONENT, "client_error", reason, "worker", k->sink->name,
                "error", rd_kafka_err2name((rd_kafka_resp_err_t)err), NULL);
}

static outbox_err_t make_producer(kafka_sink_t *k, char *errstr, size_t errstr_size)
{
    outbox_sink_t *sink = k->sink;
    char client_id[64], linger[24];
    snprintf(client_id, sizeof(client_id), "outbox-relay-%s", sink->name);
    rd_kafka_conf_t *kc;
    outbox_err_t err = outbox__kafka_conf_new(sink->url, client_id, &kc, errstr, errstr_size);
    if (err)
        return err;
    snprintf(linger, sizeof(linger), "%lld",
             (long long)outbox__conf_ms(sink->conf, "kafka_linger"));
    static const char *const fixed[][2] = {
        {"enable.idempotence", "true"},
        {"acks", "all"},
        {"max.in.flight.requests.per.connection", "5"},
        {"enable.gapless.guarantee", "true"},
        {"message.timeout.ms", "0"}, /* infinite: publish() bounds the wait and purges */
        {"partitioner", "murmur2_random"},
    };
    for (size_t i = 0; !err && i < sizeof(fixed) / sizeof(fixed[0]); i++)
        err = outbox__kafka_conf_set(kc, fixed[i][0], fixed[i][1], errstr, errstr_size);
    if (!err)
        err = outbox__kafka_conf_set(kc, "linger.ms", linger, errstr, errstr_size);
    if (!err)
        err = outbox__kafka_conf_set(kc, "compression.type",
                                     outbox__conf_str(sink->conf, "kafka_compression"), errstr,
                                     errstr_size);
    if (!err)
        err = outbox__kafka_conf_apply_extra(kc, sink->conf, errstr, errstr_size);
    if (err) {
        rd_kafka_conf_destroy(kc);
        return err;
    }
    rd_kafka_conf_set_opaque(kc, k);
    rd_kafka_conf_set_dr_msg_cb(kc, dr_msg_cb);
    rd_kafka_conf_set_error_cb(kc, error_cb);
    char kerr[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, kerr, sizeof(kerr));
    if (!rk) {
        rd_kafka_conf_destroy(kc);
        return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size, "Kafka producer: %s", kerr);
    }
    k->rk = rk; /* rd_kafka_new owns kc now */
    k->fatal = 0;
    return OUTBOX_OK;
}

/* Destroys the producer after purging what it still holds; no delivery
 * report callback runs after this returns. */
static void drop_producer(kafka_sink_t *k)
{
    if (!k->rk)
        return;
    rd_kafka_purge(k->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    k->pending = 0;
    rd_kafka_destroy(k->rk);
    k->rk = NULL;
    k->fatal = 0;
}

static outbox_err_t kafka_open(outbox_sink_t *sink, char *errstr, size_t errstr_size)
{
    kafka_sink_t *k = calloc(1, sizeof(*k));
    if (!k)
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    k->sink = sink;
    k->binary = !strcmp(outbox__conf_str(sink->conf, "content_mode"), "binary");
    /* Creating the producer checks the URL and every property now; it does
     * not need a reachable broker (connections are made in the background). */
    outbox_err_t err = make_producer(k, errstr, errstr_size);
    if (err) {
        free(k);
        return err;
    }
    sink->state = k;
    return OUTBOX_OK;
}

static outbox_err_t map_err(rd_kafka_resp_err_t e)
{
    switch (e) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION: /* invalid topic name */
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
        return OUTBOX_ERR_REJECTED;
    default:
        return OUTBOX_ERR_BROKER;
    }
}

static int reserved_header(const char *name)
{
    return !strncasecmp(name, "ce_", 3) || !strcasecmp(name, "content-type") ||
           !strcasecmp(name, "traceparent");
}

/* outbox__headers_each callback: one of the event's own headers (reserved
 * names are left out). rd_kafka_header_add copies name and value. */
static outbox_err_t add_event_header(void *opaque, const char *name, const char *value, size_t len)
{
    if (!reserved_header(name))
        rd_kafka_header_add(opaque, name, -1, value, (ssize_t)len);
    return OUTBOX_OK;
}

/* Builds the headers of m (see the top of this file). NULL on ENOMEM. */
static rd_kafka_headers_t *build_headers(const kafka_sink_t *k, const outbox_msg_t *m)
{
    rd_kafka_headers_t *h = rd_kafka_headers_new(12);
    if (!h)
        return NULL;
    const char *src = m->source && *m->source ? m->source : "/outbox";
    rd_kafka_header_add(h, "ce_specversion", -1, "1.0", 3);
    rd_kafka_header_add(h, "ce_id", -1, m->id, -1);
    rd_kafka_header_add(h, "ce_type", -1, m->type, -1);
    rd_kafka_header_add(h, "ce_source", -1, src, -1);
    if (k->binary) {
        rd_kafka_header_add(h, "content-type", -1, "application/json", -1);
        if (m->time)
            rd_kafka_header_add(h, "ce_time", -1, m->time, -1);
        rd_kafka_header_add(h, "ce_subject", -1, m->key, -1);
        rd_kafka_header_add(h, "ce_partitionkey", -1, m->key, -1);
        if (m->traceparent && *m->traceparent)
            rd_kafka_header_add(h, "ce_traceparent", -1, m->traceparent, -1);
    } else {
        rd_kafka_header_add(h, "content-type", -1, "application/cloudevents+json", -1);
    }
    if (m->traceparent && *m->traceparent)
        rd_kafka_header_add(h, "traceparent", -1, m->traceparent, -1);
    if (outbox__headers_each(m->headers, add_event_header, h) == OUTBOX_ERR_NOMEM) {
        rd_kafka_headers_destroy(h);
        return NULL;
    }
    return h;
}

/* Produces one message; RD_KAFKA_RESP_ERR_NO_ERROR when it is on its way. */
static rd_kafka_resp_err_t produce_one(kafka_sink_t *k, const outbox_msg_t *m, kafka_slot_t *slot,
                                       int64_t deadline)
{
    rd_kafka_headers_t *h = build_headers(k, m);
    if (!h)
        return RD_KAFKA_RESP_ERR__CRIT_SYS_RESOURCE;
    const char *val = k->binary ? m->payload : m->envelope;
    size_t vlen = k->binary ? strlen(m->payload) : m->envelope_len;
    rd_kafka_resp_err_t err;
    for (;;) {
        err = rd_kafka_producev(
            k->rk, RD_KAFKA_V_TOPIC(m->topic), RD_KAFKA_V_KEY(m->key, strlen(m->key)),
            RD_KAFKA_V_VALUE((void *)val, vlen), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(slot), RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || outbox__now_ms() >= deadline)
            break;
        rd_kafka_poll(k->rk, 20); /* serve reports to make room */
    }
    if (err)
        rd_kafka_headers_destroy(h); /* on success librdkafka owns h */
    return err;
}

static void set_res(outbox_pub_result_t *r, outbox_err_t err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_res(outbox_pub_result_t *r, outbox_err_t err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    r->err = err;
    vsnprintf(r->errstr, sizeof(r->errstr), fmt, ap);
    va_end(ap);
}

/* Makes sure k->slots holds n entries, zeroed. -1 on ENOMEM. */
static int slots_reset(kafka_sink_t *k, size_t n)
{
    if (n > k->cap) {
        kafka_slot_t *s = realloc(k->slots, n * sizeof(*s));
        if (!s)
            return -1;
        k->slots = s;
        k->cap = n;
    }
    memset(k->slots, 0, n * sizeof(*k->slots));
    k->pending = 0;
    return 0;
}

/* Produces msgs in order until the deadline; an event refused locally gets
 * its result now, the others wait for their delivery reports. Events not
 * produced before the deadline are reported out of time (not sent). */
static void produce_all(kafka_sink_t *k, outbox_msg_t *msgs, size_t n, int64_t deadline,
                        outbox_pub_result_t *res)
{
    for (size_t i = 0; i < n; i++) {
        kafka_slot_t *s = &k->slots[i];
        memset(&res[i], 0, sizeof(res[i]));
        rd_kafka_resp_err_t e = outbox__now_ms() < deadline ? produce_one(k, &msgs[i], s, deadline)
                                                            : RD_KAFKA_RESP_ERR__QUEUE_FULL;
        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL && outbox__now_ms() >= deadline) {
            s->done = 1;
            outbox__sink_out_of_time(&res[i], 1);
        } else if (e) {
            s->done = 1;
            set_res(&res[i], map_err(e), "Kafka refused the message: %s", rd_kafka_err2str(e));
        } else {
            s->sent = 1;
            k->pending++;
        }
    }
}

/* Serves delivery reports until every produced message has one or the
 * window (deadline minus a reserve for the purge and the probe) closes;
 * then purges what is left. Afterwards no report can reach k->slots. */
static void await_reports(outbox_sink_t *sink, int64_t deadline)
{
    kafka_sink_t *k = sink->state;
    int64_t window = deadline - outbox__now_ms();
    int64_t reserve = window / 5 < RESERVE_MAX_MS ? window / 5 : RESERVE_MAX_MS;
    int64_t serve_until = deadline - reserve;
    /* rd_kafka_flush also makes the producer send at once (ignores linger). */
    while (k->pending && !k->fatal) {
        int64_t left = serve_until - outbox__now_ms();
        if (left <= 0)
            break;
        rd_kafka_flush(k->rk, (int)(left < 100 ? left : 100));
    }
    if (k->pending) {
        /* Out of time (or fatal): take them back. In-flight ones may still
         * land on the broker; the relay publishes them again (at least once). */
        rd_kafka_purge(k->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        int64_t grace = deadline - reserve / 2;
        while (k->pending && outbox__now_ms() < grace)
            rd_kafka_poll(k->rk, 10);
    }
    if (k->pending || k->fatal || rd_kafka_fatal_error(k->rk, NULL, 0)) {
        if (k->pending)
            outbox__log(OUTBOX_LOG_ERROR, COMPONENT, "reports_missing",
                        "delivery reports missing after purge; recreating the producer", "worker",
                        sink->name, NULL);
        drop_producer(k); /* no report can reach the slots after this */
    }
}

/* Turns the delivery reports into res[]. Counts what got through (*ok) and
 * the failures (*failures), and how many of those look like the cluster
 * rather than the event (*transport). */
static void collect_results(kafka_sink_t *k, size_t n, outbox_pub_result_t *res, size_t *ok,
                            size_t *transport, size_t *failures)
{
    *ok = *transport = *failures = 0;
    for (size_t i = 0; i < n; i++) {
        kafka_slot_t *s = &k->slots[i];
        if (s->sent && !s->done) {
            set_res(&res[i], OUTBOX_ERR_BROKER, "no delivery report from Kafka");
            s->err = RD_KAFKA_RESP_ERR__TIMED_OUT;
        } else if (s->sent && !s->err) {
            res[i].err = OUTBOX_OK;
            (*ok)++;
            continue;
        } else if (s->sent && (s->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE ||
                               s->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT)) {
            set_res(&res[i], OUTBOX_ERR_BROKER,
                    "no confirmation from Kafka within the publish deadline (%s)",
                    rd_kafka_err2str(s->err));
        } else if (s->sent) {
            set_res(&res[i], map_err(s->err), "Kafka delivery failed: %s",
                    rd_kafka_err2str(s->err));
        }
        if (res[i].err == OUTBOX_OK)
            continue;
        (*failures)++;
        if (s->sent ? outbox__kafka_err_is_transport(s->err) ||
                          s->err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC ||
                          s->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART
                    : res[i].err != OUTBOX_ERR_REJECTED)
            (*transport)++;
    }
}

/* 1 if the cluster is unreachable: librdkafka said all brokers are down, or
 * a metadata request fails within what is left of the deadline. */
static int cluster_down(kafka_sink_t *k, int64_t deadline)
{
    if (k->all_down || !k->rk)
        return 1;
    int64_t left = deadline - outbox__now_ms();
    if (left <= 0)
        return 0; /* no time to ask: report per event */
    const struct rd_kafka_metadata *md = NULL;
    int down = rd_kafka_metadata(k->rk, 0, NULL, &md, (int)(left < PROBE_MS ? left : PROBE_MS)) !=
               RD_KAFKA_RESP_ERR_NO_ERROR;
    if (md)
        rd_kafka_metadata_destroy(md);
    return down;
}

static outbox_err_t kafka_publish(outbox_sink_t *sink, outbox_msg_t *msgs, size_t n,
                                  outbox_pub_result_t *res)
{
    kafka_sink_t *k = sink->state;
    int64_t deadline = outbox__sink_deadline(sink);
    char err[512];
    if (!k->rk && make_producer(k, err, sizeof(err)) != OUTBOX_OK) {
        for (size_t i = 0; i < n; i++)
            set_res(&res[i], OUTBOX_ERR_BROKER, "%s", err);
        return OUTBOX_ERR_BROKER;
    }
    if (slots_reset(k, n)) {
        for (size_t i = 0; i < n; i++)
            set_res(&res[i], OUTBOX_ERR_BROKER, "out of memory");
        return OUTBOX_OK;
    }
    produce_all(k, msgs, n, deadline, res);
    await_reports(sink, deadline);
    size_t ok, transport, failures;
    collect_results(k, n, res, &ok, &transport, &failures);
    /* Nothing got through and every failure looks like the cluster: is it
     * reachable at all? If not, tell the relay (no attempts are charged and
     * it probes with ping before trying again). */
    if (n && !ok && transport == failures && cluster_down(k, deadline)) {
        char shown[512];
        outbox__redact_url(sink->url, shown, sizeof(shown));
        snprintf(err, sizeof(err), "Kafka at %s unreachable: %s", shown, res[0].errstr);
        snprintf(res[0].errstr, sizeof(res[0].errstr), "%s", err);
        return OUTBOX_ERR_BROKER;
    }
    return OUTBOX_OK;
}

static outbox_err_t kafka_ping(outbox_sink_t *sink, char *errstr, size_t errstr_size)
{
    kafka_sink_t *k = sink->state;
    if (k->rk && (k->fatal || rd_kafka_fatal_error(k->rk, NULL, 0)))
        drop_producer(k);
    if (!k->rk) {
        outbox_err_t err = make_producer(k, errstr, errstr_size);
        if (err)
            return OUTBOX_ERR_BROKER;
    }
    int tmo = sink->timeout_ms < 2000 ? (int)sink->timeout_ms : 2000;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(k->rk, 0, NULL, &md, tmo);
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_poll(k->rk, 0); /* error callbacks */
    if (e) {
        char shown[512];
        outbox__redact_url(sink->url, shown, sizeof(shown));
        return outbox__err(OUTBOX_ERR_BROKER, errstr, errstr_size, "Kafka at %s unreachable: %s",
                           shown, rd_kafka_err2str(e));
    }
    k->all_down = 0;
    return OUTBOX_OK;
}

static void kafka_close(outbox_sink_t *sink)
{
    kafka_sink_t *k = sink->state;
    if (!k)
        return;
    drop_producer(k);
    free(k->slots);
    free(k);
    sink->state = NULL;
}

static const char *const kafka_schemes[] = {"kafka", NULL};

const outbox_sink_ops_t outbox__sink_kafka_ops = {
    .name = "kafka",
    .schemes = kafka_schemes,
    .open = kafka_open,
    .publish = kafka_publish,
    .ping = kafka_ping,
    .close = kafka_close,
};
