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
    PGresult *r = outbox__pg_exec_prepared(
        conn, "outbox_idem_lock",
        "SELECT pg_try_advisory_xact_lock(hashtextextended($1 || E'\\n' || $2, 0))", 2, params);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        outbox_err_t e = db_err(conn, r, errstr, errstr_size, "idempotency lock");
        PQclear(r);
        return e;
    }
    int got = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    if (!got) {
        out->state = OUTBOX_IDEM_IN_FLIGHT;
        return OUTBOX_OK;
    }
    r = outbox__pg_exec_prepared(
        conn, "outbox_idem_lookup",
        "SELECT fingerprint, status, content_type, body FROM outbox_http_idempotency"
        " WHERE scope = $1 AND key = $2 AND expires_at > now()",
        2, params);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        outbox_err_t e = db_err(conn, r, errstr, errstr_size, "idempotency lookup");
        PQclear(r);
        return e;
    }
    if (PQntuples(r) == 0) {
        out->state = OUTBOX_IDEM_NEW;
    } else if (strcmp(PQgetvalue(r, 0, 0), fingerprint) != 0) {
        out->state = OUTBOX_IDEM_MISMATCH;
    } else {
        out->state = OUTBOX_IDEM_REPLAY;
        out->status = (unsigned)atoi(PQgetvalue(r, 0, 1));
        snprintf(out->content_type, sizeof(out->content_type), "%s", PQgetvalue(r, 0, 2));
        out->body_len = (size_t)PQgetlength(r, 0, 3);
        out->body = malloc(out->body_len + 1);
        if (!out->body) {
            PQclear(r);
            return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
        }
        memcpy(out->body, PQgetvalue(r, 0, 3), out->body_len + 1);
    }
    PQclear(r);
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
    PGresult *r = outbox__pg_exec_prepared(
        conn, "outbox_idem_finish",
        "INSERT INTO outbox_http_idempotency AS k (scope, key, fingerprint, status, content_type, "
        "body, expires_at)"
        " VALUES ($1, $2, $3, $4::int, $5, $6, now() + $7::bigint * interval '1 millisecond')"
        " ON CONFLICT (scope, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, status = "
        "EXCLUDED.status,"
        "   content_type = EXCLUDED.content_type, body = EXCLUDED.body, created_at = now(),"
        "   expires_at = EXCLUDED.expires_at"
        " WHERE k.expires_at <= now()",
        7, params);
    outbox_err_t err = OUTBOX_OK;
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        err = db_err(conn, r, errstr, errstr_size, "storing idempotency key");
    else if (atoi(PQcmdTuples(r)) != 1)
        err = outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
                          "idempotency key is already recorded");
    PQclear(r);
    return err;
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
