/*
 * users-service: the composition root. Reads the configuration, applies the
 * migrations, wires the adapters into the use case (HTTP -> use case ->
 * ports -> PostgreSQL/outbox, libsodium) and runs the HTTP API and the
 * outbox relay (ack_mode=mark by default: PENDING -> PROCESSED) until
 * SIGINT/SIGTERM, then stops gracefully.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "adapter/users_adapter.h"
#include "http/users_http.h"

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
            "Usage: users-service [OPTIONS]\n"
            "\n"
            "The user service: POST /users {\"email\",\"password\"} stores the user (password as\n"
            "an Argon2id hash only) and its UserCreated event in one transaction\n"
            "(Idempotency-Key supported); the outbox relay publishes the events to the broker\n"
            "(OUTBOX_SINK URL: redis://, amqp://, kafka://, nats://; default Redis at\n"
            "REDIS_ADDR) and marks each row PROCESSED.\n"
            "Every option can also be set by the environment variable shown; flags win.\n"
            "Seed-style names: SERVER_PORT (alias of PORT), DB_HOST, DB_PORT, DB_USER,\n"
            "DB_PASSWORD, DB_NAME (default here: users_db), OUTBOX_WORKER_INTERVAL (e.g. 5s).\n"
            "Defaults that differ here: OUTBOX_ACK_MODE=mark.\n"
            "\n"
            "  --version                  print the version and exit\n"
            "  --no-api                   run only the outbox relay (OUTBOX_RUN_API=false)\n"
            "  --no-relay                 run only the HTTP API (OUTBOX_RUN_RELAY=false)\n");
    outbox_kit_conf_print_help(fp, OUTBOX_KIT_SCOPE_DB | OUTBOX_KIT_SCOPE_HTTP |
                                       OUTBOX_KIT_SCOPE_RELAY | OUTBOX_KIT_SCOPE_SINK |
                                       OUTBOX_KIT_SCOPE_LOG);
    fprintf(fp, "\nEndpoints: POST /users, GET /healthz, GET /readyz, GET /metrics "
                "(docs/LEDGER.md).\n"
                "\nExample:\n"
                "  SERVER_PORT=8081 DB_NAME=users_db OUTBOX_SINK=redis://127.0.0.1:6379 "
                "users-service\n");
}

/* Seed-style environment and this service's defaults, before the
 * configuration is read: SERVER_PORT is PORT when PORT is unset; DB_NAME
 * and OUTBOX_ACK_MODE get this service's defaults. */
static void seed_env(void)
{
    const char *sp = getenv("SERVER_PORT");
    if (sp && !getenv("PORT"))
        setenv("PORT", sp, 1);
    if (!getenv("DB_NAME"))
        setenv("DB_NAME", "users_db", 1);
    if (!getenv("OUTBOX_ACK_MODE"))
        setenv("OUTBOX_ACK_MODE", "mark", 1);
}

static int ready(void *opaque, char *why, size_t why_size)
{
    users_http_app_t *app = opaque;
    return outbox__dbpool_ready(app->pool, why, why_size);
}

static PGconn *connect_db(const outbox_conf_t *conf)
{
    char err[512];
    for (int attempt = 0; attempt < 30 && !g_stop; attempt++) {
        PGconn *c = outbox_kit_db_connect(outbox_kit_conf_database_url(conf), "users-service", err,
                                          sizeof(err));
        if (c)
            return c;
        outbox__log(OUTBOX_LOG_WARN, "users", "db_wait", err, NULL);
        sleep(1);
    }
    outbox__log(OUTBOX_LOG_ERROR, "users", "db_failed", err, NULL);
    return NULL;
}

extern const outbox_migration_t users_migrations[];

static int migrate(const outbox_conf_t *conf)
{
    char err[512];
    PGconn *c = connect_db(conf);
    if (!c)
        return -1;
    outbox__log(OUTBOX_LOG_INFO, "users", "db_connected", "Connected to database successfully",
                NULL);
    int rc = 0;
    if (outbox_migrate(c, NULL, err, sizeof(err)) || outbox__idem_migrate(c, err, sizeof(err)) ||
        outbox_kit_migrate(c, "users", users_migrations, NULL, err, sizeof(err))) {
        outbox__log(OUTBOX_LOG_ERROR, "users", "migrate_failed", err, NULL);
        rc = -1;
    }
    PQfinish(c);
    return rc;
}

