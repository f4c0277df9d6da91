/*
 * The service kit: the one header a business service (services/<name>/)
 * includes besides "outbox/outbox.h", the client libraries (libpq, jansson,
 * hiredis, ...) and its own headers. See docs/SERVICE_KIT.md.
 *
 * Rule: a service uses the public API (include/outbox/) plus this kit and
 * nothing else under src/. The CTest entry orders_kit_boundary
 * (tests/orders/check_kit_boundary.sh) fails when a file under services/
 * includes any other src/ header.
 *
 * What the kit gives, and how:
 *
 *   HTTP layer       re-exported whole: http/http.h (routes, JSON bodies,
 *                    problem+json, /healthz /readyz /metrics) and
 *                    http/idempotency.h (Idempotency-Key records), outbox__http_*
 *                    and outbox__idem_* calls.
 *   database pool    re-exported whole: http/dbpool.h (outbox__dbpool_*).
 *   database         wrapped here (outbox_kit_db_*, outbox_kit_migrate): connect,
 *                    exec, in-transaction check, COMMIT with a three-way
 *                    outcome, the service's own migrations.
 *   configuration    wrapped here (outbox_kit_conf_*): load, typed getters,
 *                    --help, log the effective configuration.
 *   JSON logger      re-exported whole: core/log.h (outbox__log, outbox__logf).
 *   JSON text        re-exported whole: core/json.h (the strict scanner, string
 *                    escaping as jansson writes it) and core/buf.h (the growable
 *                    buffer it appends to), to write a hot path's JSON without
 *                    a jansson tree.
 *   process basics   wrapped here: the daemons' shared SIGINT/SIGTERM set-up,
 *                    a monotonic clock, an interruptible sleep.
 *
 * Headers written for services (the HTTP layer, the pool, the logger) are
 * re-exported as they are. Headers that also hold another layer's internals
 * (store/pg/pg.h: the store's queries; core/conf.h: the table itself;
 * core/util.h) are not: the kit passes on only the calls a service needs,
 * under outbox_kit_* names, so those layers can change behind it.
 */
#ifndef OUTBOX_KIT_KIT_H
#define OUTBOX_KIT_KIT_H

#include <libpq-fe.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/buf.h"
#include "core/json.h"
#include "core/log.h"
#include "http/dbpool.h"
#include "http/http.h"
#include "http/idempotency.h"
#include "outbox/outbox.h"
#include "store/migrations.h" /* outbox_migration_t: the row type of embedded migrations */

/* ------------------------------------------------------------------------ */
/* Configuration (the library's one table: every service property is a row) */

/* Scopes for outbox_kit_conf_print_help / outbox_kit_conf_log. */
#define OUTBOX_KIT_SCOPE_DB 0x01      /**< database connection */
#define OUTBOX_KIT_SCOPE_RELAY 0x02   /**< relay engine */
#define OUTBOX_KIT_SCOPE_SINK 0x04    /**< sink (broker) options */
#define OUTBOX_KIT_SCOPE_HTTP 0x08    /**< the HTTP layer */
#define OUTBOX_KIT_SCOPE_SERVICE 0x10 /**< business services and consumers */
#define OUTBOX_KIT_SCOPE_LOG 0x20     /**< logging */
#define OUTBOX_KIT_SCOPE_ALL 0xff

/**
 * The start of a service's main(): defaults, then the environment, then
 * argv, then the log settings. Returns the configuration (free it with
 * outbox_conf_destroy), or NULL with *exit_code set: 0 after printing usage
 * for --help, 2 after printing "prog: reason" to stderr for bad input. If
 * argi is NULL a positional argument is an error; otherwise *argi gets the
 * index of the first one.
 */
outbox_conf_t *outbox_kit_conf_load(const char *prog, int argc, char **argv,
                                    void (*usage)(FILE *fp), int *argi, int *exit_code);

/* Typed getters. Values were validated when set, so they cannot fail; an
 * unknown name or a wrong type aborts (a programming error). */
const char *outbox_kit_conf_str(const outbox_conf_t *conf, const char *name);
int64_t outbox_kit_conf_int(const outbox_conf_t *conf, const char *name);
int outbox_kit_conf_bool(const outbox_conf_t *conf, const char *name);
/** A duration property in milliseconds. */
int64_t outbox_kit_conf_ms(const outbox_conf_t *conf, const char *name);

/** The service's own default for name: sets value unless the command line,
 *  the environment or a file set name. 1 set, 0 left as it was, -1 value
 *  refused. */
int outbox_kit_conf_default(outbox_conf_t *conf, const char *name, const char *value);

/** The database conninfo: database_url, else built from DB_HOST, DB_PORT,
 *  DB_USER, DB_PASSWORD, DB_NAME. Owned by conf. Contains the password:
 *  never log it. */
const char *outbox_kit_conf_database_url(const outbox_conf_t *conf);

/** Prints the properties of the given scopes as --help text. */
void outbox_kit_conf_print_help(FILE *fp, unsigned scopes);

/** Logs the effective configuration of the given scopes once, secrets and
 *  URL passwords redacted. */
void outbox_kit_conf_log(const outbox_conf_t *conf, const char *component, unsigned scopes);

/* ------------------------------------------------------------------------ */
/* Database                                                                  */

/** Connects with application_name set (may be NULL) and a 10 s connect
 *  timeout. NULL with libpq's reason in errstr on failure. */
PGconn *outbox_kit_db_connect(const char *conninfo, const char *appname, char *errstr,
                              size_t errstr_size);

/** Runs a parameterless command (BEGIN, ROLLBACK, SET ...); OUTBOX_ERR_DB
 *  with the server's message in errstr on failure. Use
 *  outbox_kit_db_commit, not this, for COMMIT. */
