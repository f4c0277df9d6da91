/*
 * A small pool of PostgreSQL connections for request threads. Connections
 * are opened lazily and replaced when broken; a connection handed back
 * inside a transaction is rolled back first. Thread-safe.
 */
#ifndef OUTBOX_HTTP_DBPOOL_H
#define OUTBOX_HTTP_DBPOOL_H

#include <libpq-fe.h>
#include <stddef.h>

#include "outbox/outbox.h"

typedef struct outbox_dbpool_s outbox_dbpool_t;

/** A pool of up to size connections to conninfo (copied). NULL on ENOMEM. */
outbox_dbpool_t *outbox__dbpool_new(const char *conninfo, int size, const char *appname);

/** Borrows a connection, waiting up to timeout_ms for a free one and
 *  connecting if needed. NULL with errstr when none could be had. */
PGconn *outbox__dbpool_get(outbox_dbpool_t *p, int timeout_ms, char *errstr, size_t errstr_size);

/** Hands conn back. Rolls back an open transaction; drops a broken one. */
void outbox__dbpool_put(outbox_dbpool_t *p, PGconn *conn);

/** 0 when the database answers SELECT 1 on a pooled connection, else -1
 *  with why (an outbox_http_ready_fn with the pool as opaque). */
int outbox__dbpool_ready(void *pool, char *why, size_t why_size);

/** Closes every connection. Connections still borrowed are closed when put. */
void outbox__dbpool_destroy(outbox_dbpool_t *p);

#endif
