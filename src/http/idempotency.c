/* Idempotency keys on PostgreSQL. See idempotency.h. */
#include "http/idempotency.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "store/pg/pg.h"

static const char idem_sql_0001[] =
    "CREATE TABLE IF NOT EXISTS outbox_http_idempotency (\n"
    "    scope        text        NOT NULL,              -- key space, e.g. the service\n"
    "    key          text        NOT NULL,              -- the Idempotency-Key value\n"
    "    fingerprint  text        NOT NULL,              -- sha256(method, path, body)\n"
    "    status       integer     NOT NULL,              -- stored response\n"
    "    content_type text        NOT NULL,\n"
    "    body         text        NOT NULL,\n"
    "    created_at   timestamptz NOT NULL DEFAULT now(),\n"
    "    expires_at   timestamptz NOT NULL,\n"
    "    PRIMARY KEY (scope, key)\n"
    ");\n"
    "CREATE INDEX IF NOT EXISTS outbox_http_idempotency_expires ON outbox_http_idempotency "
    "(expires_at);\n";

static const outbox_migration_t idem_migrations[] = {
    {1, "0001_http_idempotency", idem_sql_0001},
    {0, NULL, NULL},
};

static outbox_err_t db_err(PGconn *conn, PGresult *r, char *errstr, size_t errstr_size,
                           const char *what)
{
    return outbox__pg_err(conn, r, errstr, errstr_size, what);
}

outbox_err_t outbox__idem_migrate(PGconn *conn, char *errstr, size_t errstr_size)
{
    return outbox__pg_migrate_set(conn, "http", idem_migrations, NULL, errstr, errstr_size);
}

/* Refuses byte c at position i of the key's header value unless it is
 * printable ASCII (0x20..0x7e). */
static int key_byte_ok(unsigned char c, size_t i, char *why, size_t why_size)
{
    if (c >= 0x20 && c <= 0x7e)
        return 1;
    if (c == 0)
        snprintf(
            why, why_size,
            "Idempotency-Key contains a NUL byte (at position %zu): send 1..%d printable ASCII "
            "characters, e.g. a UUID",
            i, OUTBOX_IDEM_KEY_MAX);
    else if (c < 0x20 || c == 0x7f)
        snprintf(why, why_size,
                 "Idempotency-Key contains the control byte 0x%02x (at position %zu): send 1..%d "
                 "printable "
                 "ASCII characters, e.g. a UUID",
                 c, i, OUTBOX_IDEM_KEY_MAX);
    else
        snprintf(why, why_size,
                 "Idempotency-Key must be printable ASCII (found byte 0x%02x at position %zu)", c,
                 i);
    return 0;
}

int outbox__idem_key_parse(const char *header, size_t len, char out[OUTBOX_IDEM_KEY_MAX + 1],
                           char *why, size_t why_size)
{
    size_t n = 0, i = 0;
    if (!header) {
        snprintf(why, why_size, "Idempotency-Key header is missing");
        return -1;
    }
    /* Every byte first: a NUL or control byte anywhere refuses the key,
     * whatever the syntax around it. */
    for (i = 0; i < len; i++)
        if (!key_byte_ok((unsigned char)header[i], i, why, why_size))
            return -1;
    if (len > 0 && header[0] == '"') {
        /* sf-string: "..." with \" and \\ escapes */
        for (i = 1; i < len && header[i] != '"'; i++) {
            if (header[i] == '\\') {
                i++;
                if (i >= len || (header[i] != '"' && header[i] != '\\')) {
                    snprintf(why, why_size, "Idempotency-Key: bad escape in quoted string");
                    return -1;
                }
            }
            if (n >= OUTBOX_IDEM_KEY_MAX) {
                snprintf(why, why_size, "Idempotency-Key is longer than %d characters",
                         OUTBOX_IDEM_KEY_MAX);
                return -1;
            }
            out[n++] = header[i];
        }
        if (i >= len || i + 1 != len) {
            snprintf(why, why_size, "Idempotency-Key: unterminated quoted string");
            return -1;
        }
    } else {
        for (i = 0; i < len; i++) {
            if (n >= OUTBOX_IDEM_KEY_MAX) {
                snprintf(why, why_size, "Idempotency-Key is longer than %d characters",
                         OUTBOX_IDEM_KEY_MAX);
                return -1;
            }
            out[n++] = header[i];
        }
    }
    out[n] = '\0';
    if (n == 0) {
        snprintf(why, why_size,
                 "Idempotency-Key is empty: send 1..%d printable ASCII characters, e.g. a UUID",
                 OUTBOX_IDEM_KEY_MAX);
        return -1;
    }
    return 0;
}

void outbox__idem_fingerprint(const char *method, const char *path, const char *body, size_t len,
                              char out[65])
{
    crypto_hash_sha256_state st;
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, (const unsigned char *)method, strlen(method));
    crypto_hash_sha256_update(&st, (const unsigned char *)"\n", 1);
    crypto_hash_sha256_update(&st, (const unsigned char *)path, strlen(path));
    crypto_hash_sha256_update(&st, (const unsigned char *)"\n", 1);
    if (len)
        crypto_hash_sha256_update(&st, (const unsigned char *)body, len);
    crypto_hash_sha256_final(&st, h);
    sodium_bin2hex(out, 65, h, sizeof(h));
}

