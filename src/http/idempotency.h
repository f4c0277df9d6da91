/*
 * Idempotency-Key (IETF draft "The Idempotency-Key HTTP Header Field") on
 * PostgreSQL, for the services' POST handlers.
 *
 * The key record commits in the SAME transaction as the request's effect:
 *
 *   BEGIN
 *   outbox__idem_begin()      non-blocking per-key lock (pg_try_advisory_xact_lock):
 *                               not acquired            -> IN_FLIGHT  (reply 409)
 *                             stored response for the key:
 *                               same fingerprint        -> REPLAY     (reply it as stored)
 *                               different fingerprint   -> MISMATCH   (reply 422)
 *                               none                    -> NEW
 *   ... the work ...
 *   outbox__idem_store()      the response, in the same transaction
 *   COMMIT                    releases the lock; a later request sees the row
 *
 * The lock lives until the transaction ends, and a crash rolls back both the
 * work and the key, so a retry after a crash does the work once. Only
 * successful (2xx) responses are stored; an error leaves no key behind, so a
 * client may fix the request and retry with the same key.
 */
#ifndef OUTBOX_HTTP_IDEMPOTENCY_H
#define OUTBOX_HTTP_IDEMPOTENCY_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "outbox/outbox.h"

#define OUTBOX_IDEM_KEY_MAX 255

typedef enum {
    OUTBOX_IDEM_NEW = 0,
    OUTBOX_IDEM_REPLAY,
    OUTBOX_IDEM_MISMATCH,
    OUTBOX_IDEM_IN_FLIGHT
} outbox_idem_state_t;

/** Outcome of outbox__idem_begin; free with outbox__idem_term. */
typedef struct outbox_idem_s {
    outbox_idem_state_t state;
    unsigned status;       /**< REPLAY: stored status */
    char content_type[64]; /**< REPLAY: stored content type */
    char *body;            /**< REPLAY: stored body (malloc'd) */
    size_t body_len;
} outbox_idem_t;

/** Applies the key table's migration (component "http"). Outside a transaction. */
outbox_err_t outbox__idem_migrate(PGconn *conn, char *errstr, size_t errstr_size);

/**
 * Validates and normalises a header value of len bytes (from
 * outbox__http_header_n): a Structured Field string ("quoted", the draft's
 * syntax) or a bare token as most clients send it. The key must be 1..255
 * printable ASCII characters: a NUL or any other control byte anywhere in
 * the value refuses it (a key cut at a NUL would collide with another).
 * Returns 0 and writes the key into out, or -1 with a sentence in why.
 */
int outbox__idem_key_parse(const char *header, size_t len, char out[OUTBOX_IDEM_KEY_MAX + 1],
                           char *why, size_t why_size);

/** Request fingerprint: hex SHA-256 of method, path and body. */
void outbox__idem_fingerprint(const char *method, const char *path, const char *body, size_t len,
                              char out[65]);

/** See the file comment. conn must be inside a transaction. scope names the
 *  key space (e.g. the service). */
outbox_err_t outbox__idem_begin(PGconn *conn, const char *scope, const char *key,
                                const char *fingerprint, outbox_idem_t *out, char *errstr,
                                size_t errstr_size);

/**
 * The same as BEGIN then outbox__idem_begin, in one round trip (libpq
 * pipeline mode): conn must be idle, outside a transaction; on return the
 * transaction is open whatever the outcome (on an error, aborted: roll it
 * back). OUTBOX_ERR_DB when the connection failed on the way.
 */
outbox_err_t outbox__idem_begin_tx(PGconn *conn, const char *scope, const char *key,
                                   const char *fingerprint, outbox_idem_t *out, char *errstr,
                                   size_t errstr_size);

/** Stores the response under the key in the open transaction, expiring after
 *  retention_ms. OUTBOX_ERR_INVALID_ARG if a live record already exists. */
outbox_err_t outbox__idem_store(PGconn *conn, const char *scope, const char *key,
                                const char *fingerprint, unsigned status, const char *content_type,
                                const char *body, int64_t retention_ms, char *errstr,
                                size_t errstr_size);

/**
 * outbox_enqueue(conn, ev) then outbox__idem_store(...) in one round trip
 * (libpq pipeline mode), inside the open transaction. ev->id, when set, is
 * the event's id (a response that names it is built before). Returns what
 * outbox_enqueue would for the event (then no key record is written), or
 * for the key record what outbox__idem_store would: OUTBOX_ERR_INVALID_ARG
 * with *key_recorded = 1 when the key is recorded already.
 */
outbox_err_t outbox__idem_enqueue_store(PGconn *conn, const outbox_event_t *ev, const char *scope,
                                        const char *key, const char *fingerprint, unsigned status,
                                        const char *content_type, const char *body,
                                        int64_t retention_ms, int *key_recorded, char *errstr,
                                        size_t errstr_size);

/** Deletes expired keys (own statement, not in a transaction). */
outbox_err_t outbox__idem_purge(PGconn *conn, long long *deleted, char *errstr, size_t errstr_size);

void outbox__idem_term(outbox_idem_t *idem);

#endif
