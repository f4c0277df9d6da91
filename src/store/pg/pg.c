/* PostgreSQL: connections, migrations, enqueue, the inbox and the
 * consumer's batch transaction.
 * Every statement with values is parameterised. */
#include "store/pg/pg.h"

#include <libpq-events.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "core/log.h"
#include "core/util.h"
#include "outbox/consumer.h"
#include "store/store.h"

/* ------------------------------------------------------------------------ */
/* Prepared statements of the producer and consumer entry points             */

#define PREP_MAX 64
typedef struct prep_set_s {
    int n;
    uint64_t names[PREP_MAX]; /* hashes of the names prepared on this session */
} prep_set_t;

static int prep_evproc(PGEventId id, void *info, void *pass)
{
    (void)pass;
    if (id == PGEVT_CONNRESET) { /* a new session: nothing is prepared on it */
        prep_set_t *p = PQinstanceData(((PGEventConnReset *)info)->conn, prep_evproc);
        if (p)
            p->n = 0;
    } else if (id == PGEVT_CONNDESTROY) {
        free(PQinstanceData(((PGEventConnDestroy *)info)->conn, prep_evproc));
    }
    return 1;
}

static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

int outbox__pg_prepare_once(PGconn *conn, const char *name, const char *sql, PGresult **res)
{
    *res = NULL;
    prep_set_t *p = PQinstanceData(conn, prep_evproc);
    if (!p && (p = calloc(1, sizeof(*p))) != NULL) {
        if (!PQregisterEventProc(conn, prep_evproc, "outbox", NULL) ||
            !PQsetInstanceData(conn, prep_evproc, p)) {
            free(p); /* registered twice or refused: run unnamed */
            p = NULL;
        }
    }
    if (!p)
        return 0;
    uint64_t h = name_hash(name);
    for (int i = 0; i < p->n; i++)
        if (p->names[i] == h)
            return 1;
    if (p->n == PREP_MAX)
        return 0;
    PGresult *r = PQprepare(conn, name, sql, 0, NULL);
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && !(state && !strcmp(state, "42P05"))) {
        *res = r; /* e.g. the transaction is aborted: the caller reports it */
        return -1;
    }
    PQclear(r);
    p->names[p->n++] = h;
    return 1;
}

/* A statement run by name failed with 26000: the session lost its prepared
 * statements (DISCARD ALL), prepare them again next time. */
static void prep_check_lost(PGconn *conn, const PGresult *r)
{
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    prep_set_t *p = PQinstanceData(conn, prep_evproc);
    if (p && state && !strcmp(state, "26000"))
        p->n = 0;
}

PGresult *outbox__pg_exec_prepared(PGconn *conn, const char *name, const char *sql, int n,
                                   const char *const *params)
{
    PGresult *r = NULL;
    int named = outbox__pg_prepare_once(conn, name, sql, &r);
    if (named < 0)
        return r;
    if (!named)
        return PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);
    r = PQexecPrepared(conn, name, n, params, NULL, NULL, 0);
    prep_check_lost(conn, r);
    return r;
}

/* A connection out of step with its server (a pipeline whose Sync never
 * came): what it answers next can't be matched to a statement, yet
 * PQstatus() says OK and the caller would keep it. Closes its socket and
 * reads the end, so that libpq marks it CONNECTION_BAD: its owner then
 * reconnects as after any lost connection. */
static void pg_drop_desynced(PGconn *conn, const char *why)
{
    char msg[512];
    char cause[256];
    snprintf(cause, sizeof(cause), "%s", why[0] ? why : PQerrorMessage(conn));
    size_t len = strlen(cause);
    while (len && (cause[len - 1] == '\n' || cause[len - 1] == ' '))
        cause[--len] = '\0';
    snprintf(msg, sizeof(msg),
             "PostgreSQL connection out of step (its pipeline's sync never came): closing it, "
             "the next use reconnects; libpq said: %s",
             cause);
    outbox__log(OUTBOX_LOG_WARN, "pg", "pg_desync", msg, NULL);
    int fd = PQsocket(conn);
    if (fd >= 0)
        (void)shutdown(fd, SHUT_RDWR);
    for (int k = 0; k < 1024 && PQstatus(conn) == CONNECTION_OK; k++)
        if (!PQconsumeInput(conn))
            break;
}

