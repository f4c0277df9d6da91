/* PostgreSQL: connections, migrations, enqueue and the inbox.
 * Every statement with values is parameterised. */
#include "store/pg/pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

/* Copies the server's message without the trailing newline. */
static outbox_err_t db_err(PGconn *conn, const PGresult *res, char *errstr, size_t errstr_size,
                           const char *what)
{
    const char *m = res ? PQresultErrorMessage(res) : NULL;
    if (!m || !*m)
        m = PQerrorMessage(conn);
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", m ? m : "unknown error");
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    return outbox__err(OUTBOX_ERR_DB, errstr, errstr_size, "%s: %s", what, buf);
}

static void quiet_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message; /* NOTICEs ("already exists, skipping") are not errors */
}

PGconn *outbox__pg_connect(const char *conninfo, const char *appname, char *errstr, size_t errstr_size)
{
    const char *keys[] = {"dbname", "application_name", "connect_timeout", NULL};
    const char *vals[] = {conninfo, appname ? appname : "outbox", "10", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1 /* expand dbname as conninfo/URI */);
    if (!c) {
        outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory connecting to PostgreSQL");
        return NULL;
    }
    if (PQstatus(c) == CONNECTION_OK)
        PQsetNoticeProcessor(c, quiet_notice, NULL);
    if (PQstatus(c) != CONNECTION_OK) {
        char buf[512];
        snprintf(buf, sizeof(buf), "%s", PQerrorMessage(c));
        size_t n = strlen(buf);
        while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
            buf[--n] = '\0';
        outbox__err(OUTBOX_ERR_DB, errstr, errstr_size, "cannot connect to PostgreSQL: %s", buf);
        PQfinish(c);
        return NULL;
    }
    return c;
}

outbox_err_t outbox__pg_exec(PGconn *conn, const char *sql, char *errstr, size_t errstr_size)
{
    PGresult *r = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(r);
    outbox_err_t err = OUTBOX_OK;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        err = db_err(conn, r, errstr, errstr_size, "query failed");
    PQclear(r);
    return err;
}

int outbox__pg_in_tx(PGconn *conn)
{
    PGTransactionStatusType ts = PQtransactionStatus(conn);
    return ts == PQTRANS_INTRANS || ts == PQTRANS_ACTIVE;
}

outbox_err_t outbox__pg_migrate_set(PGconn *conn, const char *component,
                                    const outbox_migration_t *list, int *applied, char *errstr,
                                    size_t errstr_size)
{
    int count = 0;
    if (applied)
        *applied = 0;
    if (outbox__pg_in_tx(conn))
        return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
                           "migrations run in their own transactions: call outside a transaction block");
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT pg_advisory_lock(%lld)", (long long)OUTBOX_LOCK_MIGRATE);
    outbox_err_t err = outbox__pg_exec(conn, sql, errstr, errstr_size);
    if (err)
        return err;
    err = outbox__pg_exec(conn,
                          "CREATE TABLE IF NOT EXISTS outbox_schema_migrations ("
                          " component text NOT NULL, version integer NOT NULL, name text NOT NULL,"
                          " applied_at timestamptz NOT NULL DEFAULT now(),"
                          " PRIMARY KEY (component, version))",
                          errstr, errstr_size);
    for (const outbox_migration_t *m = list; !err && m->name; m++) {
        char ver[16];
        snprintf(ver, sizeof(ver), "%d", m->version);
        const char *params[3] = {component, ver, m->name};
        PGresult *r = PQexecParams(conn,
                                   "SELECT 1 FROM outbox_schema_migrations"
                                   " WHERE component = $1 AND version = $2::int",
                                   2, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            err = db_err(conn, r, errstr, errstr_size, "reading outbox_schema_migrations");
            PQclear(r);
            break;
        }
        int done = PQntuples(r) > 0;
        PQclear(r);
        if (done)
            continue;
        err = outbox__pg_exec(conn, "BEGIN", errstr, errstr_size);
        if (err)
            break;
        r = PQexec(conn, m->sql);
        if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
            char what[160];
            snprintf(what, sizeof(what), "migration %s/%s failed", component, m->name);
            err = db_err(conn, r, errstr, errstr_size, what);
            PQclear(r);
            break;
        }
        PQclear(r);
        r = PQexecParams(conn,
                         "INSERT INTO outbox_schema_migrations (component, version, name)"
                         " VALUES ($1, $2::int, $3)",
                         3, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            err = db_err(conn, r, errstr, errstr_size, "recording migration");
        PQclear(r);
        if (!err)
            err = outbox__pg_exec(conn, "COMMIT", errstr, errstr_size);
        if (!err)
            count++;
    }
    if (outbox__pg_in_tx(conn) || PQtransactionStatus(conn) == PQTRANS_INERROR)
        PQclear(PQexec(conn, "ROLLBACK"));
    snprintf(sql, sizeof(sql), "SELECT pg_advisory_unlock(%lld)", (long long)OUTBOX_LOCK_MIGRATE);
    PQclear(PQexec(conn, sql));
    if (applied)
        *applied = count;
    return err;
}

