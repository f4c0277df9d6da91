/* The service kit: thin wrappers over the library's internals, so services
 * depend on the kit's names only. See kit.h. */
#include "kit/kit.h"

#include <stdio.h>
#include <string.h>

#include "core/conf.h"
#include "broker/redis.h"
#include "core/util.h"
#include "store/pg/pg.h"

_Static_assert(OUTBOX_KIT_SCOPE_DB == OUTBOX_SCOPE_DB, "scope DB");
_Static_assert(OUTBOX_KIT_SCOPE_RELAY == OUTBOX_SCOPE_RELAY, "scope RELAY");
_Static_assert(OUTBOX_KIT_SCOPE_SINK == OUTBOX_SCOPE_SINK, "scope SINK");
_Static_assert(OUTBOX_KIT_SCOPE_HTTP == OUTBOX_SCOPE_HTTP, "scope HTTP");
_Static_assert(OUTBOX_KIT_SCOPE_SERVICE == OUTBOX_SCOPE_SERVICE, "scope SERVICE");
_Static_assert(OUTBOX_KIT_SCOPE_LOG == OUTBOX_SCOPE_LOG, "scope LOG");
_Static_assert(OUTBOX_KIT_SCOPE_ALL == OUTBOX_SCOPE_ALL, "scope ALL");

/* ---- configuration ---- */

outbox_conf_t *outbox_kit_conf_load(const char *prog, int argc, char **argv,
                                    void (*usage)(FILE *fp), int *argi, int *exit_code)
{
    return outbox__conf_load(prog, argc, argv, usage, argi, exit_code);
}

const char *outbox_kit_conf_str(const outbox_conf_t *conf, const char *name)
{
    return outbox__conf_str(conf, name);
}

int64_t outbox_kit_conf_int(const outbox_conf_t *conf, const char *name)
{
    return outbox__conf_int(conf, name);
}

int outbox_kit_conf_bool(const outbox_conf_t *conf, const char *name)
{
    return outbox__conf_bool(conf, name);
}

int64_t outbox_kit_conf_ms(const outbox_conf_t *conf, const char *name)
{
    return outbox__conf_ms(conf, name);
}

int outbox_kit_conf_default(outbox_conf_t *conf, const char *name, const char *value)
{
    char err[256];
    if (outbox__conf_is_set(conf, name))
        return 0;
    return outbox_conf_set(conf, name, value, err, sizeof(err)) == OUTBOX_OK ? 1 : -1;
}

const char *outbox_kit_conf_database_url(const outbox_conf_t *conf)
{
    return outbox__conf_database_url(conf);
}

void outbox_kit_conf_print_help(FILE *fp, unsigned scopes)
{
    outbox__conf_print_help(fp, scopes);
}

void outbox_kit_conf_log(const outbox_conf_t *conf, const char *component, unsigned scopes)
{
    outbox__conf_log(conf, component, scopes);
}

/* ---- database ---- */

PGconn *outbox_kit_db_connect(const char *conninfo, const char *appname, char *errstr,
                              size_t errstr_size)
{
    return outbox__pg_connect(conninfo, appname, errstr, errstr_size);
}

outbox_err_t outbox_kit_db_exec(PGconn *conn, const char *sql, char *errstr, size_t errstr_size)
{
    return outbox__pg_exec(conn, sql, errstr, errstr_size);
}

int outbox_kit_db_in_tx(PGconn *conn)
{
    return outbox__pg_in_tx(conn);
}

int outbox_kit_db_pipeline(PGconn *conn, int n, const char *const *names, const char *const *sqls,
                           const int *nparams, const char *const *const *params, PGresult **res)
{
    int prepared[OUTBOX_KIT_PIPELINE_MAX] = {0};
    if (n < 1 || n > OUTBOX_KIT_PIPELINE_MAX)
        return -1;
    for (int i = 0; i < n; i++)
        prepared[i] = names && names[i];
    return outbox__pg_pipeline(conn, n, names, sqls, prepared, nparams, params, res);
}