int outbox__pg_pipeline(PGconn *conn, int n, const char *const *names, const char *const *sqls,
                        const int *prepared, const int *nparams, const char *const *const *params,
                        PGresult **res)
{
    for (int i = 0; i < n; i++)
        res[i] = NULL;
    if (!PQenterPipelineMode(conn))
        return -1;
    int sent = 1;
    for (int i = 0; i < n && sent; i++)
        sent = prepared[i]
                   ? PQsendQueryPrepared(conn, names[i], nparams[i], params[i], NULL, NULL, 0)
                   : PQsendQueryParams(conn, sqls[i], nparams[i], NULL, params[i], NULL, NULL, 0);
    if (!sent || !PQpipelineSync(conn)) {
        (void)PQexitPipelineMode(conn); /* refused with work queued: the caller drops it */
        return -1;
    }
    /* Each statement: its result, then NULL; then the Sync's result.
     * Nothing else may end the round but a connection marked bad, except
     * that libpq 15 reports a write that failed while bytes from the server
     * are still unread (the server reset the connection in the middle of
     * a message) as one error result, the connection still "OK", and then
     * NULL for ever, the Sync's result never coming (found by chaos_orders:
     * a consumer thread spun here from a PostgreSQL restart on and never
     * stopped; orders_pg_desync). So one NULL more than there are
     * statements ends it too. */
    int i = 0, synced = 0;
    char why[256] = "";
    for (;;) {
        PGresult *r = PQgetResult(conn);
        if (!r) {
            if (PQstatus(conn) == CONNECTION_BAD || ++i > n)
                break;
            continue;
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            synced = 1;
            break;
        }
        if (st == PGRES_FATAL_ERROR && !why[0])
            snprintf(why, sizeof(why), "%s", PQresultErrorMessage(r));
        if (i < n && !res[i]) {
            res[i] = r;
            if (prepared[i])
                prep_check_lost(conn, r);
        } else {
            PQclear(r);
        }
        if (st == PGRES_FATAL_ERROR && PQstatus(conn) == CONNECTION_BAD)
            break;
    }
    if (!synced && PQstatus(conn) == CONNECTION_OK)
        pg_drop_desynced(conn, why);
    return PQexitPipelineMode(conn) && PQstatus(conn) == CONNECTION_OK ? 0 : -1;
}

/* Replaces every occurrence of needle in buf (NUL-terminated, size bytes)
 * with "****". */
static void mask_all(char *buf, size_t size, const char *needle)
{
    size_t n = needle ? strlen(needle) : 0;
    if (!n)
        return;
    char *p = buf;
    while ((p = strstr(p, needle)) != NULL) {
        size_t tail = strlen(p + n), put = 4;
        if (n >= 4 || (size_t)(p - buf) + 4 + tail < size) {
            memmove(p + 4, p + n, tail + 1);
            memcpy(p, "****", 4);
        } else {
            memset(p, '*', n); /* no room to grow: star it in place */
            put = n;
        }
        p += put;
    }
}

/* Percent-decodes src[0..len) into out. */
static void pct_decode(const char *src, size_t len, char *out, size_t out_size)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 1 < out_size; i++) {
        unsigned v;
        if (src[i] == '%' && i + 2 < len && sscanf(src + i + 1, "%2x", &v) == 1) {
            out[o++] = (char)v;
            i += 2;
        } else {
            out[o++] = src[i];
        }
    }
    out[o] = '\0';
}

void outbox__pg_redact(const char *msg, const char *conninfo, const char *password, char *out,
                       size_t out_size)
{
    if (!out_size)
        return;
    outbox__redact_url(msg ? msg : "", out, out_size);
    mask_all(out, out_size, password);
    if (!conninfo || !*conninfo)
        return;
    /* The password as libpq reads it (also when it came percent-encoded). */
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (!strcmp(o->keyword, "password"))
            mask_all(out, out_size, o->val);
    PQconninfoFree(opts);
    /* And as written, for a conninfo libpq could not parse (its message may
     * echo the text): URI user:password@, or password=... */
    char pw[512];
    const char *scheme = strstr(conninfo, "://");
    if (scheme) {
        const char *auth = scheme + 3;
        const char *end = auth + strcspn(auth, "/?");
        const char *at = NULL;
        for (const char *q = auth; q < end; q++)
            if (*q == '@')
                at = q;
        const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
        if (colon) {
            size_t len = (size_t)(at - colon - 1);
            snprintf(pw, sizeof(pw), "%.*s", (int)len, colon + 1);
            mask_all(out, out_size, pw);
            pct_decode(colon + 1, len, pw, sizeof(pw));
            mask_all(out, out_size, pw);
        }
    }
    for (const char *k = strstr(conninfo, "password"); k; k = strstr(k + 8, "password")) {
        const char *v = k + 8;
        while (*v == ' ' || *v == '\t')
            v++;
        if (*v++ != '=')
            continue;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t o = 0;
        if (*v == '\'') {
            for (v++; *v && *v != '\'' && o + 1 < sizeof(pw); v++) {
                if (*v == '\\' && v[1])
                    v++;
                pw[o++] = *v;
            }
        } else {
            for (; *v && *v != ' ' && *v != '&' && o + 1 < sizeof(pw); v++)
                pw[o++] = *v;
        }
        pw[o] = '\0';
        mask_all(out, out_size, pw);
    }
}

