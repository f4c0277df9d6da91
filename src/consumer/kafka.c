/* Kafka consumer (librdkafka high-level consumer).
 *
 * kafka://[user:password@]host:port[,host:port...]   group.id = group,
 * client.id = name. Offsets are committed by hand: after the handler
 * returned OUTBOX_OK for a message, its offset is stored, and the stored
 * offsets are committed synchronously at the end of each poll call. When
 * the handler fails, the partition is rewound to that message (seek) and
 * every later message of the partition is dropped unhandled until the failed
 * one comes back (those fetched before the seek took effect, or all of them
 * if the seek was refused, as it can be while the group rebalances: it is
 * then retried), so nothing after it is handled or committed past it. The partition is also paused
 * until the message's retry is due (consumer_retry_backoff, doubling): a failing message holds back
 * its own partition only (offsets are per partition, so the later messages of the partition cannot
 * be committed past it), other partitions keep flowing, and there is no hot loop. Dead-lettering it
 * (consumer_max_attempts, or OUTBOX_ERR_REJECTED) commits past it and the partition flows again. A
 * pause does not survive a rebalance: the new owner starts at the last
 * commit, i.e. at the failed message. A crash redelivers from the last
 * commit: pair with outbox_inbox_record() for effects exactly once.
 *
 * Content mode per message (CloudEvents Kafka binding): content-type
 * "application/cloudevents..." -> structured (the value is the document);
 * otherwise a ce_specversion header -> binary (ce_* headers are the
 * attributes, the value is data); otherwise structured.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer/consumer.h"
#include "consumer/consumer_decode.h"
#include "core/conf.h"
#include "core/log.h"
#include "core/util.h"
#include "broker/kafka.h"

#define COMPONENT "kafka"
#define MAX_PER_POLL 500 /* messages handled per poll call */
#define MAX_ATTRS 32     /* ce_* headers kept per message */

typedef struct paused_s {
    char *topic;
    int32_t partition;
    int64_t resume_ms;
} paused_t;

/* A partition rewound to a failed message: until that message comes back,
 * anything later from the partition is from before the seek took effect (or
 * the seek failed) and is dropped, never handled nor committed, so the
 * committed offset cannot pass the failed message. */
typedef struct rewind_s {
    char *topic;
    int32_t partition;
    int64_t offset;  /* the failed message */
    int64_t seek_ms; /* last seek attempt */
} rewind_t;

typedef struct kafka_consumer_s {
    outbox_consumer_t *c;
    rd_kafka_t *rk;
    int all_down;
    paused_t *paused; /* partitions waiting for a failed message's retry */
    int npaused, cap_paused;
    rewind_t *rw; /* partitions rewound to a failed message */
    int nrw, cap_rw;
} kafka_consumer_t;

static rewind_t *rewind_find(kafka_consumer_t *k, const char *topic, int32_t partition)
{
    for (int i = 0; i < k->nrw; i++)
        if (k->rw[i].partition == partition && !strcmp(k->rw[i].topic, topic))
            return &k->rw[i];
    return NULL;
}

static void rewind_drop(kafka_consumer_t *k, rewind_t *w)
{
    free(w->topic);
    *w = k->rw[--k->nrw];
}

/* Seeks w's partition back to its failed message. The call's error and the
 * partition's own error both count: a seek refused for the partition (for
 * example while the group rebalances) is retried by the next later message
 * that arrives, at most once a second. */
static void rewind_seek(kafka_consumer_t *k, rewind_t *w)
{
    rd_kafka_topic_partition_list_t *one = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(one, w->topic, w->partition)->offset = w->offset;
    rd_kafka_error_t *se = rd_kafka_seek_partitions(k->rk, one, 5000);
    const char *why = se                  ? rd_kafka_error_string(se)
                      : one->elems[0].err ? rd_kafka_err2str(one->elems[0].err)
                                          : NULL;
    if (why) {
        char part[16], off[24];
        snprintf(part, sizeof(part), "%d", (int)w->partition);
        snprintf(off, sizeof(off), "%lld", (long long)w->offset);
        outbox__log(OUTBOX_LOG_WARN, COMPONENT, "seek_failed", why, "consumer", k->c->name, "topic",
                    w->topic, "partition", part, "offset", off, NULL);
    }
    if (se)
        rd_kafka_error_destroy(se);
    rd_kafka_topic_partition_list_destroy(one);
    w->seek_ms = outbox__now_ms();
}

