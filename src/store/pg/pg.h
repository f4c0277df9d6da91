/* PostgreSQL store: connections, migrations, and the producer and consumer
 * entry points (outbox_enqueue, outbox_inbox_record, outbox_migrate), which
 * take the caller's PGconn. The relay's queries are the store ops in
 * src/store/pg/relay_ops.c (outbox__store_pg_ops, see store/store.h). */
#ifndef OUTBOX_STORE_PG_H
#define OUTBOX_STORE_PG_H

#include <libpq-fe.h>
#include <stdint.h>

#include "core/message.h"
#include "outbox/outbox.h"
#include "store/migrations.h"
#include "store/store.h"

/* Advisory lock namespaces (two-int form: classid, objid). */
#define OUTBOX_LOCK_NS_LANE 0x6f627801        /* lane n -> (NS_LANE, n) */
#define OUTBOX_LOCK_NS_WORKER 0x6f627802      /* live relay worker -> (NS_WORKER, backend pid) */
#define OUTBOX_LOCK_MIGRATE 0x6f7574626f78LL  /* bigint form, migrations */
#define OUTBOX_NOTIFY_CHANNEL "outbox_wakeup" /* <table>_wakeup; this is the default table's */

/** Connects, with application_name set (may be NULL) and a clear error. */
PGconn *outbox__pg_connect(const char *conninfo, const char *appname, char *errstr,
                           size_t errstr_size);

/** Runs a parameterless command; fills errstr from the server on failure. */
outbox_err_t outbox__pg_exec(PGconn *conn, const char *sql, char *errstr, size_t errstr_size);

/** 1 when conn is inside a transaction block (idle or active in one). */
int outbox__pg_in_tx(PGconn *conn);

/** Applies list's migrations not yet recorded for component (e.g.
 *  "outbox", "orders"), under an advisory lock, one transaction each. */
outbox_err_t outbox__pg_migrate_set(PGconn *conn, const char *component,
                                    const outbox_migration_t *list, int *applied, char *errstr,
                                    size_t errstr_size);

/**
 * Runs sql with params as the named prepared statement of conn's session,
 * preparing it on first use (one extra round trip per session and name).
 * What is prepared is remembered on the connection itself (libpq event
 * instance data), so a new or reset connection prepares again. Falls back to
 * an unnamed statement when the connection cannot keep the record. name must
 * start with "outbox_" and be unique per sql. Returns the result (check its
 * status), never NULL unless out of memory.
 */
PGresult *outbox__pg_exec_prepared(PGconn *conn, const char *name, const char *sql, int n,
                                   const char *const *params);

/** outbox_enqueue's statement for one event, for a caller that sends it
 *  itself (in a pipeline with other statements of its transaction). */
typedef struct outbox_pg_enqueue_s {
    char id[OUTBOX_UUID_STRLEN + 1]; /**< the event's id (ev->id, or a new UUIDv7) */
    char prio[16];
    char sql[512];
    char name[64]; /**< its prepared statement's name */
    const char *params[9];
    int hint;
} outbox_pg_enqueue_t;

/** Checks ev as outbox_enqueue does and fills st (which points into ev:
 *  keep ev alive while st is used). OUTBOX_ERR_INVALID_ARG with a sentence
 *  for a bad event. */
outbox_err_t outbox__pg_enqueue_stmt(const outbox_event_t *ev, outbox_pg_enqueue_t *st,
                                     char *errstr, size_t errstr_size);

/** What the statement's result r means, as outbox_enqueue reports it. */
outbox_err_t outbox__pg_enqueue_result(PGconn *conn, const PGresult *r,
                                       const outbox_pg_enqueue_t *st, char *errstr,
                                       size_t errstr_size);

/**
 * The first half of outbox__pg_exec_prepared, for a caller that then sends
 * the statement in pipeline mode: prepares name on conn's session unless
 * this connection did already (one round trip, the first time only). Not in
 * pipeline mode. Returns 1 when the statement may be run by name
 * (PQsendQueryPrepared), 0 when it must be sent with its text (the
 * connection keeps no more names), or -1 with *res set to the failed
 * PREPARE's result (the caller reports and clears it).
 */
int outbox__pg_prepare_once(PGconn *conn, const char *name, const char *sql, PGresult **res);

/**
 * Runs n statements in one round trip (libpq pipeline mode, then one Sync):
 * statement i is names[i] when prepared[i] is 1 (see outbox__pg_prepare_once),
 * else sqls[i] with its text; nparams[i] parameters params[i]. Stores each
 * statement's result in res[i] (the caller clears them; after a failed one
 * the rest are PGRES_PIPELINE_ABORTED) and leaves pipeline mode. Returns 0,
 * or -1 when the connection failed on the way (res[] then holds what came,
 * the rest NULL; the connection is no longer usable for a transaction).
 */
int outbox__pg_pipeline(PGconn *conn, int n, const char *const *names, const char *const *sqls,
                        const int *prepared, const int *nparams, const char *const *const *params,
                        PGresult **res);

/**
 * Copies msg (a libpq or server message) into out with every password
 * masked as "****": URL passwords and password=... (outbox__redact_url),
 * password (e.g. PQpass(conn); may be NULL), and the password of conninfo
 * (may be NULL) as libpq reads it and as it is written, so a message that
 * echoes a conninfo libpq could not parse leaks nothing. Always
 * NUL-terminates.
 */
void outbox__pg_redact(const char *msg, const char *conninfo, const char *password, char *out,
                       size_t out_size);

/** The server's message for res (or conn's) without the trailing newline,
 *  as "what: message" in errstr, the connection's password masked; returns
 *  OUTBOX_ERR_DB. */
outbox_err_t outbox__pg_err(PGconn *conn, const PGresult *res, char *errstr, size_t errstr_size,
                            const char *what);

/** The connection of a PostgreSQL store session (relay_ops.c). */
PGconn *outbox__pg_store_conn(outbox_store_t *s);

/* Consumer attempts and dead letters (consumer_ops.c): the store ops of the
 * same names in store/store.h. */
outbox_err_t outbox__pg_consumer_failed(outbox_store_t *s, const outbox_consumer_msg_t *m,
                                        const char *error, int reject, int max_attempts,
                                        int *attempts, int *dead, char *errstr, size_t errstr_size);
outbox_err_t outbox__pg_consumer_done(outbox_store_t *s, const char *group, const char *message_id,
                                      char *errstr, size_t errstr_size);
outbox_err_t outbox__pg_consumer_has_attempts(outbox_store_t *s, const char *group, int *any,
                                              char *errstr, size_t errstr_size);
outbox_err_t outbox__pg_cdl_list(outbox_store_t *s, const char *group, const char *topic,
                                 int requeued_only, int limit,
                                 void (*cb)(void *arg, const outbox_consumer_dead_t *d), void *arg,
                                 char *errstr, size_t errstr_size);
outbox_err_t outbox__pg_cdl_show(outbox_store_t *s, long long id, char **json, char *errstr,
                                 size_t errstr_size);
outbox_err_t outbox__pg_cdl_requeue(outbox_store_t *s, long long id, const char *group,
                                    long long *n, char *errstr, size_t errstr_size);
outbox_err_t outbox__pg_cdl_purge(outbox_store_t *s, long long id, const char *group,
                                  int64_t older_than_ms, long long *n, char *errstr,
                                  size_t errstr_size);

#endif