outbox_err_t outbox_migrate(PGconn *conn, int *applied, char *errstr, size_t errstr_size)
{
    if (!conn)
        return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size, "conn is NULL");
    return outbox__pg_migrate_set(conn, "outbox", outbox_migrations, applied, errstr, errstr_size);
}

static int valid_text(const char *s, size_t max)
{
    return s && *s && strlen(s) <= max;
}

outbox_err_t outbox_enqueue(PGconn *conn, const outbox_event_t *ev, char *id_out, char *errstr,
                            size_t errstr_size)
{
    if (!conn || !ev)
        return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size, "conn and event are required");
    if (!outbox__pg_in_tx(conn))
        return outbox__err(OUTBOX_ERR_NOT_IN_TRANSACTION, errstr, errstr_size,
                           "outbox_enqueue needs an open transaction on the connection (BEGIN first): "
                           "outside one the event could be published for a change that never commits");
    if (!valid_text(ev->topic, 255))
        return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size, "event topic is required (1..255 bytes)");
    if (!valid_text(ev->type, 255))
        return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size, "event type is required (1..255 bytes)");
    if (!ev->key || strlen(ev->key) > 1024)
        return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size, "event key is required (0..1024 bytes)");
    if (!ev->payload)
        return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size, "event payload (JSON) is required");
    if (ev->id && !outbox_uuid_valid(ev->id))
        return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size, "event id \"%.40s\" is not a UUID", ev->id);

    char id[OUTBOX_UUID_STRLEN + 1];
    if (ev->id)
        snprintf(id, sizeof(id), "%s", ev->id);
    else
        outbox_uuid_v7(id);
    const char *params[8] = {id, ev->topic, ev->type, ev->key, ev->payload, ev->headers,
                             ev->traceparent, ev->source && *ev->source ? ev->source : "/outbox"};
    /* One round trip: insert, and the wake-up hint for idle relays. */
    PGresult *r = PQexecParams(conn,
                               "INSERT INTO outbox (id, topic, type, key, payload, headers, traceparent, source)"
                               " VALUES ($1::uuid, $2, $3, $4, $5::json, $6::jsonb, $7, $8)"
                               " RETURNING pg_notify('" OUTBOX_NOTIFY_CHANNEL "', '')",
                               8, NULL, params, NULL, NULL, 0);
    outbox_err_t err = OUTBOX_OK;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        err = db_err(conn, r, errstr, errstr_size, "enqueue failed");
        /* 22P02 invalid text representation (bad JSON), 23505 duplicate id */
        if (state && (!strcmp(state, "22P02") || !strcmp(state, "23505")))
            err = OUTBOX_ERR_INVALID_ARG;
    } else if (id_out) {
        memcpy(id_out, id, sizeof(id));
    }
    PQclear(r);
    return err;
}

