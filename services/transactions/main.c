/*
 * transactions-service: the composition root. Reads the configuration,
 * applies the migrations, wires the adapters into the use cases and runs, in
 * one process or split with --no-api / --no-relay / --no-consumers:
 *   - the HTTP API (http/ -> usecase/ -> port/ -> adapter/tx_pg.c);
 *   - the outbox relay (ack_mode=mark by default: PENDING -> PROCESSED);
 *   - the consumers (adapter/tx_consumers.c): accounts from UserCreated and
 *     the transaction processor.
 * SIGINT/SIGTERM stop it gracefully.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "adapter/tx_adapter.h"
#include "http/tx_http.h"

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    if (g_stop++)
        _exit(1); /* second signal: leave now; open transactions roll back */
}

static void usage(FILE *fp)
{
    fprintf(fp, "Usage: transactions-service [OPTIONS]\n"
                "\n"
                "The money transaction service: POST /api/v1/transactions stores a PENDING\n"
                "transaction and its TransactionCreated event in one transaction; the processor\n"
                "applies each exactly once (double-entry ledger rows, both balances, its inbox\n"
                "record and a TransactionCompleted/TransactionFailed event in one transaction).\n"
                "Accounts are opened from users-service's UserCreated events. A transaction\n"
                "without fromUserId is a deposit, without toUserId a withdrawal.\n"
                "Every option can also be set by the environment variable shown; flags win.\n"
                "Seed-style names: SERVER_PORT (alias of PORT), DB_HOST, DB_PORT, DB_USER,\n"
                "DB_PASSWORD, DB_NAME (default here: transaction_db), OUTBOX_WORKER_INTERVAL.\n"
                "Defaults that differ here: OUTBOX_ACK_MODE=mark.\n"
                "\n"
                "  --version                  print the version and exit\n");
    outbox_kit_conf_print_help(fp, OUTBOX_KIT_SCOPE_DB | OUTBOX_KIT_SCOPE_HTTP |
                                       OUTBOX_KIT_SCOPE_SERVICE | OUTBOX_KIT_SCOPE_RELAY |
                                       OUTBOX_KIT_SCOPE_SINK | OUTBOX_KIT_SCOPE_LOG);
    fprintf(fp, "\nEndpoints: POST /api/v1/transactions, GET /api/v1/transactions/{id},\n"
                "GET /api/v1/balance/{userId}, GET /healthz, GET /readyz, GET /metrics "
                "(docs/LEDGER.md).\n"
                "\nExample:\n"
                "  SERVER_PORT=8082 DB_NAME=transaction_db OUTBOX_SINK=redis://127.0.0.1:6379 "
                "transactions-service\n");
}

static void seed_env(void)
{
    const char *sp = getenv("SERVER_PORT");
    if (sp && !getenv("PORT"))
        setenv("PORT", sp, 1);
    if (!getenv("DB_NAME"))
        setenv("DB_NAME", "transaction_db", 1);
    if (!getenv("OUTBOX_ACK_MODE"))
        setenv("OUTBOX_ACK_MODE", "mark", 1);
}

static int ready(void *opaque, char *why, size_t why_size)
{
    tx_http_app_t *app = opaque;
    return outbox__dbpool_ready(app->pool, why, why_size);
}

extern const outbox_migration_t transactions_migrations[];

static int migrate(const outbox_conf_t *conf)
{
    char err[512];
    PGconn *c = NULL;
    for (int attempt = 0; attempt < 30 && !g_stop && !c; attempt++) {
        c = outbox_kit_db_connect(outbox_kit_conf_database_url(conf), "transactions-service", err,
                                  sizeof(err));
        if (!c) {
            outbox__log(OUTBOX_LOG_WARN, "transactions", "db_wait", err, NULL);
            sleep(1);
        }
    }
    if (!c) {
        outbox__log(OUTBOX_LOG_ERROR, "transactions", "db_failed", err, NULL);
        return -1;
    }
    outbox__log(OUTBOX_LOG_INFO, "transactions", "db_connected",
                "Connected to database successfully", NULL);
    int rc = 0;
    if (outbox_migrate(c, NULL, err, sizeof(err)) || outbox__idem_migrate(c, err, sizeof(err)) ||
        outbox_kit_migrate(c, "transactions", transactions_migrations, NULL, err, sizeof(err))) {
        outbox__log(OUTBOX_LOG_ERROR, "transactions", "migrate_failed", err, NULL);
        rc = -1;
    }
    PQfinish(c);
    return rc;
}

