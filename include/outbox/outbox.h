/*
 * outbox — transactional outbox for C.
 *
 * Public API. Only opaque handles are visible here; struct bodies live in
 * src/. Conventions (see STYLE.md):
 *   - every fallible call returns outbox_err_t and, where it takes them, fills
 *     errstr/errstr_size with a sentence saying what went wrong;
 *   - _new/_destroy pairs; _destroy(NULL) is a no-op;
 *   - a function that takes ownership says so in its comment; otherwise the
 *     caller keeps what it passes and pointers are borrowed for the call;
 *   - thread safety: functions without a handle are thread-safe; a handle
 *     (PGconn, outbox_conf_t, outbox_consumer_t) is used by one thread at a
 *     time unless its comment says otherwise (outbox_relay_t's stop and
 *     stats calls may come from any thread).
 * The reference generated from these comments is docs/API.md.
 */
#ifndef OUTBOX_OUTBOX_H
#define OUTBOX_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The version of these headers, as text ("MAJOR.MINOR.PATCH") and as a
 *  number 0xMMmmpp (major, minor, patch: one byte each) for #if tests. The
 *  library that is actually linked says its own with outbox_version(). */
#define OUTBOX_VERSION_STR "0.1.0"
#define OUTBOX_VERSION 0x000100

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

/** A short, static, human-readable description of err (any value, also an
 *  unknown one). Never NULL; the string is static. Thread-safe. */
const char *outbox_err_str(outbox_err_t err);

/** The version of the linked library as 0xMMmmpp (compare with
 *  OUTBOX_VERSION to detect a header/library mismatch). Thread-safe. */
int outbox_version(void);
/** The version of the linked library as static text, e.g. "0.1.0". Never
 *  NULL; thread-safe. */
const char *outbox_version_str(void);

/* ------------------------------------------------------------------------ */
/* UUIDs                                                                     */

#define OUTBOX_UUID_STRLEN 36

/** Writes a new time-ordered UUID (RFC 9562 version 7) as 36 lower-case
 *  characters plus NUL into out. Ids made by one process are strictly
 *  increasing. This function can't fail. Thread-safe. */
void outbox_uuid_v7(char out[OUTBOX_UUID_STRLEN + 1]);

/** 1 if s is a canonical textual UUID (8-4-4-4-12 hex digits), else 0
 *  (also for NULL). Thread-safe. */
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
    int wakeup_hint;         /**< optional: 1 also sends pg_notify('<table>_wakeup'), for
                                  relays run with notify=true; 0 (default) sends it only when
                                  OUTBOX_NOTIFY=true is in the process environment. Without
                                  it a relay's watcher (poll_min_interval, on by default)
                                  sees the event within milliseconds, and the hint costs
                                  producers' commit throughput (NOTIFY serialises commits) */
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
 * Errors: OUTBOX_ERR_INVALID_ARG (a required field missing, payload or
 * headers not JSON, a bad id or table name; nothing was written),
 * OUTBOX_ERR_NOT_IN_TRANSACTION, OUTBOX_ERR_DB (the caller's transaction is
 * aborted and must be rolled back). ev and its strings are borrowed for the
 * call. Uses conn, so one thread at a time per conn (as libpq requires).
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
 * Refuses with OUTBOX_ERR_NOT_IN_TRANSACTION outside a transaction block;
 * OUTBOX_ERR_INVALID_ARG for a consumer name outside 1..255 bytes or a
 * message id that is not a UUID; on
 * OUTBOX_ERR_DB the transaction is aborted (roll back). One thread at a time
 * per conn.
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
 * Runs its own transactions: call it outside one. OUTBOX_ERR_DB with errstr
 * naming the migration that failed (it is rolled back). One thread at a time
 * per conn.
 */
outbox_err_t outbox_migrate(PGconn *conn, int *applied, char *errstr, size_t errstr_size);

/**
 * Applies the library's migrations, then creates the outbox table `table`
 * and its dead letters `<table>_dead_letter` if they do not exist: one outbox
 * table per service in one database. Names: [a-z_][a-z0-9_]*, at most 48
 * bytes (else OUTBOX_ERR_INVALID_ARG). A relay configured with outbox_table =
 * table reads only that table. Like outbox_migrate: outside a transaction,
 * one thread at a time per conn.
 */
outbox_err_t outbox_migrate_table(PGconn *conn, const char *table, int *applied, char *errstr,
                                  size_t errstr_size);

/* ------------------------------------------------------------------------ */
/* Configuration                                                             */

typedef struct outbox_conf_s outbox_conf_t;

