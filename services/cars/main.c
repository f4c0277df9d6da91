/* cars-service: the car system (seed 003) in one process — the HTTP API on
 * the primary database, the relay publishing the cars events, and the
 * car-search consumer keeping the search index in its own database.
 * --no-api, --no-relay and --no-consumers leave a part to another process. */
#include <ctype.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cars.h"

#define IMPORT_BODY_MAX (8 * 1024 * 1024) /* a full POST /cars/import fits */

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    if (g_stop++)
        _exit(1); /* second signal: leave now; open transactions roll back */
}

static void usage(FILE *fp)
{
    fprintf(fp,
            "Usage: cars-service [OPTIONS]\n"
            "\n"
            "The car system: POST/PUT/DELETE /cars write the car and its CarCreated /\n"
            "CarUpdated / CarDeleted event (with a per-car version and a schema version) in\n"
            "one transaction; the relay publishes the events (price changes and deletes ahead\n"
            "of bulk imports); GET /cars/search answers from the search index, never from the\n"
            "primary tables. The index is an OpenSearch index kept by the relay's bulk sink\n"
            "when the sink is opensearch+http(s)://, else a PostgreSQL full-text projection in\n"
            "the search database (SEARCH_DATABASE_URL) kept by the car-search consumer.\n"
            "Every option can also be set by the environment variable shown; flags win.\n"
            "\n"
            "  --version                  print the version and exit\n");
    outbox_kit_conf_print_help(fp, OUTBOX_KIT_SCOPE_DB | OUTBOX_KIT_SCOPE_HTTP |
                                       OUTBOX_KIT_SCOPE_SERVICE | OUTBOX_KIT_SCOPE_RELAY |
                                       OUTBOX_KIT_SCOPE_SINK | OUTBOX_KIT_SCOPE_LOG);
    fprintf(fp,
            "\nEndpoints: POST /cars, POST /cars/import, GET /cars/search?q=WORDS[&limit=N],\n"
            "GET|PUT|DELETE /cars/{id}, GET /healthz, GET /readyz, GET /metrics (docs/CARS.md).\n"
            "http_max_body defaults to 8 MiB here (a full import of %d cars).\n"
            "\nExample:\n"
            "  DATABASE_URL=postgres://app@127.0.0.1/cars "
            "SEARCH_DATABASE_URL=postgres://app@127.0.0.1/cars_search \\\n"
            "  REDIS_ADDR=127.0.0.1:6379 PORT=8080 cars-service\n",
            CARS_IMPORT_MAX);
}

static PGconn *connect_db(const char *url, const char *what)
{
    char err[512];
    for (int attempt = 0; attempt < 30 && !g_stop; attempt++) {
        PGconn *c = outbox_kit_db_connect(url, "cars-service", err, sizeof(err));
        if (c)
            return c;
        outbox__log(OUTBOX_LOG_WARN, "cars", "db_wait", err, "database", what, NULL);
        sleep(1);
    }
    outbox__log(OUTBOX_LOG_ERROR, "cars", "db_failed", err, "database", what, NULL);
    return NULL;
}

/* Appends " key='value'" (libpq quoting) to out. */
static void kv_append(char *out, size_t size, const char *key, const char *val)
{
    size_t o = strlen(out);
    int l = snprintf(out + o, size - o, "%s%s='", o ? " " : "", key);
    if (l < 0 || (size_t)l >= size - o)
        return;
    o += (size_t)l;
    for (const char *p = val; *p && o + 3 < size; p++) {
        if (*p == '\'' || *p == '\\')
            out[o++] = '\\';
        out[o++] = *p;
    }
    if (o + 1 < size)
        out[o++] = '\'';
    out[o] = '\0';
}

/*
 * The default search database: the primary's conninfo with dbname
 * "<dbname>_search"; created on the primary's server if missing. 0 with
 * out filled, or -1 (logged).
 */