outbox_err_t outbox__pg_err(PGconn *conn, const PGresult *res, char *errstr, size_t errstr_size,
                            const char *what)
{
    const char *m = res ? PQresultErrorMessage(res) : NULL;
    const char *pass = NULL; /* a server's message about a statement never holds it */
    if (!m || !*m) {
        m = PQerrorMessage(conn);
        pass = conn ? PQpass(conn) : NULL; /* the connection's own message may */
    }
    char buf[512];
    outbox__pg_redact(m && *m ? m : "unknown error", NULL, pass, buf, sizeof(buf));
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
        /* libpq's message may echo the conninfo (a URI it cannot parse is
         * quoted whole): no password of it reaches errstr. */
        char buf[512];
        outbox__pg_redact(PQerrorMessage(c), conninfo, PQpass(c), buf, sizeof(buf));
        outbox__err(OUTBOX_ERR_DB, errstr, errstr_size, "cannot connect to PostgreSQL: %s",
                    outbox__rtrim(buf));
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
    char lock[24];
    snprintf(lock, sizeof(lock), "%lld", (long long)OUTBOX_LOCK_MIGRATE);
    const char *lock_param[1] = {lock};
    PGresult *lr = PQexecParams(conn, "SELECT pg_advisory_lock($1::bigint)", 1, NULL, lock_param,
                                NULL, NULL, 0);
    outbox_err_t err = PQresultStatus(lr) == PGRES_TUPLES_OK
                           ? OUTBOX_OK
                           : outbox__pg_err(conn, lr, errstr, errstr_size, "query failed");
    PQclear(lr);
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
    PQclear(PQexecParams(conn, "SELECT pg_advisory_unlock($1::bigint)", 1, NULL, lock_param, NULL,
                         NULL, 0));
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

/* OUTBOX_NOTIFY=true in the environment (what makes a relay LISTEN) makes
 * every outbox_enqueue of the process send the hint; read once. */
static int g_env_notify;
static pthread_once_t g_env_once = PTHREAD_ONCE_INIT;

static void read_env_notify(void)
{
    const char *v = getenv("OUTBOX_NOTIFY");
    g_env_notify = v && (!strcasecmp(v, "true") || !strcmp(v, "1") || !strcasecmp(v, "yes") ||
                         !strcasecmp(v, "on"));
}

static int env_notify(void)
{
    pthread_once(&g_env_once, read_env_notify);
    return g_env_notify;
}

outbox_err_t outbox__pg_enqueue_stmt(const outbox_event_t *ev, outbox_pg_enqueue_t *st,
                                     char *errstr, size_t errstr_size)
{
    memset(st, 0, sizeof(*st));
    if (!ev)
        return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size, "the event is required");
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

    st->hint = ev->wakeup_hint || env_notify();
    if (ev->id)
        snprintf(st->id, sizeof(st->id), "%s", ev->id);
    else
        outbox_uuid_v7(st->id);
    snprintf(st->prio, sizeof(st->prio), "%d", ev->priority);
    const char *params[9] = {st->id,          ev->topic,
                             ev->type,        ev->key,
                             ev->payload,     ev->headers,
                             ev->traceparent, ev->source && *ev->source ? ev->source : "/outbox",
                             st->prio};
    memcpy(st->params, params, sizeof(params));
    /* The insert (and the wake-up hint, when asked for), as a statement
     * prepared once per session. The table name was checked above
     * ([a-z0-9_]), so quoting it is enough. */
    snprintf(st->sql, sizeof(st->sql),
             "INSERT INTO \"%s\" (id, topic, type, key, payload, headers, traceparent, source, "
             "priority)"
             " VALUES ($1::uuid, $2, $3, $4, $5::json, $6::jsonb, $7, $8, $9::smallint)%s%s%s",
             table, st->hint ? " RETURNING pg_notify('" : "", st->hint ? table : "",
             st->hint ? "_wakeup', '')" : "");
    snprintf(st->name, sizeof(st->name), "outbox_enqueue_%016llx",
             (unsigned long long)name_hash(st->sql));
    return OUTBOX_OK;
}