int outbox_kit_enqueue_hint(void)
{
    outbox_event_t probe = {.topic = "t", .type = "t", .key = "", .payload = "{}"};
    outbox_pg_enqueue_t st;
    char err[64];
    return outbox__pg_enqueue_stmt(&probe, &st, err, sizeof(err)) == OUTBOX_OK && st.hint;
}

/* Copies libpq's message (result's, else the connection's) without its
 * trailing newlines. */
static void pq_reason(PGconn *conn, const PGresult *r, char *errstr, size_t errstr_size)
{
    if (!errstr || !errstr_size)
        return;
    const char *m = r ? PQresultErrorMessage(r) : "";
    if (!m || !*m)
        m = PQerrorMessage(conn);
    snprintf(errstr, errstr_size, "%s", m && *m ? m : "connection lost");
    outbox__rtrim(errstr);
}

outbox_kit_commit_t outbox_kit_db_commit(PGconn *conn, char *errstr, size_t errstr_size)
{
    /* Simple query protocol: one 'Q' message, one answer. */
    PGresult *r = PQexec(conn, "COMMIT");
    ExecStatusType st = PQresultStatus(r);
    outbox_kit_commit_t out;
    if (!r || PQstatus(conn) != CONNECTION_OK) {
        /* No answer (or not all of it) reached us: COMMIT may have been
         * applied before the connection broke. */
        out = OUTBOX_KIT_COMMIT_UNKNOWN;
        pq_reason(conn, r, errstr, errstr_size);
    } else if (st == PGRES_COMMAND_OK && !strcmp(PQcmdStatus(r), "COMMIT")) {
        out = OUTBOX_KIT_COMMITTED;
    } else if (st == PGRES_COMMAND_OK) {
        /* COMMIT of an aborted transaction answers "ROLLBACK". */
        out = OUTBOX_KIT_ROLLED_BACK;
        if (errstr && errstr_size)
            snprintf(errstr, errstr_size, "the transaction had failed: COMMIT rolled it back");
    } else {
        /* The server answered with an error (e.g. a deferred constraint or a
         * serialization failure at commit): it rolled back. */
        out = OUTBOX_KIT_ROLLED_BACK;
        pq_reason(conn, r, errstr, errstr_size);
    }
    PQclear(r);
    return out;
}

outbox_err_t outbox_kit_migrate(PGconn *conn, const char *component, const outbox_migration_t *list,
                                int *applied, char *errstr, size_t errstr_size)
{
    return outbox__pg_migrate_set(conn, component, list, applied, errstr, errstr_size);
}

/* ---- process basics ---- */

void outbox_kit_on_stop_signals(void (*handler)(int))
{
    outbox__on_stop_signals(handler);
}

int64_t outbox_kit_now_ms(void)
{
    return outbox__now_ms();
}

void outbox_kit_sleep_ms(int64_t ms, _Atomic int *stop)
{
    outbox__sleep_ms(ms, stop);
}

void outbox_kit_thread_name(const char *prefix, const char *name)
{
    outbox__thread_name("%s%s", prefix ? prefix : "", name ? name : "");
}

int outbox_kit_join_consumer(pthread_t t, int64_t deadline_ms, const char *component,
                             const char *consumer)
{
    if (outbox__join_by(t, deadline_ms) == 0)
        return 0;
    outbox__log(OUTBOX_LOG_WARN, component, "shutdown_timeout",
                "a consumer thread is still busy after the shutdown timeout: leaving it; its "
                "transaction rolls back and its messages are delivered again",
                "consumer", consumer, NULL);
    return -1;
}