#define IDEM_LOCK_SQL "SELECT pg_try_advisory_xact_lock(hashtextextended($1 || E'\\n' || $2, 0))"
#define IDEM_LOOKUP_SQL                                                                            \
    "SELECT fingerprint, status, content_type, body FROM outbox_http_idempotency"                  \
    " WHERE scope = $1 AND key = $2 AND expires_at > now()"

/* The lock's and the lookup's results: out->state and a replay's response. */
static outbox_err_t idem_read(PGconn *conn, PGresult *lock, PGresult *look, const char *fingerprint,
                              outbox_idem_t *out, char *errstr, size_t errstr_size)
{
    if (PQresultStatus(lock) != PGRES_TUPLES_OK)
        return db_err(conn, lock, errstr, errstr_size, "idempotency lock");
    if (PQgetvalue(lock, 0, 0)[0] != 't') {
        out->state = OUTBOX_IDEM_IN_FLIGHT; /* never wait: that request is still running */
        return OUTBOX_OK;
    }
    if (PQresultStatus(look) != PGRES_TUPLES_OK)
        return db_err(conn, look, errstr, errstr_size, "idempotency lookup");
    if (PQntuples(look) == 0) {
        out->state = OUTBOX_IDEM_NEW;
    } else if (strcmp(PQgetvalue(look, 0, 0), fingerprint) != 0) {
        out->state = OUTBOX_IDEM_MISMATCH;
    } else {
        out->state = OUTBOX_IDEM_REPLAY;
        out->status = (unsigned)atoi(PQgetvalue(look, 0, 1));
        snprintf(out->content_type, sizeof(out->content_type), "%s", PQgetvalue(look, 0, 2));
        out->body_len = (size_t)PQgetlength(look, 0, 3);
        out->body = malloc(out->body_len + 1);
        if (!out->body)
            return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
        memcpy(out->body, PQgetvalue(look, 0, 3), out->body_len + 1);
    }
    return OUTBOX_OK;
}

outbox_err_t outbox__idem_begin(PGconn *conn, const char *scope, const char *key,
                                const char *fingerprint, outbox_idem_t *out, char *errstr,
                                size_t errstr_size)
{
    memset(out, 0, sizeof(*out));
    if (!outbox__pg_in_tx(conn))
        return outbox__err(
            OUTBOX_ERR_NOT_IN_TRANSACTION, errstr, errstr_size,
            "idempotency check needs an open transaction (the key commits with the work)");
    const char *params[2] = {scope, key};
    /* Never wait: a request holding the key's lock is still in flight. */
    PGresult *lock = outbox__pg_exec_prepared(conn, "outbox_idem_lock", IDEM_LOCK_SQL, 2, params);
    PGresult *look = NULL;
    if (PQresultStatus(lock) == PGRES_TUPLES_OK && PQgetvalue(lock, 0, 0)[0] == 't')
        look = outbox__pg_exec_prepared(conn, "outbox_idem_lookup", IDEM_LOOKUP_SQL, 2, params);
    outbox_err_t e = idem_read(conn, lock, look, fingerprint, out, errstr, errstr_size);
    PQclear(lock);
    PQclear(look);
    return e;
}

outbox_err_t outbox__idem_begin_tx(PGconn *conn, const char *scope, const char *key,
                                   const char *fingerprint, outbox_idem_t *out, char *errstr,
                                   size_t errstr_size)
{
    memset(out, 0, sizeof(*out));
    if (PQtransactionStatus(conn) != PQTRANS_IDLE)
        return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
                           "idempotency check with BEGIN: the connection is not idle "
                           "(a transaction is open, or the connection broke)");
    const char *params[2] = {scope, key};
    const char *names[3] = {NULL, "outbox_idem_lock", "outbox_idem_lookup"};
    const char *sqls[3] = {"BEGIN", IDEM_LOCK_SQL, IDEM_LOOKUP_SQL};
    const char *const *pp[3] = {NULL, params, params};
    int prepared[3] = {0, 0, 0}, np[3] = {0, 2, 2};
    PGresult *res[3] = {NULL, NULL, NULL};
    for (int i = 1; i < 3; i++) {
        prepared[i] = outbox__pg_prepare_once(conn, names[i], sqls[i], &res[i]);
        if (prepared[i] < 0) {
            outbox_err_t e = db_err(conn, res[i], errstr, errstr_size, "idempotency check");
            PQclear(res[i]);
            return e;
        }
    }
    /* One round trip: BEGIN, the lock, the lookup (read even when the lock
     * is not taken: a read the reply then ignores). */
    outbox_err_t e;
    if (outbox__pg_pipeline(conn, 3, names, sqls, prepared, np, pp, res))
        e = outbox__err(OUTBOX_ERR_DB, errstr, errstr_size, "idempotency check: %s",
                        PQerrorMessage(conn));
    else if (PQresultStatus(res[0]) != PGRES_COMMAND_OK)
        e = db_err(conn, res[0], errstr, errstr_size, "BEGIN");
    else
        e = idem_read(conn, res[1], res[2], fingerprint, out, errstr, errstr_size);
    for (int i = 0; i < 3; i++)
        PQclear(res[i]);
    return e;
}

