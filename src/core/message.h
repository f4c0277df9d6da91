/* The event as the relay hands it to a sink, and the CloudEvents envelope. */
#ifndef OUTBOX_CORE_MESSAGE_H
#define OUTBOX_CORE_MESSAGE_H

#include <stddef.h>
#include <stdint.h>

#include "outbox/outbox.h"

/** One claimed event. All strings are owned by the batch (freed together). */
typedef struct outbox_msg_s {
    int64_t seq; /**< outbox row sequence (insertion order) */
    char id[OUTBOX_UUID_STRLEN + 1];
    const char *topic;
    const char *type;
    const char *key; /**< aggregate id; CloudEvents subject and partitionkey */
    const char *source;
    const char *payload;     /**< JSON text: the CloudEvents data, as the producer wrote it */
    size_t payload_len;      /**< its length (0: use strlen) */
    const char *headers;     /**< JSON object text or NULL */
    const char *traceparent; /**< or NULL */
    const char *time;        /**< RFC 3339 UTC creation time */
    int attempts;            /**< publish attempts before this one */
    int priority;            /**< claim priority across keys (0: ordinary) */
    char *envelope;          /**< the CloudEvents JSON (structured mode), set by the relay
                                  (owned by the relay's batch, not by the message) */
    size_t envelope_len;
} outbox_msg_t;

/**
 * Builds the CloudEvents 1.0 structured-mode JSON for msg, members in this
 * order: specversion "1.0", id, source, type, subject (key), time,
 * datacontenttype "application/json", partitionkey (key), traceparent (when
 * set), data. data is the payload text itself, checked as strict JSON and
 * spliced in with only the whitespace outside strings removed: never parsed
 * and re-encoded, so numbers of any size and precision arrive as written.
 * Returns a malloc'd NUL-terminated string (caller frees), or NULL if the
 * payload is not valid JSON (errstr names the event, the reason and the byte
 * offset), an attribute is not UTF-8, or on ENOMEM.
 */
char *outbox__envelope_build(const outbox_msg_t *msg, size_t *len, char *errstr,
                             size_t errstr_size);

/**
 * The same, appended to b (the relay builds a whole batch's envelopes in one
 * buffer). On OUTBOX_ERR_INVALID_ARG b is as it was; on OUTBOX_ERR_NOMEM b is
 * broken. The envelope is NOT NUL-terminated while more are appended.
 */
struct outbox__buf_s;
outbox_err_t outbox__envelope_append(const outbox_msg_t *msg, struct outbox__buf_s *b, char *errstr,
                                     size_t errstr_size);

#endif
