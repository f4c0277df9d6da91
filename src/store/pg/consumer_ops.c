/*
 * The PostgreSQL store's consumer ops (store/store.h): failed attempts and
 * dead letters of consumer groups, in the consumer's own database (tables
 * of migrations/0003_consumer_dead_letters.sql). Every value is a
 * parameter; message bodies travel as bytea in binary format, byte for byte.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "store/pg/pg.h"

/* Runs sql with text parameters (params[i] NULL = SQL NULL) and checks its
 * status is want; the result goes to *out (or is cleared). */
static outbox_err_t run(outbox_store_t *s, const char *sql, int n, const char *const *params,
                        const int *lengths, const int *formats, ExecStatusType want, PGresult **out,
                        const char *what, char *errstr, size_t errstr_size)
{
    PGconn *c = outbox__pg_store_conn(s);
    PGresult *r = PQexecParams(c, sql, n, NULL, params, lengths, formats, 0);
    if (PQresultStatus(r) != want) {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        outbox_err_t err = outbox__pg_err(c, r, errstr, errstr_size, what);
        if (state && !strcmp(state, "42P01")) /* undefined_table: migrations not applied */
            err = OUTBOX_ERR_NOT_FOUND;
        PQclear(r);
        return err;
    }
    if (out)
        *out = r;
    else
        PQclear(r);
    return OUTBOX_OK;
}

static void rollback(outbox_store_t *s)
{
    PQclear(PQexec(outbox__pg_store_conn(s), "ROLLBACK"));
}

outbox_err_t outbox__pg_consumer_failed(outbox_store_t *s, const outbox_consumer_msg_t *m,
                                        const char *error, int reject, int max_attempts,
                                        int *attempts, int *dead, char *errstr, size_t errstr_size)
{
    *attempts = 0;
    *dead = 0;
    outbox_err_t err = run(s, "BEGIN", 0, NULL, NULL, NULL, PGRES_COMMAND_OK, NULL,
                           "consumer attempt: BEGIN", errstr, errstr_size);
    if (err)
        return err;
    const char *p1[3] = {m->group, m->message_id, error ? error : ""};
    PGresult *r = NULL;
    err = run(s,
              "INSERT INTO outbox_consumer_attempt AS a"
              " (group_name, message_id, attempts, errors, first_failed_at, last_failed_at)"
              " VALUES ($1, $2, 1, jsonb_build_array(jsonb_build_object("
              "   'at', statement_timestamp(), 'attempt', 1, 'error', $3::text)),"
              "   statement_timestamp(), statement_timestamp())"
              " ON CONFLICT (group_name, message_id) DO UPDATE SET attempts = a.attempts + 1,"
              "   errors = a.errors || jsonb_build_array(jsonb_build_object("
              "     'at', statement_timestamp(), 'attempt', a.attempts + 1, 'error', $3::text)),"
              "   last_failed_at = statement_timestamp()"
              " RETURNING attempts",
              3, p1, NULL, NULL, PGRES_TUPLES_OK, &r, "recording a consumer attempt", errstr,
              errstr_size);
    if (err) {
        rollback(s);
        return err;
    }
    *attempts = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    if (reject || *attempts >= max_attempts) {
        char len[24];
        snprintf(len, sizeof(len), "%zu", m->body_len);
        const char *p2[9] = {m->group,
                             m->message_id,
                             m->topic ? m->topic : "",
                             m->key ? m->key : "",
                             m->type,
                             m->body ? m->body : "",
                             m->attrs,
                             reject ? "rejected" : "max_attempts",
                             error ? error : ""};
        int lengths[9] = {0, 0, 0, 0, 0, (int)m->body_len, 0, 0, 0};
        int formats[9] = {0, 0, 0, 0, 0, 1, 0, 0, 0};
        /* A message dead again after a requeue keeps one row: its history grows. */
        err = run(s,
                  "WITH a AS (DELETE FROM outbox_consumer_attempt"
                  "            WHERE group_name = $1 AND message_id = $2 RETURNING *)"
                  " INSERT INTO outbox_consumer_dead_letter AS d (group_name, message_id, topic,"
                  "   key, type, body, attrs, attempts, reason, last_error, errors,"
                  "   first_failed_at, last_failed_at)"
                  " SELECT $1, $2, $3, $4, $5, $6::bytea, $7::jsonb, a.attempts, $8, $9,"
                  "   a.errors, a.first_failed_at, a.last_failed_at FROM a"
                  " ON CONFLICT (group_name, message_id) DO UPDATE SET"
                  "   attempts = EXCLUDED.attempts, reason = EXCLUDED.reason,"
                  "   last_error = EXCLUDED.last_error, errors = d.errors || EXCLUDED.errors,"
                  "   last_failed_at = EXCLUDED.last_failed_at, dead_at = now(),"
                  "   requeued_at = NULL",
                  9, p2, lengths, formats, PGRES_COMMAND_OK, NULL, "writing a consumer dead letter",
                  errstr, errstr_size);
        if (err) {
            rollback(s);
            return err;
        }
        *dead = 1;
    }
    err = run(s, "COMMIT", 0, NULL, NULL, NULL, PGRES_COMMAND_OK, NULL, "consumer attempt: COMMIT",
              errstr, errstr_size);
    if (err) {
        *dead = 0; /* unknown: the caller retries without acknowledging */
        rollback(s);
    }
    return err;
}

