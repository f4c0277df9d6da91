/*
 * Sinks: one file per broker, each a small ops table chosen by URL scheme.
 *
 * A sink instance belongs to one relay worker (one thread); ops need not be
 * thread-safe. To add a sink: write src/sink/<name>.c defining
 *   const outbox_sink_ops_t outbox__sink_<name>_ops = {...};
 * The build generates the registry from the file names (CMakeLists.txt), so
 * the file name and the ops symbol must match.
 */
#ifndef OUTBOX_SINK_SINK_H
#define OUTBOX_SINK_SINK_H

#include <stddef.h>
#include <stdint.h>

#include "core/message.h"
#include "outbox/outbox.h"

typedef struct outbox_sink_s outbox_sink_t;

/** Outcome of one message in a publish call. */
typedef struct outbox_pub_result_s {
    outbox_err_t err;       /**< OUTBOX_OK: broker confirmed; OUTBOX_ERR_BROKER/TIMEOUT:
                                 retry with backoff; OUTBOX_ERR_REJECTED: dead-letter now */
    int64_t retry_after_ms; /**< >0: the broker asked to wait at least this long */
    int not_sent;           /**< 1: never sent (out of time, or the call gave up before it):
                                 the relay leaves it untouched, no attempt charged */
    char errstr[256];
} outbox_pub_result_t;

typedef struct outbox_sink_ops_s {
    const char *name;           /**< "redis", "kafka", ... (metrics label) */
    const char *const *schemes; /**< URL schemes handled, NULL-terminated, e.g. {"redis", NULL} */
    /** Parses sink->url, connects. Sets sink->state. */
    outbox_err_t (*open)(outbox_sink_t *sink, char *errstr, size_t errstr_size);
    /**
     * Publishes msgs[0..n) in this order and waits for the broker's
     * confirmation of each, until sink->deadline_ms at the latest. Fills
     * res[i]. Each msgs[i].envelope is envelope_len bytes and NOT
     * NUL-terminated (a batch's envelopes share one buffer). The engine hands
     * a call at most one event per key (it alone
     * applies the per-key rule, src/relay/batch.c), so a sink may pipeline or
     * parallelise the whole call freely and only reports a result per event.
     * Returns OUTBOX_OK when the broker answered (res[] says per message), or
     * OUTBOX_ERR_BROKER/TIMEOUT when it is unreachable: then nothing in the
     * call counts as confirmed, and the relay probes with ping() before
     * trying again.
     */
    outbox_err_t (*publish)(outbox_sink_t *sink, outbox_msg_t *msgs, size_t n,
                            outbox_pub_result_t *res);
    /** Cheap reachability check (reconnects if needed). */
    outbox_err_t (*ping)(outbox_sink_t *sink, char *errstr, size_t errstr_size);
    /** Frees sink->state. */
    void (*close)(outbox_sink_t *sink);
} outbox_sink_ops_t;

struct outbox_sink_s {
    const outbox_sink_ops_t *ops;
    char *url;                 /**< owned; may hold a password: never log it raw */
    const outbox_conf_t *conf; /**< borrowed; read sink options with outbox__conf_* */
    int64_t timeout_ms;        /**< publish timeout (connects, probes) */
    int64_t deadline_ms;       /**< set by the engine before each publish: absolute
                                    outbox__now_ms() by which publish must return */
    void *state;               /**< the sink's own */
    char name[32];             /**< owning worker, for log lines ("worker-3") */
};

/**
 * The absolute outbox__now_ms() time by which the current publish call must
 * be done: sink->deadline_ms, but no later than sink->timeout_ms from now
 * (the sink's own cap; also the whole window when the engine set no
 * deadline, deadline_ms == 0). Call it once at the start of publish.
 */
int64_t outbox__sink_deadline(const outbox_sink_t *sink);

/** Reports res[0..n) as never attempted for lack of time: err
 *  OUTBOX_ERR_TIMEOUT, not_sent = 1 (the relay charges no attempt). */
void outbox__sink_out_of_time(outbox_pub_result_t *res, size_t n);

/** Creates and opens the sink for url (scheme picks the ops). */
outbox_sink_t *outbox__sink_new(const char *url, const outbox_conf_t *conf, const char *owner,
                                char *errstr, size_t errstr_size);
/** The same with ops chosen by the caller (tests: an in-process sink). */
outbox_sink_t *outbox__sink_new_with(const outbox_sink_ops_t *ops, const char *url,
                                     const outbox_conf_t *conf, const char *owner, char *errstr,
                                     size_t errstr_size);
void outbox__sink_destroy(outbox_sink_t *sink);
/** 1 if some compiled-in sink handles url's scheme. */
int outbox__sink_supported(const char *url);
/** Comma-separated list of supported schemes (static). */
const char *outbox__sink_schemes(void);

#endif
