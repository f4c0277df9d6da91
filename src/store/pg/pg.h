/* PostgreSQL back end: connections, migrations, the outbox queries. */
#ifndef OUTBOX_STORE_PG_H
#define OUTBOX_STORE_PG_H

#include <libpq-fe.h>
#include <stdint.h>

#include "core/message.h"
#include "outbox/outbox.h"
#include "store/migrations.h"

/* Advisory lock namespaces (two-int form: classid, objid). */
#define OUTBOX_LOCK_NS_LANE 0x6f627801   /* lane n -> (NS_LANE, n) */
#define OUTBOX_LOCK_NS_WORKER 0x6f627802 /* live relay worker -> (NS_WORKER, backend pid) */
#define OUTBOX_LOCK_MIGRATE 0x6f7574626f78LL /* bigint form, migrations */
#define OUTBOX_LANES 64                /* must match migrations/0001_outbox.sql */
#define OUTBOX_NOTIFY_CHANNEL "outbox_wakeup"

/** Connects, with application_name set (may be NULL) and a clear error. */
PGconn *outbox__pg_connect(const char *conninfo, const char *appname, char *errstr, size_t errstr_size);

/** Runs a parameterless command; fills errstr from the server on failure. */
outbox_err_t outbox__pg_exec(PGconn *conn, const char *sql, char *errstr, size_t errstr_size);

/** 1 when conn is inside a transaction block (idle or active in one). */
int outbox__pg_in_tx(PGconn *conn);

/** Applies list's migrations not yet recorded for component (e.g.
 *  "outbox", "orders"), under an advisory lock, one transaction each. */
outbox_err_t outbox__pg_migrate_set(PGconn *conn, const char *component,
                                    const outbox_migration_t *list, int *applied, char *errstr,
                                    size_t errstr_size);

/* ---- relay side ---- */

/** A claimed batch: the rows and their messages. */
typedef struct outbox_batch_s {
    PGresult *res;     /* owns the strings msgs point into */
    outbox_msg_t *msgs;
    size_t n;
} outbox_batch_t;

/**
 * In the open transaction on conn: claims up to limit due events of the
 * given lanes, in seq order, skipping any key whose earlier event is not yet
 * due (retrying) or is held in the dead-letter table (hold mode), with FOR
 * UPDATE SKIP LOCKED.
 */
outbox_err_t outbox__pg_claim(PGconn *conn, const int *lanes, int nlanes, int limit,
                              outbox_batch_t *batch, char *errstr, size_t errstr_size);
void outbox__pg_batch_term(outbox_batch_t *batch);

/** Deletes the acknowledged events (seqs) in the open transaction. */
outbox_err_t outbox__pg_ack(PGconn *conn, const int64_t *seqs, int n, char *errstr, size_t errstr_size);

/** Records a failed attempt: attempts+1, next_attempt_at = now()+delay_ms, error appended. */
outbox_err_t outbox__pg_fail(PGconn *conn, int64_t seq, int64_t delay_ms, const char *error,
                             char *errstr, size_t errstr_size);

/** Moves the event to the dead-letter table with reason ("max_attempts",
 *  "rejected"); in park mode later events of its key follow it. */
outbox_err_t outbox__pg_dead_letter(PGconn *conn, int64_t seq, const char *reason,
                                    const char *error, int park, char *errstr, size_t errstr_size);

#endif