static int default_search_url(PGconn *primary, const char *primary_url, char *out, size_t size)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(primary_url, &perr);
    if (!opts) {
        char shown[512]; /* libpq's message may quote the URL, password and all */
        outbox__redact_url(perr ? perr : "cannot parse the database URL", shown, sizeof(shown));
        outbox__log(OUTBOX_LOG_ERROR, "cars", "search_db_failed", shown, NULL);
        PQfreemem(perr);
        return -1;
    }
    char name[128];
    snprintf(name, sizeof(name), "%s_search", PQdb(primary));
    out[0] = '\0';
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (o->val && o->val[0] && strcmp(o->keyword, "dbname") != 0)
            kv_append(out, size, o->keyword, o->val);
    kv_append(out, size, "dbname", name);
    PQconninfoFree(opts);

    const char *p[1] = {name};
    PGresult *r = PQexecParams(primary, "SELECT 1 FROM pg_database WHERE datname = $1", 1, NULL, p,
                               NULL, NULL, 0);
    int exists = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    PQclear(r);
    if (exists)
        return 0;
    char *ident = PQescapeIdentifier(primary, name, strlen(name));
    char sql[300];
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", ident ? ident : "\"?\"");
    PQfreemem(ident);
    r = PQexec(primary, sql);
    const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || (st && !strcmp(st, "42P04"));
    if (!ok)
        outbox__log(OUTBOX_LOG_ERROR, "cars", "search_db_failed", PQresultErrorMessage(r), "hint",
                    "create it, or set SEARCH_DATABASE_URL", "database", name, NULL);
    else
        outbox__log(OUTBOX_LOG_INFO, "cars", "search_db_created", "search database created",
                    "database", name, NULL);
    PQclear(r);
    return ok ? 0 : -1;
}

/* The search index of an opensearch+http(s):// sink: base URL and index,
 * named as the sink names it (opensearch_index, else prefix + topic). */
static void opensearch_target(const outbox_conf_t *conf, cars_app_t *app)
{
    const char *sink = outbox_kit_conf_str(conf, "sink");
    const char *rest = sink + strlen("opensearch+");
    const char *auth = strstr(rest, "://");
    const char *path = auth ? strchr(auth + 3, '/') : NULL;
    size_t base = path ? (size_t)(path - rest) : strlen(rest);
    snprintf(app->os_url, sizeof(app->os_url), "%.*s", (int)base, rest);
    const char *idx = outbox_kit_conf_str(conf, "opensearch_index");
    if (idx[0]) {
        snprintf(app->os_index, sizeof(app->os_index), "%s", idx);
    } else {
        const char *prefix = path ? path + 1 : "";
        snprintf(app->os_index, sizeof(app->os_index), "%.*s%s", (int)strcspn(prefix, "/?"), prefix,
                 CARS_TOPIC);
        for (char *p = app->os_index; *p; p++)
            *p = (char)tolower((unsigned char)*p);
    }
}

/* GET /readyz: the databases answer. */
static int ready(void *opaque, char *why, size_t why_size)
{
    cars_app_t *app = opaque;
    if (outbox__dbpool_ready(app->pool, why, why_size))
        return -1;
    if (app->search_pool && outbox__dbpool_ready(app->search_pool, why, why_size)) {
        size_t l = strlen(why);
        snprintf(why + l, why_size - l, " (search database)");
        return -1;
    }
    return 0;
}

/* The user did not choose http_max_body (environment or flag). */
static int max_body_unset(int argc, char **argv)
{
    if (getenv("OUTBOX_HTTP_MAX_BODY"))
        return 0;
    for (int i = 1; i < argc; i++)
        if (strstr(argv[i], "max_body") || strstr(argv[i], "max-body"))
            return 0;
    return 1;
}