/* Rewinds whose failed message has not come back for 2 s: seek again (the
 * first seek may have been refused and nothing later arrived to retry it),
 * or forget them when the partition is no longer ours (a rebalance gave it
 * to another member, which starts at the last commit: not past it). */
static void rewind_check(kafka_consumer_t *k)
{
    if (!k->nrw)
        return;
    int64_t now = outbox__now_ms();
    rd_kafka_topic_partition_list_t *mine = NULL;
    if (rd_kafka_assignment(k->rk, &mine) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    for (int i = 0; i < k->nrw; i++) {
        rewind_t *w = &k->rw[i];
        if (now - w->seek_ms < 2000)
            continue;
        if (!rd_kafka_topic_partition_list_find(mine, w->topic, w->partition)) {
            rewind_drop(k, w);
            i--;
            continue;
        }
        rewind_seek(k, w);
    }
    rd_kafka_topic_partition_list_destroy(mine);
}

static void rewind_to(kafka_consumer_t *k, const char *topic, int32_t partition, int64_t offset)
{
    rewind_t *w = rewind_find(k, topic, partition);
    if (!w) {
        if (k->nrw == k->cap_rw) {
            int ncap = k->cap_rw ? 2 * k->cap_rw : 8;
            rewind_t *nw = realloc(k->rw, (size_t)ncap * sizeof(*nw));
            if (!nw)
                return;
            k->rw = nw;
            k->cap_rw = ncap;
        }
        char *t = strdup(topic);
        if (!t)
            return;
        w = &k->rw[k->nrw++];
        *w = (rewind_t){.topic = t, .partition = partition, .offset = offset};
    } else if (offset < w->offset) {
        w->offset = offset;
    }
    rewind_seek(k, w);
}

/* Pauses topic/partition until resume_ms (the message at the seek position
 * is offered again then). */
static void pause_until(kafka_consumer_t *k, const char *topic, int32_t partition,
                        int64_t resume_ms)
{
    int i = 0;
    while (i < k->npaused &&
           (k->paused[i].partition != partition || strcmp(k->paused[i].topic, topic)))
        i++;
    if (i == k->npaused) {
        if (k->npaused == k->cap_paused) {
            int ncap = k->cap_paused ? 2 * k->cap_paused : 8;
            paused_t *np = realloc(k->paused, (size_t)ncap * sizeof(*np));
            if (!np)
                return; /* not paused: retried sooner, still in order */
            k->paused = np;
            k->cap_paused = ncap;
        }
        if (!(k->paused[i].topic = strdup(topic)))
            return;
        k->paused[i].partition = partition;
        k->npaused++;
        rd_kafka_topic_partition_list_t *one = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(one, topic, partition);
        rd_kafka_pause_partitions(k->rk, one);
        rd_kafka_topic_partition_list_destroy(one);
    }
    k->paused[i].resume_ms = resume_ms;
}

/* Resumes the paused partitions whose retry is due. */
static void resume_due(kafka_consumer_t *k)
{
    int64_t now = outbox__now_ms();
    for (int i = 0; i < k->npaused; i++) {
        if (k->paused[i].resume_ms > now)
            continue;
        rd_kafka_topic_partition_list_t *one = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(one, k->paused[i].topic, k->paused[i].partition);
        rd_kafka_resume_partitions(k->rk, one); /* not ours any more after a rebalance: fine */
        rd_kafka_topic_partition_list_destroy(one);
        free(k->paused[i].topic);
        k->paused[i--] = k->paused[--k->npaused];
    }
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    kafka_consumer_t *k = opaque;
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
        if (!k->all_down)
            outbox__log(OUTBOX_LOG_WARN, COMPONENT, "all_brokers_down", reason, "consumer",
                        k->c->name, NULL);
        k->all_down = 1;
        return;
    }
    outbox__log(err == RD_KAFKA_RESP_ERR__FATAL ? OUTBOX_LOG_ERROR : OUTBOX_LOG_INFO, COMPONENT,
                "client_error", reason, "consumer", k->c->name, "error",
                rd_kafka_err2name((rd_kafka_resp_err_t)err), NULL);
}

