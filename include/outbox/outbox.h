/*
 * outbox — transactional outbox for C.
 *
 * Public API. Only opaque handles are visible here; struct bodies live in
 * src/. Conventions (see STYLE.md):
 *   - every fallible call returns outbox_err_t and, where it takes them, fills
 *     errstr/errstr_size with a sentence saying what went wrong;
 *   - _new/_destroy pairs; _destroy(NULL) is a no-op;
 *   - a function that takes ownership says so in its comment.
 */
#ifndef OUTBOX_OUTBOX_H
#define OUTBOX_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#ifdef __cplusplus
extern "C" {
#endif

#define OUTBOX_VERSION_STR "0.1.0"

/** Error codes. outbox_err_str() gives a short description of each. */
typedef enum {
    OUTBOX_OK = 0,
    OUTBOX_ERR_INVALID_ARG,        /**< bad input: missing field, malformed JSON or UUID */
    OUTBOX_ERR_NOT_IN_TRANSACTION, /**< enqueue/inbox called outside a transaction block */
    OUTBOX_ERR_DB,                 /**< the database returned an error or is unreachable */
    OUTBOX_ERR_BROKER,             /**< the broker is unreachable or failed (retryable) */
    OUTBOX_ERR_REJECTED,           /**< the broker refused this message for good (dead letter);
                                        from a consumer handler: it can never be applied */
    OUTBOX_ERR_TIMEOUT,            /**< an operation did not finish in time */
    OUTBOX_ERR_NOMEM,              /**< out of memory */
    OUTBOX_ERR_IO,                 /**< a system call or socket failed; errstr names it and the
                                        system's reason (strerror) */
    OUTBOX_ERR_CONFIG,             /**< unknown or invalid configuration */
    OUTBOX_ERR_NOT_FOUND,          /**< no such object */
    OUTBOX_ERR_UNSUPPORTED,        /**< not supported by this build or back end */
    OUTBOX_ERR__COUNT
} outbox_err_t;

/** A short, static, human-readable description of err. Never NULL. */
const char *outbox_err_str(outbox_err_t err);

/* ------------------------------------------------------------------------ */
/* UUIDs                                                                     */

#define OUTBOX_UUID_STRLEN 36

/** Writes a new time-ordered UUID (RFC 9562 version 7) as 36 lower-case
 *  characters plus NUL into out. This function can't fail. */
void outbox_uuid_v7(char out[OUTBOX_UUID_STRLEN + 1]);

/** 1 if s is a canonical textual UUID (8-4-4-4-12 hex digits), else 0. */
int outbox_uuid_valid(const char *s);

/* ------------------------------------------------------------------------ */
/* Producing: enqueue inside the caller's transaction                       */
/* outbox_enqueue, outbox_inbox_record and outbox_migrate* belong to the     */
/* PostgreSQL store: they take the caller's own libpq connection, so the     */
/* event commits or rolls back with the caller's business change.           */

/** An event to enqueue. The strings are borrowed for the duration of the call. */
typedef struct outbox_event_s {
    const char *id;          /**< optional UUID; a v7 UUID is generated when NULL */
    const char *topic;       /**< required: destination (stream, topic, exchange, subject prefix) */
    const char *type;        /**< required: event type, e.g. "OrderCreated" */
    const char *key;         /**< required: aggregate id; per-key order is kept */
    const char *payload;     /**< required: JSON text, becomes the CloudEvents "data" */
    const char *headers;     /**< optional: JSON object of string values */
    const char *traceparent; /**< optional: W3C traceparent of the causing request */
    const char *source;      /**< optional: CloudEvents source; default "/outbox" */
    const char *table;       /**< optional: the service's outbox table (see
                                  outbox_migrate_table); default "outbox" */
    int priority;            /**< optional: higher is claimed first across keys (within a
                                  key, order stays commit order); default 0 */
} outbox_event_t;

/**
 * Writes ev into the outbox table inside the transaction open on conn.
 *
 * The event commits or rolls back with the caller's transaction: it is
 * published only if that transaction commits. Refuses with
 * OUTBOX_ERR_NOT_IN_TRANSACTION when conn is not inside a transaction block
 * (enqueueing outside one would silently break the guarantee).
 *
 * @param id_out  if not NULL, receives the event id (37 bytes).
 * On OUTBOX_ERR_DB the caller's transaction is aborted and must be rolled back.
 */
outbox_err_t outbox_enqueue(PGconn *conn, const outbox_event_t *ev, char *id_out, char *errstr,
                            size_t errstr_size);

/* ------------------------------------------------------------------------ */
/* Consuming: the inbox                                                      */

/**
 * Records that consumer has processed message_id, inside the transaction open
 * on conn, so the consumer's effect and this record commit or roll back
 * together.
 *
 * *is_new is set to 1 the first time (apply the effect, then commit) and to 0
 * when the message was already processed (skip the effect). A concurrent
 * transaction recording the same message blocks here until it finishes.
 * Refuses with OUTBOX_ERR_NOT_IN_TRANSACTION outside a transaction block.
 */
outbox_err_t outbox_inbox_record(PGconn *conn, const char *consumer, const char *message_id,
                                 int *is_new, char *errstr, size_t errstr_size);

/* ------------------------------------------------------------------------ */
/* Schema                                                                    */

/**
 * Applies the library's migrations (the files in migrations/) that conn's database
 * has not seen yet. Safe to call from several processes at once: they
 * serialise on an advisory lock and each migration runs once.
 * *applied (if not NULL) receives the number applied by this call.
 */
outbox_err_t outbox_migrate(PGconn *conn, int *applied, char *errstr, size_t errstr_size);

/**
 * Applies the library's migrations, then creates the outbox table `table`
 * and its dead letters `<table>_dead_letter` if they do not exist: one outbox
 * table per service in one database. Names: [a-z_][a-z0-9_]*, at most 48
 * bytes. A relay configured with outbox_table = table reads only that table.
 */
outbox_err_t outbox_migrate_table(PGconn *conn, const char *table, int *applied, char *errstr,
                                  size_t errstr_size);

/* ------------------------------------------------------------------------ */
/* Configuration                                                             */

typedef struct outbox_conf_s outbox_conf_t;

/** A configuration holding every property at its default. NULL on ENOMEM. */
outbox_conf_t *outbox_conf_new(void);
outbox_conf_t *outbox_conf_dup(const outbox_conf_t *conf);
void outbox_conf_destroy(outbox_conf_t *conf);

/** Sets property name (e.g. "workers") to value, validating type and range. */
outbox_err_t outbox_conf_set(outbox_conf_t *conf, const char *name, const char *value, char *errstr,
                             size_t errstr_size);

/** Reads every property's environment variable (e.g. OUTBOX_WORKERS) that is
 *  set, plus the seed-style DB_HOST/DB_PORT/... and REDIS_ADDR fallbacks. */
outbox_err_t outbox_conf_from_env(outbox_conf_t *conf, char *errstr, size_t errstr_size);

/** The current value of name as text, or NULL for an unknown name. Secrets
 *  are returned in clear: never log this; use outbox_conf_dump() for logs. */
const char *outbox_conf_get(const outbox_conf_t *conf, const char *name);

/** Every property as "name=value" lines, secrets shown as **** and URL
 *  passwords removed: safe to log. The caller frees the string. NULL on
 *  ENOMEM or when conf is NULL. */
char *outbox_conf_dump(const outbox_conf_t *conf);

/* ------------------------------------------------------------------------ */
/* The relay engine (embeddable)                                             */

typedef struct outbox_relay_s outbox_relay_t;

/**
 * Creates a relay from conf. The conf object is freed by this function on
 * success. Does not connect yet.
 */
outbox_relay_t *outbox_relay_new(outbox_conf_t *conf, char *errstr, size_t errstr_size);

/** Starts the worker threads. Returns once they are running. */
outbox_err_t outbox_relay_start(outbox_relay_t *relay, char *errstr, size_t errstr_size);

/** Asks the relay to stop: workers stop claiming, finish (or roll back) the
 *  batch in flight and exit. Async-signal-safe. Returns at once. */
void outbox_relay_stop(outbox_relay_t *relay);

/** Waits until every worker has exited or timeout_ms passed (-1: forever).
 *  OUTBOX_ERR_TIMEOUT if some are still running. */
outbox_err_t outbox_relay_wait(outbox_relay_t *relay, int timeout_ms);

/** Stops (if running), waits and frees the relay. */
void outbox_relay_destroy(outbox_relay_t *relay);

/** Per-worker counters, for tests and status lines. worker is 0-based. */
typedef struct outbox_worker_stats_s {
    uint64_t published; /**< events acknowledged after broker confirmation */
    uint64_t failed;    /**< publish attempts that failed */
    uint64_t batches;   /**< non-empty batches handled */
    int lanes_held;     /**< lanes this worker owns right now */
} outbox_worker_stats_t;

/** Why the relay stopped by itself (e.g. its sink could not be opened), or
 *  NULL while it runs or after a requested stop. */
const char *outbox_relay_fatal(const outbox_relay_t *relay);

/** Number of workers of this relay. */
int outbox_relay_worker_count(const outbox_relay_t *relay);
outbox_err_t outbox_relay_worker_stats(const outbox_relay_t *relay, int worker,
                                       outbox_worker_stats_t *out);

#ifdef __cplusplus
}
#endif
#endif /* OUTBOX_OUTBOX_H */