outbox_err_t outbox__pg_consumer_done(outbox_store_t *s, const char *group, const char *message_id,
                                      char *errstr, size_t errstr_size)
{
    const char *p[2] = {group, message_id};
    return run(s,
               "WITH a AS (DELETE FROM outbox_consumer_attempt"
               "            WHERE group_name = $1 AND message_id = $2)"
               " DELETE FROM outbox_consumer_dead_letter"
               "  WHERE group_name = $1 AND message_id = $2 AND requeued_at IS NOT NULL",
               2, p, NULL, NULL, PGRES_COMMAND_OK, NULL, "clearing consumer attempts", errstr,
               errstr_size);
}

outbox_err_t outbox__pg_consumer_has_attempts(outbox_store_t *s, const char *group, int *any,
                                              char *errstr, size_t errstr_size)
{
    const char *p[1] = {group};
    PGresult *r = NULL;
    outbox_err_t err =
        run(s, "SELECT EXISTS (SELECT 1 FROM outbox_consumer_attempt WHERE group_name = $1)", 1, p,
            NULL, NULL, PGRES_TUPLES_OK, &r, "reading consumer attempts", errstr, errstr_size);
    if (err)
        return err;
    *any = !strcmp(PQgetvalue(r, 0, 0), "t");
    PQclear(r);
    return OUTBOX_OK;
}

outbox_err_t outbox__pg_cdl_list(outbox_store_t *s, const char *group, const char *topic,
                                 int requeued_only, int limit,
                                 void (*cb)(void *arg, const outbox_consumer_dead_t *d), void *arg,
                                 char *errstr, size_t errstr_size)
{
    char lim[16];
    snprintf(lim, sizeof(lim), "%d", limit);
    const char *p[4] = {lim, group, topic, requeued_only ? "t" : "f"};
    PGresult *r = NULL;
    outbox_err_t err =
        run(s,
            "SELECT id, group_name, message_id, topic, key, COALESCE(type, ''), reason,"
            "  dead_at, COALESCE(last_error, ''), COALESCE(requeued_at::text, ''), attempts,"
            "  CASE WHEN $4::bool THEN body END, attrs::text"
            "  FROM outbox_consumer_dead_letter"
            " WHERE ($2::text IS NULL OR group_name = $2) AND ($3::text IS NULL OR topic = $3)"
            "   AND (NOT $4::bool OR requeued_at IS NOT NULL)"
            " ORDER BY id LIMIT $1::int",
            4, p, NULL, NULL, PGRES_TUPLES_OK, &r, "listing consumer dead letters", errstr,
            errstr_size);
    if (err)
        return err;
    for (int i = 0; i < PQntuples(r); i++) {
        size_t blen = 0;
        unsigned char *body = NULL;
        if (!PQgetisnull(r, i, 11)) {
            body = PQunescapeBytea((const unsigned char *)PQgetvalue(r, i, 11), &blen);
            if (!body) {
                PQclear(r);
                return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
            }
        }
        outbox_consumer_dead_t d = {.id = atoll(PQgetvalue(r, i, 0)),
                                    .group = PQgetvalue(r, i, 1),
                                    .message_id = PQgetvalue(r, i, 2),
                                    .topic = PQgetvalue(r, i, 3),
                                    .key = PQgetvalue(r, i, 4),
                                    .type = PQgetvalue(r, i, 5),
                                    .reason = PQgetvalue(r, i, 6),
                                    .dead_at = PQgetvalue(r, i, 7),
                                    .last_error = PQgetvalue(r, i, 8),
                                    .requeued_at = PQgetvalue(r, i, 9),
                                    .attempts = atoi(PQgetvalue(r, i, 10)),
                                    .body = (const char *)body,
                                    .body_len = blen,
                                    .attrs = PQgetisnull(r, i, 12) ? NULL : PQgetvalue(r, i, 12)};
        cb(arg, &d);
        if (body)
            PQfreemem(body);
    }
    PQclear(r);
    return OUTBOX_OK;
}