int main(int argc, char **argv)
{
    char err[1024];
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--version")) {
            printf("cars-service %s\n", OUTBOX_VERSION_STR);
            return 0;
        }
    int rc;
    outbox_conf_t *conf = outbox_kit_conf_load("cars-service", argc, argv, usage, NULL, &rc);
    if (!conf)
        return rc;
    if (max_body_unset(argc, argv)) {
        char v[24];
        snprintf(v, sizeof(v), "%d", IMPORT_BODY_MAX);
        outbox_conf_set(conf, "http_max_body", v, err, sizeof(err));
    }
    int run_api = outbox_kit_conf_bool(conf, "api"),
        run_relay = outbox_kit_conf_bool(conf, "relay"),
        run_consumers = outbox_kit_conf_bool(conf, "consumers");
    outbox_kit_conf_log(conf, "cars",
                        OUTBOX_KIT_SCOPE_DB | OUTBOX_KIT_SCOPE_HTTP | OUTBOX_KIT_SCOPE_SERVICE);
    if (!run_api && !run_relay && !run_consumers) {
        fprintf(stderr, "cars-service: --no-api, --no-relay and --no-consumers together leave "
                        "nothing to run\n");
        outbox_conf_destroy(conf);
        return 2;
    }
    outbox_kit_on_stop_signals(on_signal);

    cars_app_t app = {.conf = conf};
    if (!strncmp(outbox_kit_conf_str(conf, "sink"), "opensearch+", 11))
        opensearch_target(conf, &app);

    /* The primary database: the library's tables and the cars table. */
    const char *url = outbox_kit_conf_database_url(conf);
    PGconn *db = connect_db(url, "primary");
    if (!db) {
        outbox_conf_destroy(conf);
        return 1;
    }
    outbox__log(OUTBOX_LOG_INFO, "cars", "db_connected", "Connected to database successfully",
                NULL);
    if (outbox_migrate(db, NULL, err, sizeof(err)) ||
        outbox_kit_migrate(db, "cars", cars_migrations, NULL, err, sizeof(err))) {
        outbox__log(OUTBOX_LOG_ERROR, "cars", "migrate_failed", err, "database", "primary", NULL);
        PQfinish(db);
        outbox_conf_destroy(conf);
        return 1;
    }

    /* The search database (PostgreSQL search only): the projection's table
     * and the consumer's inbox. */
    char search_url[2048] = "";
    if (!app.os_url[0]) {
        const char *s = outbox_kit_conf_str(conf, "search_database_url");
        if (s[0])
            snprintf(search_url, sizeof(search_url), "%s", s);
        else if (default_search_url(db, url, search_url, sizeof(search_url))) {
            PQfinish(db);
            outbox_conf_destroy(conf);
            return 1;
        }
    }
    PQfinish(db);
    if (search_url[0]) {
        PGconn *sdb = connect_db(search_url, "search");
        if (!sdb || outbox_migrate(sdb, NULL, err, sizeof(err)) ||
            outbox_kit_migrate(sdb, "cars_search", cars_search_migrations, NULL, err,
                               sizeof(err))) {
            if (sdb)
                outbox__log(OUTBOX_LOG_ERROR, "cars", "migrate_failed", err, "database", "search",
                            NULL);
            PQfinish(sdb);
            outbox_conf_destroy(conf);
            return 1;
        }
        char dbname[128];
        snprintf(dbname, sizeof(dbname), "%s", PQdb(sdb));
        PQfinish(sdb);
        outbox__log(OUTBOX_LOG_INFO, "cars", "search_index",
                    "search index: PostgreSQL full-text projection (car_search) kept by the "
                    "car-search consumer",
                    "database", dbname, NULL);
    } else {
        outbox__log(OUTBOX_LOG_INFO, "cars", "search_index",
                    "search index: OpenSearch, kept by the relay's bulk sink", "url", app.os_url,
                    "index", app.os_index, NULL);
    }

    rc = 0;
    outbox_relay_t *relay = NULL;
    cars_projection_t *projection = NULL;
    outbox_http_t *http = NULL;
    if (run_relay) {
        if (!(relay = outbox_kit_relay_start(conf, "cars"))) {
            rc = 1;
            goto out;
        }
    }
    if (run_consumers && search_url[0] &&
        !(projection = cars_projection_start(conf, search_url, err, sizeof(err)))) {
        outbox__log(OUTBOX_LOG_ERROR, "cars", "consumers_failed", err, NULL);
        rc = 1;
        goto out;
    }
    if (run_api) {
        int size = (int)outbox_kit_conf_int(conf, "db_pool_size");
        app.pool = outbox__dbpool_new(url, size, "cars-service api");
        if (search_url[0])
            app.search_pool = outbox__dbpool_new(search_url, size, "cars-service search");
        if (!app.pool || (!app.search_pool && search_url[0])) {
            outbox__log(OUTBOX_LOG_ERROR, "cars", "listen_failed", "out of memory", NULL);
            rc = 1;
            goto out;
        }
        if (!(http = outbox_kit_http_start(conf, "cars", cars_routes, &app, ready))) {
            rc = 1;
            goto out;
        }
    }

    while (!g_stop)
        usleep(100 * 1000);
    outbox__log(OUTBOX_LOG_INFO, "cars", "shutting_down",
                "stop requested: draining requests, the search consumer, the relay", NULL);

out:;
    int64_t shutdown_ms = outbox_kit_conf_ms(conf, "shutdown_timeout");
    outbox__http_stop(http, shutdown_ms);
    if (cars_projection_stop(projection, shutdown_ms) != 0)
        _exit(rc); /* as the relay below: logged, and the messages come again */
    if (relay) {
        outbox_relay_stop(relay);
        if (outbox_relay_wait(relay, (int)shutdown_ms) == OUTBOX_ERR_TIMEOUT) {
            outbox__log(
                OUTBOX_LOG_WARN, "cars", "shutdown_timeout",
                "relay batches still in flight: exiting; they roll back and are published later",
                NULL);
            _exit(rc);
        }
        outbox_relay_destroy(relay);
    }
    outbox__dbpool_destroy(app.pool);
    outbox__dbpool_destroy(app.search_pool);
    outbox_conf_destroy(conf);
    outbox__log(OUTBOX_LOG_INFO, "cars", "stopped", "stopped cleanly", NULL);
    return rc;
}