outbox_err_t outbox__pg_enqueue_result(PGconn *conn, const PGresult *r,
                                       const outbox_pg_enqueue_t *st, char *errstr,
                                       size_t errstr_size)
{
    if (PQresultStatus(r) == (st->hint ? PGRES_TUPLES_OK : PGRES_COMMAND_OK))
        return OUTBOX_OK;
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    outbox_err_t err = outbox__pg_err(conn, r, errstr, errstr_size, "enqueue failed");
    /* 22P02 invalid text representation (bad JSON), 23505 duplicate id */
    if (state && (!strcmp(state, "22P02") || !strcmp(state, "23505")))
        err = OUTBOX_ERR_INVALID_ARG;
    return err;
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
    outbox_pg_enqueue_t st;
    outbox_err_t err = outbox__pg_enqueue_stmt(ev, &st, errstr, errstr_size);
    if (err)
        return err;
    /* One round trip. */
    PGresult *r = outbox__pg_exec_prepared(conn, st.name, st.sql, 9, st.params);
    err = outbox__pg_enqueue_result(conn, r, &st, errstr, errstr_size);
    if (!err && id_out)
        memcpy(id_out, st.id, sizeof(st.id));
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
    PGresult *r = outbox__pg_exec_prepared(
        conn, "outbox_inbox_record",
        "INSERT INTO outbox_inbox (consumer, message_id) VALUES ($1, $2::uuid)"
        " ON CONFLICT DO NOTHING",
        2, params);
    outbox_err_t err = OUTBOX_OK;
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        err = outbox__pg_err(conn, r, errstr, errstr_size, "inbox insert failed");
    else
        *is_new = atoi(PQcmdTuples(r)) == 1;
    PQclear(r);
    return err;
}

/* ------------------------------------------------------------------------ */
/* The consumer's batch transaction (include/outbox/consumer.h)              */

/* Reads the answers still due on conn (a NEXT sent without waiting); 0 if
 * one of them is an error. */
static int batch_pending_ok(PGconn *conn)
{
    int ok = 1;
    PGresult *r;
    while ((r = PQgetResult(conn)) != NULL) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            ok = 0;
        PQclear(r);
    }
    return ok;
}

outbox_err_t outbox_consumer_batch_pg(outbox_consumer_batch_op_t op, int n, void *opaque)
{
    PGconn **connp = opaque;
    PGconn *conn = connp ? *connp : NULL;
    if (!conn || PQstatus(conn) != CONNECTION_OK || (unsigned)op > OUTBOX_CONSUMER_BATCH_ABORT)
        return OUTBOX_ERR_DB;
    char sql[128];
    switch (op) {
    case OUTBOX_CONSUMER_BATCH_BEGIN:
        snprintf(sql, sizeof(sql), "BEGIN");
        break;
    case OUTBOX_CONSUMER_BATCH_SAVEPOINT:
        snprintf(sql, sizeof(sql), "SAVEPOINT outbox_message_%d", n);
        break;
    case OUTBOX_CONSUMER_BATCH_NEXT:
        snprintf(sql, sizeof(sql),
                 "RELEASE SAVEPOINT outbox_message_%d; SAVEPOINT outbox_message_%d", n - 1, n);
        break;
    case OUTBOX_CONSUMER_BATCH_ROLLBACK_TO:
        snprintf(sql, sizeof(sql), "ROLLBACK TO SAVEPOINT outbox_message_%d", n);
        break;
    case OUTBOX_CONSUMER_BATCH_COMMIT:
        snprintf(sql, sizeof(sql), "COMMIT");
        break;
    default:
        snprintf(sql, sizeof(sql), "ROLLBACK");
        break;
    }
    /* A NEXT still unanswered: its failure fails this op (the transaction is
     * aborted anyway; COMMIT would answer ROLLBACK). */
    int ok = batch_pending_ok(conn);
    if (!PQsendQuery(conn, sql))
        return OUTBOX_ERR_DB;
    if (op == OUTBOX_CONSUMER_BATCH_NEXT)
        return ok ? OUTBOX_OK : OUTBOX_ERR_DB; /* answered later: see the header */
    /* Simple query; every result must be OK. */
    PGresult *r;
    while ((r = PQgetResult(conn))) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            ok = 0;
        /* COMMIT of a failed transaction answers ROLLBACK, not an error. */
        else if (op == OUTBOX_CONSUMER_BATCH_COMMIT && strcmp(PQcmdStatus(r), "COMMIT"))
            ok = 0;
        PQclear(r);
    }
    return ok && PQstatus(conn) == CONNECTION_OK ? OUTBOX_OK : OUTBOX_ERR_DB;
}