outbox_err_t outbox__pg_cdl_show(outbox_store_t *s, long long id, char **json, char *errstr,
                                 size_t errstr_size)
{
    char ids[24];
    snprintf(ids, sizeof(ids), "%lld", id);
    const char *p[1] = {ids};
    PGresult *r = NULL;
    /* The body as text when it is valid UTF-8 (CloudEvents JSON usually
     * is), and always as base64, so no byte is lost in the display. */
    outbox_err_t err = run(s,
                           "SELECT jsonb_pretty(to_jsonb(d) - 'body' || jsonb_build_object("
                           "  'body_base64', encode(d.body, 'base64'),"
                           "  'body', convert_from(d.body, 'UTF8')))"
                           "  FROM outbox_consumer_dead_letter d WHERE id = $1::bigint",
                           1, p, NULL, NULL, PGRES_TUPLES_OK, &r, "showing a consumer dead letter",
                           errstr, errstr_size);
    if (err && strstr(errstr, "UTF8")) {
        /* Not valid UTF-8: base64 only. */
        err = run(s,
                  "SELECT jsonb_pretty(to_jsonb(d) - 'body' || jsonb_build_object("
                  "  'body_base64', encode(d.body, 'base64')))"
                  "  FROM outbox_consumer_dead_letter d WHERE id = $1::bigint",
                  1, p, NULL, NULL, PGRES_TUPLES_OK, &r, "showing a consumer dead letter", errstr,
                  errstr_size);
    }
    if (err)
        return err;
    if (!PQntuples(r)) {
        PQclear(r);
        return outbox__err(OUTBOX_ERR_NOT_FOUND, errstr, errstr_size,
                           "no consumer dead letter with id %lld", id);
    }
    *json = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return *json ? OUTBOX_OK : outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
}

outbox_err_t outbox__pg_cdl_requeue(outbox_store_t *s, long long id, const char *group,
                                    long long *n, char *errstr, size_t errstr_size)
{
    char ids[24];
    snprintf(ids, sizeof(ids), "%lld", id);
    const char *p[2] = {id > 0 ? ids : NULL, group};
    PGresult *r = NULL;
    /* Attempts start again from 0 (a row left over from the last round goes). */
    outbox_err_t err =
        run(s,
            "WITH q AS (UPDATE outbox_consumer_dead_letter SET requeued_at = now()"
            "            WHERE ($1::bigint IS NULL OR id = $1::bigint)"
            "              AND ($2::text IS NULL OR group_name = $2)"
            "            RETURNING group_name, message_id),"
            " a AS (DELETE FROM outbox_consumer_attempt t USING q"
            "        WHERE t.group_name = q.group_name AND t.message_id = q.message_id)"
            " SELECT count(*) FROM q",
            2, p, NULL, NULL, PGRES_TUPLES_OK, &r, "requeueing consumer dead letters", errstr,
            errstr_size);
    if (err)
        return err;
    *n = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return OUTBOX_OK;
}

outbox_err_t outbox__pg_cdl_purge(outbox_store_t *s, long long id, const char *group,
                                  int64_t older_than_ms, long long *n, char *errstr,
                                  size_t errstr_size)
{
    char ids[24], older[24];
    snprintf(ids, sizeof(ids), "%lld", id);
    snprintf(older, sizeof(older), "%lld", (long long)older_than_ms);
    const char *p[3] = {id > 0 ? ids : NULL, group, id > 0 ? NULL : older};
    PGresult *r = NULL;
    outbox_err_t err =
        run(s,
            "DELETE FROM outbox_consumer_dead_letter"
            " WHERE ($1::bigint IS NOT NULL AND id = $1::bigint)"
            "    OR ($3::bigint IS NOT NULL AND ($2::text IS NULL OR group_name = $2)"
            "        AND dead_at <= now() - $3::bigint * interval '1 millisecond')",
            3, p, NULL, NULL, PGRES_COMMAND_OK, &r, "purging consumer dead letters", errstr,
            errstr_size);
    if (err)
        return err;
    *n = atoll(PQcmdTuples(r));
    PQclear(r);
    return OUTBOX_OK;
}
