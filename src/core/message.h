/* The event as the relay hands it to a sink, and the CloudEvents envelope. */
#ifndef OUTBOX_CORE_MESSAGE_H
#define OUTBOX_CORE_MESSAGE_H

#include <stddef.h>
#include <stdint.h>

#include "outbox/outbox.h"

/** One claimed event. All strings are owned by the batch (freed together). */
typedef struct outbox_msg_s {
    int64_t seq;          /**< outbox row sequence (insertion order) */
    char id[OUTBOX_UUID_STRLEN + 1];
    const char *topic;
    const char *type;
    const char *key;      /**< aggregate id; CloudEvents subject and partitionkey */
    const char *source;
    const char *payload;  /**< JSON text: the CloudEvents data */
    const char *headers;  /**< JSON object text or NULL */
    const char *traceparent; /**< or NULL */
    const char *time;     /**< RFC 3339 UTC creation time */
    int attempts;         /**< publish attempts before this one */
    char *envelope;       /**< the CloudEvents JSON (structured mode), set by the relay */
    size_t envelope_len;
} outbox_msg_t;

/**
 * Builds the CloudEvents 1.0 structured-mode JSON for msg: id, source, type,
 * specversion "1.0", time, subject (key), datacontenttype
 * "application/json", data (payload parsed as JSON), partitionkey and, when
 * set, traceparent. Returns a malloc'd NUL-terminated string (caller frees),
 * or NULL if payload is not valid JSON or on ENOMEM (errstr says which).
 */
char *outbox__envelope_build(const outbox_msg_t *msg, size_t *len, char *errstr, size_t errstr_size);

#endif