outbox_err_t outbox_inbox_record(PGconn *conn, const char *consumer, const char *message_id,
                                 int *is_new, char *errstr, size_t errstr_size)
{
    if (!conn || !valid_text(consumer, 255) || !is_new)
        return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
                           "conn, consumer name (1..255 bytes) and is_new are required");
    if (!outbox_uuid_valid(message_id))
        return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
                           "message id \"%.40s\" is not a UUID", message_id ? message_id : "(null)");
    if (!outbox__pg_in_tx(conn))
        return outbox__err(OUTBOX_ERR_NOT_IN_TRANSACTION, errstr, errstr_size,
                           "outbox_inbox_record needs an open transaction (BEGIN first) so the "
                           "record commits with the consumer's effect");
    const char *params[2] = {consumer, message_id};
    PGresult *r = PQexecParams(conn,
                               "INSERT INTO outbox_inbox (consumer, message_id) VALUES ($1, $2::uuid)"
                               " ON CONFLICT DO NOTHING",
                               2, NULL, params, NULL, NULL, 0);
    outbox_err_t err = OUTBOX_OK;
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        err = db_err(conn, r, errstr, errstr_size, "inbox insert failed");
    else
        *is_new = atoi(PQcmdTuples(r)) == 1;
    PQclear(r);
    return err;
}

/* ------------------------------------------------------------------------ */
/* Relay queries                                                             */

void outbox__pg_batch_term(outbox_batch_t *batch)
{
    if (!batch)
        return;
    for (size_t i = 0; i < batch->n; i++)
        free(batch->msgs[i].envelope);
    free(batch->msgs);
    PQclear(batch->res);
    memset(batch, 0, sizeof(*batch));
}

outbox_err_t outbox__pg_claim(PGconn *conn, const int *lanes, int nlanes, int limit,
                              outbox_batch_t *batch, char *errstr, size_t errstr_size)
{
    memset(batch, 0, sizeof(*batch));
    if (nlanes <= 0)
        return OUTBOX_OK;
    char arr[OUTBOX_LANES * 4 + 4];
    size_t n = 0;
    arr[n++] = '{';
    for (int i = 0; i < nlanes; i++)
        n += (size_t)snprintf(arr + n, sizeof(arr) - n, "%s%d", i ? "," : "", lanes[i]);
    arr[n++] = '}';
    arr[n] = '\0';
    char lim[16];
    snprintf(lim, sizeof(lim), "%d", limit);
    const char *params[2] = {arr, lim};
    PGresult *r = PQexecParams(
        conn,
        "SELECT o.seq, o.id, o.topic, o.type, o.key, o.source, o.payload, o.headers,"
        "       o.traceparent,"
        "       to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
        "       o.attempts"
        "  FROM outbox o"
        " WHERE o.lane = ANY($1::smallint[])"
        "   AND o.next_attempt_at <= now()"
        "   AND NOT EXISTS (SELECT 1 FROM outbox p"
        "                    WHERE p.key = o.key AND p.seq < o.seq AND p.next_attempt_at > now())"
        "   AND NOT EXISTS (SELECT 1 FROM outbox_dead_letter d WHERE d.key = o.key)"
        " ORDER BY o.seq"
        " LIMIT $2::int"
        " FOR UPDATE OF o SKIP LOCKED",
        2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        outbox_err_t err = db_err(conn, r, errstr, errstr_size, "claim failed");
        PQclear(r);
        return err;
    }
    int rows = PQntuples(r);
    batch->res = r;
    if (!rows)
        return OUTBOX_OK;
    batch->msgs = calloc((size_t)rows, sizeof(outbox_msg_t));
    if (!batch->msgs) {
        outbox__pg_batch_term(batch);
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    }
    for (int i = 0; i < rows; i++) {
        outbox_msg_t *m = &batch->msgs[i];
        m->seq = strtoll(PQgetvalue(r, i, 0), NULL, 10);
        snprintf(m->id, sizeof(m->id), "%s", PQgetvalue(r, i, 1));
        m->topic = PQgetvalue(r, i, 2);
        m->type = PQgetvalue(r, i, 3);
        m->key = PQgetvalue(r, i, 4);
        m->source = PQgetvalue(r, i, 5);
        m->payload = PQgetvalue(r, i, 6);
        m->headers = PQgetisnull(r, i, 7) ? NULL : PQgetvalue(r, i, 7);
        m->traceparent = PQgetisnull(r, i, 8) ? NULL : PQgetvalue(r, i, 8);
        m->time = PQgetvalue(r, i, 9);
        m->attempts = atoi(PQgetvalue(r, i, 10));
    }
    batch->n = (size_t)rows;
    return OUTBOX_OK;
}