/* Purges expired idempotency keys now and then. */

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--version")) {
            printf("users-service %s\n", OUTBOX_VERSION_STR);
            return 0;
        }
    seed_env();
    int rc;
    outbox_conf_t *conf = outbox_kit_conf_load("users-service", argc, argv, usage, NULL, &rc);
    if (!conf)
        return rc;
    int run_api = outbox_kit_conf_bool(conf, "api"),
        run_relay = outbox_kit_conf_bool(conf, "relay");
    outbox_kit_conf_log(conf, "users",
                        OUTBOX_KIT_SCOPE_DB | OUTBOX_KIT_SCOPE_HTTP | OUTBOX_KIT_SCOPE_RELAY);
    if (!run_api && !run_relay) {
        fprintf(stderr, "users-service: --no-api and --no-relay together leave nothing to run\n");
        outbox_conf_destroy(conf);
        return 2;
    }
    outbox_kit_on_stop_signals(on_signal);
    if (migrate(conf) != 0) {
        outbox_conf_destroy(conf);
        return 1;
    }

    rc = 0;
    outbox_relay_t *relay = NULL;
    outbox_http_t *http = NULL;
    users_sodium_t *sodium = NULL;
    users_pg_t pg = {0};
    users_deps_t deps;
    users_http_app_t app = {.deps = &deps,
                            .idem_retention_ms = outbox_kit_conf_ms(conf, "idempotency_retention"),
                            .idem_required =
                                outbox_kit_conf_bool(conf, "idempotency_key_required")};
    if (run_relay) {
        if (!(relay = outbox_kit_relay_start(conf, "users"))) {
            rc = 1;
            goto out;
        }
        outbox__log(OUTBOX_LOG_INFO, "users", "worker_started", "Outbox worker started", "interval",
                    outbox_conf_get(conf, "poll_interval"), "ack_mode",
                    outbox_conf_get(conf, "ack_mode"), NULL);
    }
    if (run_api) {
        pg.pool =
            outbox__dbpool_new(outbox_kit_conf_database_url(conf),
                               (int)outbox_kit_conf_int(conf, "db_pool_size"), "users-service api");
        sodium = users_sodium_new(2);
        if (!pg.pool || !sodium) {
            outbox__log(OUTBOX_LOG_ERROR, "users", "start_failed",
                        "out of memory (or libsodium failed to start)", NULL);
            rc = 1;
            goto out;
        }
        app.pool = pg.pool;
        deps.repo = users_pg_repo(&pg);
        deps.hasher = users_sodium_hasher(sodium);
        if (!(http = outbox_kit_http_start(conf, "users", users_routes, &app, ready))) {
            rc = 1;
            goto out;
        }
    }

    int64_t next_purge = 0;
    while (!g_stop) {
        if (pg.pool)
            outbox_kit_idem_purge_due(pg.pool, app.idem_retention_ms, &next_purge, "users");
        usleep(100 * 1000);
    }
    outbox__log(OUTBOX_LOG_INFO, "users", "shutting_down",
                "stop requested: draining requests, then the outbox worker", NULL);

out:;
    int64_t shutdown_ms = outbox_kit_conf_ms(conf, "shutdown_timeout");
    outbox__http_stop(http, shutdown_ms);
    if (relay) {
        outbox_relay_stop(relay);
        if (outbox_relay_wait(relay, (int)shutdown_ms) == OUTBOX_ERR_TIMEOUT) {
            outbox__log(OUTBOX_LOG_WARN, "users", "shutdown_timeout",
                        "relay batches still in flight: exiting; they roll back and are "
                        "published later",
                        NULL);
            _exit(rc);
        }
        outbox_relay_destroy(relay);
    }
    outbox__dbpool_destroy(pg.pool);
    users_sodium_destroy(sodium);
    outbox_conf_destroy(conf);
    outbox__log(OUTBOX_LOG_INFO, "users", "stopped", "stopped cleanly", NULL);
    return rc;
}
