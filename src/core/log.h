/* Structured logging: one JSON object per line on stderr (or text with
 * OUTBOX_LOG_FORMAT=text). Fields: ts, level, component, event, msg and any
 * extra key/value pairs. Secrets must be redacted by the caller
 * (outbox__redact_url) before they reach a log call. Thread-safe. */
#ifndef OUTBOX_CORE_LOG_H
#define OUTBOX_CORE_LOG_H

#include <stddef.h>

typedef enum {
    OUTBOX_LOG_DEBUG = 0,
    OUTBOX_LOG_INFO,
    OUTBOX_LOG_WARN,
    OUTBOX_LOG_ERROR
} outbox_log_level_t;

/** Sets the threshold and format ("json" or "text"). Unknown values keep the default. */
void outbox__log_setup(const char *level, const char *format);
int outbox__log_enabled(outbox_log_level_t level);

/**
 * Logs one line. kv is a NULL-terminated list of alternating key and value
 * strings appended as extra fields, e.g.
 *   outbox__log(OUTBOX_LOG_INFO, "relay", "worker_started", "started",
 *               "worker", "worker-1", NULL);
 * msg may be a printf-free plain string; use outbox__logf for formatting.
 */
void outbox__log(outbox_log_level_t level, const char *component, const char *event,
                 const char *msg, ...) __attribute__((sentinel));

/** Like outbox__log but msg is a printf format; no extra fields. */
void outbox__logf(outbox_log_level_t level, const char *component, const char *event,
                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/** Copies url into out with any password replaced by "****" (URLs and libpq
 *  key=value conninfo alike). Always NUL-terminates. */
void outbox__redact_url(const char *url, char *out, size_t out_size);

#endif