outbox_err_t outbox__pg_ack(PGconn *conn, const int64_t *seqs, int n, char *errstr, size_t errstr_size)
{
    if (n <= 0)
        return OUTBOX_OK;
    size_t cap = (size_t)n * 21 + 3;
    char *arr = malloc(cap);
    if (!arr)
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    size_t len = 0;
    arr[len++] = '{';
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(arr + len, cap - len, "%s%lld", i ? "," : "", (long long)seqs[i]);
    arr[len++] = '}';
    arr[len] = '\0';
    const char *params[1] = {arr};
    PGresult *r = PQexecParams(conn, "DELETE FROM outbox WHERE seq = ANY($1::bigint[])", 1, NULL,
                               params, NULL, NULL, 0);
    free(arr);
    outbox_err_t err = OUTBOX_OK;
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        err = db_err(conn, r, errstr, errstr_size, "acknowledge failed");
    PQclear(r);
    return err;
}

outbox_err_t outbox__pg_fail(PGconn *conn, int64_t seq, int64_t delay_ms, const char *error,
                             char *errstr, size_t errstr_size)
{
    char s[24], d[24];
    snprintf(s, sizeof(s), "%lld", (long long)seq);
    snprintf(d, sizeof(d), "%lld", (long long)delay_ms);
    const char *params[3] = {s, d, error ? error : ""};
    /* Keep the last 20 errors as history. */
    PGresult *r = PQexecParams(
        conn,
        "UPDATE outbox SET attempts = attempts + 1,"
        "       next_attempt_at = now() + $2::bigint * interval '1 millisecond',"
        "       last_error = $3,"
        "       errors = (CASE WHEN jsonb_array_length(errors) >= 20 THEN errors - 0 ELSE errors END)"
        "                || jsonb_build_array(jsonb_build_object('at', now(), 'attempt', attempts + 1, 'error', $3::text))"
        " WHERE seq = $1::bigint",
        3, NULL, params, NULL, NULL, 0);
    outbox_err_t err = OUTBOX_OK;
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        err = db_err(conn, r, errstr, errstr_size, "recording failed attempt");
    PQclear(r);
    return err;
}

outbox_err_t outbox__pg_dead_letter(PGconn *conn, int64_t seq, const char *reason,
                                    const char *error, int park, char *errstr, size_t errstr_size)
{
    char s[24];
    snprintf(s, sizeof(s), "%lld", (long long)seq);
    const char *params[3] = {s, reason, error ? error : ""};
    /* Move the event (and, in park mode, every later event of its key). */
    PGresult *r = PQexecParams(
        conn,
        park ? "WITH dead AS ("
               "  DELETE FROM outbox o USING outbox e"
               "   WHERE e.seq = $1::bigint AND o.key = e.key AND o.seq >= e.seq"
               "  RETURNING o.*)"
               " INSERT INTO outbox_dead_letter (seq, id, topic, type, key, payload, headers,"
               "   traceparent, source, created_at, attempts, last_error, errors, reason)"
               " SELECT seq, id, topic, type, key, payload, headers, traceparent, source, created_at,"
               "        CASE WHEN seq = $1::bigint THEN attempts + 1 ELSE attempts END,"
               "        CASE WHEN seq = $1::bigint THEN $3 ELSE last_error END,"
               "        CASE WHEN seq = $1::bigint THEN errors || jsonb_build_array(jsonb_build_object("
               "             'at', now(), 'attempt', attempts + 1, 'error', $3::text)) ELSE errors END,"
               "        CASE WHEN seq = $1::bigint THEN $2 ELSE 'parked' END"
               "   FROM dead"
             : "WITH dead AS (DELETE FROM outbox WHERE seq = $1::bigint RETURNING *)"
               " INSERT INTO outbox_dead_letter (seq, id, topic, type, key, payload, headers,"
               "   traceparent, source, created_at, attempts, last_error, errors, reason)"
               " SELECT seq, id, topic, type, key, payload, headers, traceparent, source, created_at,"
               "        attempts + 1, $3, errors || jsonb_build_array(jsonb_build_object("
               "             'at', now(), 'attempt', attempts + 1, 'error', $3::text)), $2"
               "   FROM dead",
        3, NULL, params, NULL, NULL, 0);
    outbox_err_t err = OUTBOX_OK;
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        err = db_err(conn, r, errstr, errstr_size, "moving event to dead letters");
    PQclear(r);
    return err;
}