/** A configuration holding every property at its default (the table in
 *  docs/CONFIGURATION.md). The caller owns it: outbox_conf_destroy(), or
 *  hand it to outbox_relay_new(). NULL on ENOMEM. Thread-safe. */
outbox_conf_t *outbox_conf_new(void);
/** A copy of conf with the same values (and the same record of which were
 *  set). The caller owns the copy. NULL on ENOMEM. conf is only read: any
 *  number of threads may copy one conf nobody modifies. */
outbox_conf_t *outbox_conf_dup(const outbox_conf_t *conf);
/** Frees conf and its strings (secrets included). outbox_conf_destroy(NULL)
 *  is a no-op. Not for a conf handed to a successful outbox_relay_new(). */
void outbox_conf_destroy(outbox_conf_t *conf);

/** Sets property name (e.g. "workers", or "--workers"-style "workers" with
 *  '-' for '_') to value, validating type and range: OUTBOX_ERR_CONFIG with
 *  errstr naming the property and the accepted values, and the old value
 *  kept. value is copied. One thread at a time per conf. */
outbox_err_t outbox_conf_set(outbox_conf_t *conf, const char *name, const char *value, char *errstr,
                             size_t errstr_size);

/** Reads every property's environment variable (e.g. OUTBOX_WORKERS) that is
 *  set, plus the seed-style DB_HOST/DB_PORT/... and REDIS_ADDR fallbacks.
 *  OUTBOX_ERR_CONFIG names the first bad variable. One thread at a time per conf; reads the
 * environment (getenv). */
outbox_err_t outbox_conf_from_env(outbox_conf_t *conf, char *errstr, size_t errstr_size);

/** The current value of name as text, or NULL for an unknown name. The
 *  string belongs to conf and is valid until name is set again or conf is
 *  destroyed. Secrets are returned in clear: never log this; use
 *  outbox_conf_dump() for logs. */
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
 * success (on failure the caller keeps it). Does not connect yet; validates
 * the configuration and the sink URL: NULL with errstr (OUTBOX_ERR_CONFIG's
 * reason) when they are unusable. One relay per conf; any number of relays
 * per process (each serves its own metrics/admin address).
 */
outbox_relay_t *outbox_relay_new(outbox_conf_t *conf, char *errstr, size_t errstr_size);

/** Starts the worker threads and the metrics/admin server (metrics_addr).
 *  Returns once they are running; workers connect on their own and keep
 *  retrying while the database or broker is down. Errors: OUTBOX_ERR_IO when
 *  the admin address cannot be bound or a thread cannot be created. Call once,
 *  from the thread that owns the relay. */
outbox_err_t outbox_relay_start(outbox_relay_t *relay, char *errstr, size_t errstr_size);

/** Asks the relay to stop: workers stop claiming, finish (or roll back) the
 *  batch in flight and exit. Async-signal-safe and callable from any thread;
 *  idempotent. Returns at once (outbox_relay_wait() waits). */
void outbox_relay_stop(outbox_relay_t *relay);

/** Waits until every worker has exited or timeout_ms passed (-1: forever).
 *  OUTBOX_ERR_TIMEOUT if some are still running (call again, or destroy).
 *  From the thread that owns the relay. */
outbox_err_t outbox_relay_wait(outbox_relay_t *relay, int timeout_ms);

/** Stops (if running), waits for the workers and frees the relay and the
 *  conf it took. outbox_relay_destroy(NULL) is a no-op. No other call on the
 *  relay may be running or follow. */
void outbox_relay_destroy(outbox_relay_t *relay);

/** Per-worker counters, for tests and status lines. worker is 0-based. */
typedef struct outbox_worker_stats_s {
    uint64_t published; /**< events acknowledged after broker confirmation */
    uint64_t failed;    /**< publish attempts that failed */
    uint64_t batches;   /**< non-empty batches handled */
    int lanes_held;     /**< lanes this worker owns right now */
} outbox_worker_stats_t;

/** Why the relay stopped by itself (e.g. its sink could not be opened), or
 *  NULL while it runs or after a requested stop. The string belongs to the
 *  relay. Callable from any thread. */
const char *outbox_relay_fatal(const outbox_relay_t *relay);

/** Number of workers of this relay (the workers property). Callable from
 *  any thread. */
int outbox_relay_worker_count(const outbox_relay_t *relay);
/** Copies worker's counters (0-based) into out. The counters are read
 *  atomically, each on its own, while the worker runs: callable from any
 *  thread. OUTBOX_ERR_INVALID_ARG for a worker out of range. */
outbox_err_t outbox_relay_worker_stats(const outbox_relay_t *relay, int worker,
                                       outbox_worker_stats_t *out);

#ifdef __cplusplus
}
#endif
#endif /* OUTBOX_OUTBOX_H */