struct redisContext *outbox_kit_redis_connect(const outbox_conf_t *conf, int64_t timeout_ms,
                                              char *errstr, size_t errstr_size)
{
    const char *addr = outbox__conf_str(conf, "redis_addr");
    char url[512];
    if (strstr(addr, "://"))
        snprintf(url, sizeof(url), "%s", addr);
    else
        snprintf(url, sizeof(url), "redis://%s", addr);
    outbox__redis_url_t u;
    if (outbox__redis_url_parse(url, &u, errstr, errstr_size) != OUTBOX_OK)
        return NULL;
    if (!u.password[0])
        snprintf(u.password, sizeof(u.password), "%s", outbox__conf_str(conf, "redis_password"));
    return outbox__redis_connect(&u, timeout_ms, errstr, errstr_size);
}

outbox_relay_t *outbox_kit_relay_start(const outbox_conf_t *conf, const char *component)
{
    char err[1024];
    outbox_conf_t *rconf = outbox_conf_dup(conf);
    outbox_relay_t *relay = rconf ? outbox_relay_new(rconf, err, sizeof(err)) : NULL;
    if (!relay) {
        outbox_conf_destroy(rconf);
        outbox__log(OUTBOX_LOG_ERROR, component, "relay_failed", rconf ? err : "out of memory",
                    NULL);
        return NULL;
    }
    if (outbox_relay_start(relay, err, sizeof(err))) {
        outbox__log(OUTBOX_LOG_ERROR, component, "relay_failed", err, NULL);
        outbox_relay_destroy(relay);
        return NULL;
    }
    return relay;
}

void outbox_kit_idem_purge_due(outbox_dbpool_t *pool, int64_t retention_ms, int64_t *next_ms,
                               const char *component)
{
    int64_t now = outbox_kit_now_ms();
    if (now < *next_ms)
        return;
    int64_t every = retention_ms / 10;
    *next_ms = now + (every < 1000 ? 1000 : every > 60000 ? 60000 : every);
    char err[512];
    PGconn *c = outbox__dbpool_get(pool, 1000, err, sizeof(err));
    if (!c)
        return;
    long long n = 0;
    if (outbox__idem_purge(c, &n, err, sizeof(err)))
        outbox__log(OUTBOX_LOG_WARN, component, "purge_failed", err, NULL);
    else if (n > 0)
        outbox__logf(OUTBOX_LOG_INFO, component, "keys_purged",
                     "purged %lld expired idempotency keys", n);
    outbox__dbpool_put(pool, c);
}

outbox_http_t *outbox_kit_http_start(const outbox_conf_t *conf, const char *name,
                                     const outbox_http_route_t *routes, void *opaque,
                                     outbox_http_ready_fn ready)
{
    char err[1024];
    outbox_http_opts_t opts = {
        .name = name,
        .addr = outbox_kit_conf_str(conf, "http_addr"),
        .port = (int)outbox_kit_conf_int(conf, "port"),
        .max_body = (size_t)outbox_kit_conf_int(conf, "http_max_body"),
        .max_connections = (unsigned)outbox_kit_conf_int(conf, "http_max_connections"),
        .timeout_s = (unsigned)(outbox_kit_conf_ms(conf, "http_timeout") / 1000),
        .header_timeout_ms = outbox_kit_conf_ms(conf, "http_header_timeout"),
        .auth_token = outbox_kit_conf_str(conf, "http_token"),
        .routes = routes,
        .opaque = opaque,
        .ready = ready};
    outbox_http_t *http = outbox__http_start(&opts, err, sizeof(err));
    if (!http) {
        size_t n = strlen(err);
        snprintf(err + n, sizeof(err) - n, " (port in use? set PORT or OUTBOX_HTTP_ADDR)");
        outbox__log(OUTBOX_LOG_ERROR, name, "listen_failed", err, NULL);
        return NULL;
    }
    char msg[64], port[16];
    snprintf(msg, sizeof(msg), "Server starting on port %d", outbox__http_port(http));
    snprintf(port, sizeof(port), "%d", outbox__http_port(http));
    outbox__log(OUTBOX_LOG_INFO, name, "listening", msg, "addr", opts.addr, "port", port, NULL);
    return http;
}