static outbox_err_t kc_open(outbox_consumer_t *c, char *errstr, size_t errstr_size)
{
    kafka_consumer_t *k = calloc(1, sizeof(*k));
    if (!k)
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    k->c = c;
    rd_kafka_conf_t *kc;
    outbox_err_t err = outbox__kafka_conf_new(c->url, c->name, &kc, errstr, errstr_size);
    if (err) {
        free(k);
        return err;
    }
    const char *const fixed[][2] = {
        {"group.id", c->group},
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"enable.partition.eof", "false"},
        {"auto.offset.reset", outbox__conf_str(c->conf, "kafka_offset_reset")},
    };
    for (size_t i = 0; !err && i < sizeof(fixed) / sizeof(fixed[0]); i++)
        err = outbox__kafka_conf_set(kc, fixed[i][0], fixed[i][1], errstr, errstr_size);
    if (!err)
        err = outbox__kafka_conf_apply_extra(kc, c->conf, errstr, errstr_size);
    if (err) {
        rd_kafka_conf_destroy(kc);
        free(k);
        return err;
    }
    rd_kafka_conf_set_opaque(kc, k);
    rd_kafka_conf_set_error_cb(kc, error_cb);
    char kerr[512];
    k->rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, kerr, sizeof(kerr));
    if (!k->rk) {
        rd_kafka_conf_destroy(kc);
        free(k);
        return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size, "Kafka consumer: %s", kerr);
    }
    rd_kafka_poll_set_consumer(k->rk);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(c->ntopics);
    for (int i = 0; i < c->ntopics; i++)
        rd_kafka_topic_partition_list_add(topics, c->topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(k->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (e) {
        rd_kafka_destroy(k->rk);
        free(k);
        return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size, "Kafka subscribe: %s",
                           rd_kafka_err2str(e));
    }
    c->state = k;
    return OUTBOX_OK;
}

outbox_err_t outbox__consumer_kafka_handle(outbox_consumer_t *c, const char *topic,
                                           const rd_kafka_headers_t *hdrs, const void *payload,
                                           size_t len, outbox_consumer_handler_fn fn, void *opaque,
                                           int64_t *retry_in)
{
    const char *attrs[2 * MAX_ATTRS + 3];
    char *copies[MAX_ATTRS + 1];
    int na = 0, ncopies = 0, has_specversion = 0, structured_ct = 0;
    const char *ct = NULL;
    size_t ct_len = 0;
    if (hdrs) {
        const char *name;
        const void *val;
        size_t size;
        for (size_t i = 0; !rd_kafka_header_get_all(hdrs, i, &name, &val, &size); i++) {
            if (!strcasecmp(name, "content-type") && val) {
                ct = val;
                ct_len = size;
                structured_ct = size >= 23 && !strncasecmp(val, "application/cloudevents", 23);
                continue;
            }
            if (strncasecmp(name, "ce_", 3) || !val || ncopies >= MAX_ATTRS)
                continue;
            if (!strcasecmp(name, "ce_specversion"))
                has_specversion = 1;
            char *v = strndup(val, size); /* header values are not NUL-terminated */
            if (!v)
                continue;
            copies[ncopies++] = v;
            attrs[na++] = name;
            attrs[na++] = v;
        }
    }
    const char *body = payload ? (const char *)payload : ""; /* a tombstone has no value */
    outbox_err_t rc;
    if (!structured_ct && has_specversion) {
        char *ctv = NULL;
        if (ct && ncopies < MAX_ATTRS && (ctv = strndup(ct, ct_len))) {
            copies[ncopies++] = ctv;
            attrs[na++] = "ce_datacontenttype";
            attrs[na++] = ctv;
        }
        attrs[na] = NULL;
        rc = outbox__consumer_dispatch(c, topic, body, len, attrs, 0, fn, opaque, retry_in);
    } else {
        rc = outbox__consumer_dispatch(c, topic, body, len, NULL, 0, fn, opaque, retry_in);
    }
    for (int i = 0; i < ncopies; i++)
        free(copies[i]);
    return rc;
}

/* Dispatches one message; the ce_* headers decide structured or binary. */
static outbox_err_t handle(outbox_consumer_t *c, rd_kafka_message_t *m,
                           outbox_consumer_handler_fn fn, void *opaque, int64_t *retry_in)
{
    rd_kafka_headers_t *hdrs = NULL;
    if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        hdrs = NULL;
    return outbox__consumer_kafka_handle(c, rd_kafka_topic_name(m->rkt), hdrs, m->payload, m->len,
                                         fn, opaque, retry_in);
}