int main(int argc, char **argv)
{
    char err[1024];
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--version")) {
            printf("transactions-service %s\n", OUTBOX_VERSION_STR);
            return 0;
        }
    seed_env();
    int rc;
    outbox_conf_t *conf =
        outbox_kit_conf_load("transactions-service", argc, argv, usage, NULL, &rc);
    if (!conf)
        return rc;
    int run_api = outbox_kit_conf_bool(conf, "api"),
        run_relay = outbox_kit_conf_bool(conf, "relay"),
        run_consumers = outbox_kit_conf_bool(conf, "consumers");
    outbox_kit_conf_log(conf, "transactions",
                        OUTBOX_KIT_SCOPE_DB | OUTBOX_KIT_SCOPE_HTTP | OUTBOX_KIT_SCOPE_SERVICE |
                            OUTBOX_KIT_SCOPE_RELAY);
    if (!run_api && !run_relay && !run_consumers) {
        fprintf(stderr, "transactions-service: --no-api, --no-relay and --no-consumers together "
                        "leave nothing to run\n");
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
    tx_consumers_t *consumers = NULL;
    outbox_http_t *http = NULL;
    tx_pg_t pg = {0};
    tx_http_app_t app = {.idem_retention_ms = outbox_kit_conf_ms(conf, "idempotency_retention"),
                         .idem_required = outbox_kit_conf_bool(conf, "idempotency_key_required")};
    if (run_relay) {
        if (!(relay = outbox_kit_relay_start(conf, "transactions"))) {
            rc = 1;
            goto out;
        }
        outbox__log(OUTBOX_LOG_INFO, "transactions", "worker_started", "Outbox worker started",
                    "interval", outbox_conf_get(conf, "poll_interval"), "ack_mode",
                    outbox_conf_get(conf, "ack_mode"), NULL);
    }
    if (run_consumers && !(consumers = tx_consumers_start(conf, err, sizeof(err)))) {
        outbox__log(OUTBOX_LOG_ERROR, "transactions", "consumers_failed", err, NULL);
        rc = 1;
        goto out;
    }
    if (run_api) {
        pg.pool = outbox__dbpool_new(outbox_kit_conf_database_url(conf),
                                     (int)outbox_kit_conf_int(conf, "db_pool_size"),
                                     "transactions-service api");
        app.pool = pg.pool;
        app.store = tx_pg_store(&pg);
        if (!pg.pool) {
            outbox__log(OUTBOX_LOG_ERROR, "transactions", "listen_failed", "out of memory", NULL);
            rc = 1;
            goto out;
        }
        if (!(http = outbox_kit_http_start(conf, "transactions", tx_routes, &app, ready))) {
            rc = 1;
            goto out;
        }
    }

    int64_t next_purge = 0;
    while (!g_stop) {
        if (pg.pool)
            outbox_kit_idem_purge_due(pg.pool, app.idem_retention_ms, &next_purge, "transactions");
        usleep(100 * 1000);
    }
    outbox__log(OUTBOX_LOG_INFO, "transactions", "shutting_down",
                "stop requested: draining requests, consumers, then the outbox worker", NULL);

out:;
    int64_t shutdown_ms = outbox_kit_conf_ms(conf, "shutdown_timeout");
    outbox__http_stop(http, shutdown_ms);
    if (tx_consumers_stop(consumers, shutdown_ms) != 0)
        _exit(rc); /* as the relay below: logged, and the messages come again */
    if (relay) {
        outbox_relay_stop(relay);
        if (outbox_relay_wait(relay, (int)shutdown_ms) == OUTBOX_ERR_TIMEOUT) {
            outbox__log(OUTBOX_LOG_WARN, "transactions", "shutdown_timeout",
                        "relay batches still in flight: exiting; they roll back and are "
                        "published later",
                        NULL);
            _exit(rc);
        }
        outbox_relay_destroy(relay);
    }
    outbox__dbpool_destroy(pg.pool);
    outbox_conf_destroy(conf);
    outbox__log(OUTBOX_LOG_INFO, "transactions", "stopped", "stopped cleanly", NULL);
    return rc;
}