outbox_err_t outbox_kit_db_exec(PGconn *conn, const char *sql, char *errstr, size_t errstr_size);

/** 1 when conn is inside a transaction block (idle or active in one). */
int outbox_kit_db_in_tx(PGconn *conn);

#define OUTBOX_KIT_PIPELINE_MAX 8
/** Sends n (1..OUTBOX_KIT_PIPELINE_MAX) statements with text parameters in
 *  one round trip (libpq pipeline mode): names[i] a statement the session
 *  has prepared, or NULL (or names NULL) to send sqls[i] unnamed. Reads
 *  every result into res[0..n) (NULL for those not run after a failure;
 *  the caller clears them). 0, or -1 when the connection refused or broke. */
int outbox_kit_db_pipeline(PGconn *conn, int n, const char *const *names, const char *const *sqls,
                           const int *nparams, const char *const *const *params, PGresult **res);

/** 1 when outbox_enqueue sends the wake-up hint with every event
 *  (OUTBOX_NOTIFY): a service writing events with its own INSERT sends it
 *  too. */
int outbox_kit_enqueue_hint(void);

/** What became of a COMMIT. */
typedef enum {
    OUTBOX_KIT_COMMITTED = 0, /**< the server confirmed the commit */
    OUTBOX_KIT_ROLLED_BACK,   /**< the server answered: nothing was written */
    OUTBOX_KIT_COMMIT_UNKNOWN /**< the connection broke before the answer came: the
                                   transaction may or may not have committed */
} outbox_kit_commit_t;

/**
 * Sends COMMIT for the transaction open on conn and tells which of the
 * three outcomes happened; errstr says why for the last two. Only when the
 * server answers is the outcome known: a connection that breaks while COMMIT
 * is on its way, or before its answer arrives, leaves the commit unknown,
 * and a caller must not report "nothing was written" then (see
 * docs/SERVICE_KIT.md: answer "outcome unknown, retry with the same
 * Idempotency-Key").
 */
outbox_kit_commit_t outbox_kit_db_commit(PGconn *conn, char *errstr, size_t errstr_size);

/**
 * Applies the service's own migrations (list, ending with a {0, NULL, NULL}
 * row; services embed services/<name>/migrations/ with
 * cmake/embed_sql.cmake) not yet recorded for component (e.g. "orders"),
 * under an advisory lock, one transaction each. Outside a transaction.
 * *applied (may be NULL) gets how many ran.
 */
outbox_err_t outbox_kit_migrate(PGconn *conn, const char *component, const outbox_migration_t *list,
                                int *applied, char *errstr, size_t errstr_size);

/* ------------------------------------------------------------------------ */
/* Process basics                                                            */

/** Installs handler for SIGINT and SIGTERM (no SA_RESTART) and ignores
 *  SIGPIPE: the shutdown set-up every daemon here shares. */
void outbox_kit_on_stop_signals(void (*handler)(int));

/** Redis from the configuration (redis_addr "host:port" or a redis:// URL,
 *  redis_password): connects, AUTH, SELECT, with timeout_ms on the connect
 *  and every command. The caller owns the context (redisFree). NULL with
 *  errstr saying which step failed (never the password). */
struct redisContext;
struct redisContext *outbox_kit_redis_connect(const outbox_conf_t *conf, int64_t timeout_ms,
                                              char *errstr, size_t errstr_size);

/** Monotonic clock in milliseconds. */
int64_t outbox_kit_now_ms(void);

/** Sleeps ms milliseconds; returns early once *stop (may be NULL) is
 *  non-zero. A stop flag that other threads (or a signal handler) set is an
 *  _Atomic int: a plain or volatile int shared that way is a data race. */
void outbox_kit_sleep_ms(int64_t ms, _Atomic int *stop);

/** Names the calling thread "<prefix><name>" for top -H, ps -L and perf
 *  (Linux keeps 15 bytes). */
void outbox_kit_thread_name(const char *prefix, const char *name);

/** Joins consumer thread t if it ends by deadline_ms (an outbox_kit_now_ms()
 *  time; <= 0: waits for ever): 0. Else logs the warning shutdown_timeout
 *  (component, "consumer" consumer) and returns -1 with t left running: the
 *  caller ends the process (its open transaction rolls back, its messages
 *  are delivered again). For a service's stop bounded by shutdown_timeout. */
int outbox_kit_join_consumer(pthread_t t, int64_t deadline_ms, const char *component,
                             const char *consumer);

/* ------------------------------------------------------------------------ */
/* The pieces every service's main() has                                     */

/** The embedded relay: outbox_relay_new on a copy of conf, then
 *  outbox_relay_start. NULL on failure, logged as "<component>
 *  relay_failed" with the reason. Stop it with outbox_relay_destroy. */
outbox_relay_t *outbox_kit_relay_start(const outbox_conf_t *conf, const char *component);

/** The service's HTTP API on the configured http_addr and port, with the
 *  http_max_body, http_max_connections and http_timeout limits. Logs
 *  "<name> listening" ("Server starting on port N", the seeds' line), or
 *  "<name> listen_failed" with the reason and returns NULL. */
outbox_http_t *outbox_kit_http_start(const outbox_conf_t *conf, const char *name,
                                     const outbox_http_route_t *routes, void *opaque,
                                     outbox_http_ready_fn ready);

/** When *next_ms is due, deletes the expired Idempotency-Key records through
 *  pool and sets *next_ms to the next time (a tenth of retention_ms, between
 *  1 s and 60 s). Failures are logged as "<component> purge_failed"; the
 *  pool being down just skips this round. */
void outbox_kit_idem_purge_due(outbox_dbpool_t *pool, int64_t retention_ms, int64_t *next_ms,
                               const char *component);

#endif