static outbox_err_t kc_poll(outbox_consumer_t *c, int timeout_ms, outbox_consumer_handler_fn fn,
                            void *opaque)
{
    kafka_consumer_t *k = c->state;
    rd_kafka_topic_partition_list_t *done = rd_kafka_topic_partition_list_new(8);
    int handled = 0, broker_down = 0;
    c->errstr[0] = '\0';
    resume_due(k);
    rewind_check(k);
    for (int i = 0; i < MAX_PER_POLL; i++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(k->rk, i == 0 ? timeout_ms : 0);
        if (!m)
            break;
        if (m->err) {
            if (m->err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
                broker_down = 1;
                snprintf(c->errstr, sizeof(c->errstr), "Kafka: all brokers are down");
            } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                char *msg = rd_kafka_message_errstr(m) ? strdup(rd_kafka_message_errstr(m)) : NULL;
                outbox__log(OUTBOX_LOG_WARN, COMPONENT, "consume_error", msg ? msg : "", "consumer",
                            c->name, "error", rd_kafka_err2name(m->err), NULL);
                snprintf(c->errstr, sizeof(c->errstr), "Kafka: %s",
                         msg ? msg : rd_kafka_err2str(m->err));
                free(msg);
                if (outbox__kafka_err_is_transport(m->err))
                    broker_down = 1;
            }
            rd_kafka_message_destroy(m);
            continue;
        }
        const char *topic = rd_kafka_topic_name(m->rkt);
        rewind_t *w = rewind_find(k, topic, m->partition);
        if (w && m->offset > w->offset) {
            /* Behind a failed message that has not come back yet: it comes
             * again after the seek (retried if it did not take). */
            if (outbox__now_ms() - w->seek_ms >= 1000)
                rewind_seek(k, w);
            rd_kafka_message_destroy(m);
            continue;
        }
        if (w)
            rewind_drop(k, w); /* the failed message is back: in order from here */
        k->all_down = 0;
        broker_down = 0;
        int64_t retry_in = 1;
        outbox_err_t rc = handle(c, m, fn, opaque, &retry_in);
        handled++;
        if (rc == OUTBOX_OK) {
            rd_kafka_topic_partition_t *p =
                rd_kafka_topic_partition_list_find(done, topic, m->partition);
            if (!p)
                p = rd_kafka_topic_partition_list_add(done, topic, m->partition);
            p->offset = m->offset + 1; /* the next one to read */
        } else {
            /* Rewind so it is delivered again; later ones of the partition wait. */
            rewind_to(k, topic, m->partition, m->offset);
            pause_until(k, topic, m->partition, outbox__now_ms() + retry_in);
        }
        rd_kafka_message_destroy(m);
    }
    if (done->cnt) {
        rd_kafka_resp_err_t e = rd_kafka_commit(k->rk, done, 0 /* synchronous */);
        if (e) {
            /* Not fatal: the messages come again and the inbox skips them. */
            outbox__log(OUTBOX_LOG_WARN, COMPONENT, "commit_failed", rd_kafka_err2str(e),
                        "consumer", c->name, NULL);
            snprintf(c->errstr, sizeof(c->errstr), "Kafka offset commit failed: %s",
                     rd_kafka_err2str(e));
        }
    }
    rd_kafka_topic_partition_list_destroy(done);
    if (!handled && (broker_down || k->all_down)) {
        if (!c->errstr[0])
            snprintf(c->errstr, sizeof(c->errstr), "Kafka: all brokers are down");
        return OUTBOX_ERR_BROKER;
    }
    return OUTBOX_OK;
}

static void kc_close(outbox_consumer_t *c)
{
    kafka_consumer_t *k = c->state;
    if (!k)
        return;
    rd_kafka_consumer_close(k->rk); /* leaves the group; commits nothing (auto commit is off) */
    rd_kafka_destroy(k->rk);
    for (int i = 0; i < k->npaused; i++)
        free(k->paused[i].topic);
    free(k->paused);
    for (int i = 0; i < k->nrw; i++)
        free(k->rw[i].topic);
    free(k->rw);
    free(k);
    c->state = NULL;
}

static const char *const kafka_schemes[] = {"kafka", NULL};

const outbox_consumer_ops_t outbox__consumer_kafka_ops = {
    .name = "kafka",
    .schemes = kafka_schemes,
    .open = kc_open,
    .poll = kc_poll,
    .close = kc_close,
};