#define IDEM_STORE_SQL                                                                             \
    "INSERT INTO outbox_http_idempotency AS k (scope, key, fingerprint, status, content_type, "    \
    "body, expires_at)"                                                                            \
    " VALUES ($1, $2, $3, $4::int, $5, $6, now() + $7::bigint * interval '1 millisecond')"         \
    " ON CONFLICT (scope, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, status = "        \
    "EXCLUDED.status,"                                                                             \
    "   content_type = EXCLUDED.content_type, body = EXCLUDED.body, created_at = now(),"           \
    "   expires_at = EXCLUDED.expires_at"                                                          \
    " WHERE k.expires_at <= now()"

/* The key record's result: OUTBOX_ERR_INVALID_ARG when the key is already
 * recorded (and has not expired). */
static outbox_err_t store_result(PGconn *conn, const PGresult *r, char *errstr, size_t errstr_size)
{
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        return db_err(conn, (PGresult *)r, errstr, errstr_size, "storing idempotency key");
    if (atoi(PQcmdTuples((PGresult *)r)) != 1)
        return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
                           "idempotency key is already recorded");
    return OUTBOX_OK;
}

outbox_err_t outbox__idem_store(PGconn *conn, const char *scope, const char *key,
                                const char *fingerprint, unsigned status, const char *content_type,
                                const char *body, int64_t retention_ms, char *errstr,
                                size_t errstr_size)
{
    char st[16], ret[24];
    snprintf(st, sizeof(st), "%u", status);
    snprintf(ret, sizeof(ret), "%lld", (long long)retention_ms);
    const char *params[7] = {scope, key, fingerprint, st, content_type, body, ret};
    /* An expired record of the same key may still be there: replace it. */
    PGresult *r = outbox__pg_exec_prepared(conn, "outbox_idem_finish", IDEM_STORE_SQL, 7, params);
    outbox_err_t err = store_result(conn, r, errstr, errstr_size);
    PQclear(r);
    return err;
}

outbox_err_t outbox__idem_enqueue_store(PGconn *conn, const outbox_event_t *ev, const char *scope,
                                        const char *key, const char *fingerprint, unsigned status,
                                        const char *content_type, const char *body,
                                        int64_t retention_ms, int *key_recorded, char *errstr,
                                        size_t errstr_size)
{
    *key_recorded = 0;
    if (!outbox__pg_in_tx(conn))
        return outbox__err(OUTBOX_ERR_NOT_IN_TRANSACTION, errstr, errstr_size,
                           "the event and the key record need an open transaction");
    outbox_pg_enqueue_t enq;
    outbox_err_t e = outbox__pg_enqueue_stmt(ev, &enq, errstr, errstr_size);
    if (e)
        return e;
    char st[16], ret[24];
    snprintf(st, sizeof(st), "%u", status);
    snprintf(ret, sizeof(ret), "%lld", (long long)retention_ms);
    const char *kp[7] = {scope, key, fingerprint, st, content_type, body, ret};
    const char *names[2] = {enq.name, "outbox_idem_finish"};
    const char *sqls[2] = {enq.sql, IDEM_STORE_SQL};
    const char *const *pp[2] = {enq.params, kp};
    int prepared[2], np[2] = {9, 7};
    PGresult *res[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) {
        prepared[i] = outbox__pg_prepare_once(conn, names[i], sqls[i], &res[i]);
        if (prepared[i] < 0) {
            e = db_err(conn, res[i], errstr, errstr_size,
                       i ? "storing idempotency key" : "enqueue");
            PQclear(res[i]);
            return e;
        }
    }
    /* One round trip: the event, then the key record (not run when the event
     * fails: the pipeline stops at the first error). */
    if (outbox__pg_pipeline(conn, 2, names, sqls, prepared, np, pp, res))
        e = outbox__err(OUTBOX_ERR_DB, errstr, errstr_size, "enqueue and key record: %s",
                        PQerrorMessage(conn));
    else if ((e = outbox__pg_enqueue_result(conn, res[0], &enq, errstr, errstr_size)) == OUTBOX_OK)
        *key_recorded =
            (e = store_result(conn, res[1], errstr, errstr_size)) == OUTBOX_ERR_INVALID_ARG;
    PQclear(res[0]);
    PQclear(res[1]);
    return e;
}

outbox_err_t outbox__idem_purge(PGconn *conn, long long *deleted, char *errstr, size_t errstr_size)
{
    PGresult *r = PQexec(conn, "DELETE FROM outbox_http_idempotency WHERE expires_at <= now()");
    outbox_err_t err = OUTBOX_OK;
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        err = db_err(conn, r, errstr, errstr_size, "purging idempotency keys");
    else if (deleted)
        *deleted = atoll(PQcmdTuples(r));
    PQclear(r);
    return err;
}

void outbox__idem_term(outbox_idem_t *idem)
{
    if (!idem)
        return;
    free(idem->body);
    idem->body = NULL;
}
