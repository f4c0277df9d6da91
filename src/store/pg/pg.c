/* PostgreSQL: connections, migrations, enqueue and the inbox.
 * Every statement with values is parameterised. */
#include "store/pg/pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "store/store.h"

outbox_err_t outbox__pg_err(PGconn *conn, const PGresult *res, char *errstr, size_t errstr_size,
                            const char *what)
{
    const char *m = res ? PQresultErrorMessage(res) : NULL;
    if (!m || !*m)
        m = PQerrorMessage(conn);
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", m && *m ? m : "unknown error");
    return outbox__err(OUTBOX_ERR_DB, errstr, errstr_size, "%s: %s", what, outbox__rtrim(buf));
}

static void quiet_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message; /* NOTICEs ("already exists, skipping") are not errors */
}

PGconn *outbox__pg_connect(const char *conninfo, const char *appname, char *errstr,
                           size_t errstr_size)
{
    const char *keys[] = {"dbname", "application_name", "connect_timeout", NULL};
    const char *vals[] = {conninfo, appname ? appname : "outbox", "10", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1 /* expand dbname as conninfo/URI */);
    if (!c) {
        outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size,
                    "out of memory connecting to PostgreSQL");
        return NULL;
    }
    if (PQstatus(c) == CONNECTION_OK)
        PQsetNoticeProcessor(c, quiet_notice, NULL);
    if (PQstatus(c) != CONNECTION_OK) {
        outbox__pg_err(c, NULL, errstr, errstr_size, "cannot connect to PostgreSQL");
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
        err = outbox__pg_err(conn, r, errstr, errstr_size, "query failed");
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
        return outbox__err(
            OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
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
            err = outbox__pg_err(conn, r, errstr, errstr_size, "reading outbox_schema_migrations");
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
            err = outbox__pg_err(conn, r, errstr, errstr_size, what);
            PQclear(r);
            break;
        }
        PQclear(r);
        r = PQexecParams(conn,
                         "INSERT INTO outbox_schema_migrations (component, version, name)"
                         " VALUES ($1, $2::int, $3)",
                         3, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            err = outbox__pg_err(conn, r, errstr, errstr_size, "recording migration");
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

outbox_err_t outbox_migrate_table(PGconn *conn, const char *table, int *applied, char *errstr,
                                  size_t errstr_size)
{
    if (!conn)
        return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size, "conn is NULL");
    if (table && *table && !outbox__store_table_valid(table))
        return outbox__err(
            OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
            "outbox table \"%.60s\": use lower-case letters, digits and _ (at most 48 bytes)",
            table);
    outbox_err_t err =
        outbox__pg_migrate_set(conn, "outbox", outbox_migrations, applied, errstr, errstr_size);
    if (err || !table || !*table || !strcmp(table, "outbox"))
        return err;
    const char *params[1] = {table};
    PGresult *r =
        PQexecParams(conn, "SELECT outbox_create_table($1)", 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        err = outbox__pg_err(conn, r, errstr, errstr_size, "creating outbox table");
    PQclear(r);
    return err;
}

static int valid_text(const char *s, size_t max)
{
    return s && *s && strlen(s) <= max;
}

outbox_err_t outbox_enqueue(PGconn *conn, const outbox_event_t *ev, char *id_out, char *errstr,
                            size_t errstr_size)
{
    if (!conn || !ev)
        return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
                           "conn and event are required");
    if (!outbox__pg_in_tx(conn))
        return outbox__err(
            OUTBOX_ERR_NOT_IN_TRANSACTION, errstr, errstr_size,
            "outbox_enqueue needs an open transaction on the connection (BEGIN first): "
            "outside one the event could be published for a change that never commits");
    if (!valid_text(ev->topic, 255))
        return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
                           "event topic is required (1..255 bytes)");
    if (!valid_text(ev->type, 255))
        return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
                           "event type is required (1..255 bytes)");
    if (!ev->key || strlen(ev->key) > 1024)
        return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
                           "event key is required (0..1024 bytes)");
    if (!ev->payload)
        return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
                           "event payload (JSON) is required");
    if (ev->id && !outbox_uuid_valid(ev->id))
        return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
                           "event id \"%.40s\" is not a UUID", ev->id);

    const char *table = ev->table && *ev->table ? ev->table : "outbox";
    if (!outbox__store_table_valid(table))
        return outbox__err(
            OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
            "outbox table \"%.60s\": use lower-case letters, digits and _ (at most 48 bytes)",
            table);
    if (ev->priority < -32768 || ev->priority > 32767)
        return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
                           "event priority %d is out of range", ev->priority);

    char id[OUTBOX_UUID_STRLEN + 1], prio[16], sql[512];
    if (ev->id)
        snprintf(id, sizeof(id), "%s", ev->id);
    else
        outbox_uuid_v7(id);
    snprintf(prio, sizeof(prio), "%d", ev->priority);
    const char *params[9] = {id,
                             ev->topic,
                             ev->type,
                             ev->key,
                             ev->payload,
                             ev->headers,
                             ev->traceparent,
                             ev->source && *ev->source ? ev->source : "/outbox",
                             prio};
    /* One round trip: insert, and the wake-up hint for idle relays. The
     * table name was checked above ([a-z0-9_]), so quoting it is enough. */
    snprintf(
        sql, sizeof(sql),
        "INSERT INTO \"%s\" (id, topic, type, key, payload, headers, traceparent, source, priority)"
        " VALUES ($1::uuid, $2, $3, $4, $5::json, $6::jsonb, $7, $8, $9::smallint)"
        " RETURNING pg_notify('%s_wakeup', '')",
        table, table);
    PGresult *r = PQexecParams(conn, sql, 9, NULL, params, NULL, NULL, 0);
    outbox_err_t err = OUTBOX_OK;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        err = outbox__pg_err(conn, r, errstr, errstr_size, "enqueue failed");
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
                           "message id \"%.40s\" is not a UUID",
                           message_id ? message_id : "(null)");
    if (!outbox__pg_in_tx(conn))
        return outbox__err(OUTBOX_ERR_NOT_IN_TRANSACTION, errstr, errstr_size,
                           "outbox_inbox_record needs an open transaction (BEGIN first) so the "
                           "record commits with the consumer's effect");
    const char *params[2] = {consumer, message_id};
    PGresult *r =
        PQexecParams(conn,
                     "INSERT INTO outbox_inbox (consumer, message_id) VALUES ($1, $2::uuid)"
                     " ON CONFLICT DO NOTHING",
                     2, NULL, params, NULL, NULL, 0);
    outbox_err_t err = OUTBOX_OK;
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        err = outbox__pg_err(conn, r, errstr, errstr_size, "inbox insert failed");
    else
        *is_new = atoi(PQcmdTuples(r)) == 1;
    PQclear(r);
    return err;
}
