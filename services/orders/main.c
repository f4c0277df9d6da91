/* orders-service: the order system in one process, like the seeds —
 * the HTTP API, the relay worker pool and the inventory/email consumers.
 * --no-api, --no-relay and --no-consumers leave a part to another process. */
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "orders.h"

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    if (g_stop++)
        _exit(1); /* second signal: leave now; open transactions roll back */
}

static void usage(FILE *fp)
{
    fprintf(fp, "Usage: orders-service [OPTIONS]\n"
                "\n"
                "The order system: POST /orders writes the order and its OrderCreated event in\n"
                "one transaction (Idempotency-Key supported); the relay publishes the events to\n"
                "Redis; the inventory consumer deducts stock and confirms or rejects the order;\n"
                "the email consumer prints the confirmation email. Each exactly once per order.\n"
                "Every option can also be set by the environment variable shown; flags win.\n"
                "This service's own defaults differ from those shown for two relay options,\n"
                "--workers 5 (worker-1..worker-5) and --poll-min-interval 10ms, and for\n"
                "--consumer-batch 500.\n"
                "\n"
                "  --version                  print the version and exit\n");
    outbox_kit_conf_print_help(fp, OUTBOX_KIT_SCOPE_DB | OUTBOX_KIT_SCOPE_HTTP |
                                       OUTBOX_KIT_SCOPE_SERVICE | OUTBOX_KIT_SCOPE_RELAY |
                                       OUTBOX_KIT_SCOPE_SINK | OUTBOX_KIT_SCOPE_LOG);
    fprintf(
        fp,
        "\nEndpoints: POST /orders, GET /orders/{id}, GET /inventory, GET /healthz, GET /readyz,\n"
        "GET /metrics (see docs/ORDERS.md).\n"
        "\nExample:\n"
        "  DATABASE_URL=postgres://app@127.0.0.1/app REDIS_ADDR=127.0.0.1:6379 PORT=8080 "
        "orders-service\n");
}

static PGconn *connect_db(const outbox_conf_t *conf)
{
    char err[512];
    for (int attempt = 0; attempt < 30 && !g_stop; attempt++) {
        PGconn *c = outbox_kit_db_connect(outbox_kit_conf_database_url(conf), "orders-service", err,
                                          sizeof(err));
        if (c)
            return c;
        outbox__log(OUTBOX_LOG_WARN, "orders", "db_wait", err, NULL);
        sleep(1);
    }
    outbox__log(OUTBOX_LOG_ERROR, "orders", "db_failed", err, NULL);
    return NULL;
}

static int migrate(PGconn *c)
{
    char err[512];
    if (outbox_migrate(c, NULL, err, sizeof(err)) || outbox__idem_migrate(c, err, sizeof(err)) ||
        outbox_kit_migrate(c, "orders", orders_migrations, NULL, err, sizeof(err))) {
        outbox__log(OUTBOX_LOG_ERROR, "orders", "migrate_failed", err, NULL);
        return -1;
    }
    return 0;
}

/* A PING so the operator sees Redis is there; the relay and consumers
 * connect (and reconnect) on their own. */
static void check_redis(const outbox_conf_t *conf)
{
    const char *addr = outbox_kit_conf_str(conf, "redis_addr");
    char err[256];
    redisContext *rc = outbox_kit_redis_connect(conf, 3000, err, sizeof(err));
    redisReply *rep = rc ? redisCommand(rc, "PING") : NULL;
    if (rep && rep->type != REDIS_REPLY_ERROR)
        outbox__log(OUTBOX_LOG_INFO, "orders", "redis_connected", "Connected to Redis successfully",
                    "addr", addr, NULL);
    else
        outbox__log(OUTBOX_LOG_WARN, "orders", "redis_unreachable",
                    "Redis is not reachable yet: the relay and consumers keep retrying", "addr",
                    addr, "error", rc ? (rep ? rep->str : rc->errstr) : err, NULL);
    if (rep)
        freeReplyObject(rep);
    if (rc)
        redisFree(rc);
}

/* GET /readyz: the database answers. */
static int ready(void *opaque, char *why, size_t why_size)
{
    orders_app_t *app = opaque;
    return outbox__dbpool_ready(app->pool, why, why_size);
}

int main(int argc, char **argv)
{
    char err[1024];
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--version")) {
            printf("orders-service %s\n", OUTBOX_VERSION_STR);
            return 0;
        }
    int rc;
    outbox_conf_t *conf = outbox_kit_conf_load("orders-service", argc, argv, usage, NULL, &rc);
    if (!conf)
        return rc;
    /* Seed 000: five workers, [Worker-1] to [Worker-5], share the outbox
     * (the library's default is 2). OUTBOX_WORKERS still decides. */
    outbox_kit_conf_default(conf, "workers", "5");
    /* The watcher looks every 10 ms while orders keep coming, not every 1 ms
     * (the library's default, for millisecond delivery): five workers each
     * claiming a few events per millisecond cost the API's own database
     * writes a quarter of their rate at 32 connections (POST /orders
     * 1,486 -> 1,865 orders/s, docs/BENCHMARKS.md), for about 10 ms more
     * between an order and its inventory check. OUTBOX_POLL_MIN_INTERVAL
     * still decides. */
    outbox_kit_conf_default(conf, "poll_min_interval", "10ms");
    /* A consumer batch takes up to 500 messages (the library's default is
     * 100): a set-based batch costs two round trips whatever its size, and
     * under a write load each round trip waits for a CPU, so a batch capped
     * at 100 applied at most 100 orders a cycle and the inventory backlog
     * grew while the API took 2,200 orders/s (docs/ORDERS.md). Batches stay
     * as small as what has arrived. OUTBOX_CONSUMER_BATCH still decides. */
    outbox_kit_conf_default(conf, "consumer_batch", "500");
    int run_api = outbox_kit_conf_bool(conf, "api"),
        run_relay = outbox_kit_conf_bool(conf, "relay"),
        run_consumers = outbox_kit_conf_bool(conf, "consumers");
    outbox_kit_conf_log(conf, "orders",
                        OUTBOX_KIT_SCOPE_DB | OUTBOX_KIT_SCOPE_HTTP | OUTBOX_KIT_SCOPE_SERVICE |
                            (run_relay ? OUTBOX_KIT_SCOPE_RELAY : 0u));
    if (!run_api && !run_relay && !run_consumers) {
        fprintf(stderr, "orders-service: --no-api, --no-relay and --no-consumers together leave "
                        "nothing to run\n");
        outbox_conf_destroy(conf);
        return 2;
    }

    outbox_kit_on_stop_signals(on_signal);

    PGconn *db = connect_db(conf);
    if (!db) {
        outbox_conf_destroy(conf);
        return 1;
    }
    outbox__log(OUTBOX_LOG_INFO, "orders", "db_connected", "Connected to database successfully",
                NULL);
    if (migrate(db) != 0) {
        PQfinish(db);
        outbox_conf_destroy(conf);
        return 1;
    }
    PQfinish(db);
    if (run_relay || run_consumers)
        check_redis(conf);

    rc = 0;
    outbox_relay_t *relay = NULL;
    orders_consumers_t *consumers = NULL;
    outbox_http_t *http = NULL;
    orders_app_t app = {.conf = conf,
                        .idem_retention_ms = outbox_kit_conf_ms(conf, "idempotency_retention"),
                        .idem_required = outbox_kit_conf_bool(conf, "idempotency_key_required"),
                        .order_batch = (int)outbox_kit_conf_int(conf, "order_batch")};
    /* An eighth of the pool's sessions write batches at once (4 of 32): a
     * batch waits for its COMMIT's WAL flush while the next ones fill.
     * Measured at 32 connections: 4 slots 5,718 orders/s, 8 slots 4,166
     * (smaller batches). */
    app.batch_slots = (int)outbox_kit_conf_int(conf, "db_pool_size") / 8;
    if (app.batch_slots < 1)
        app.batch_slots = 1;
    if (run_relay) {
        if (!(relay = outbox_kit_relay_start(conf, "orders"))) {
            rc = 1;
            goto out;
        }
    }
    if (run_consumers && !(consumers = orders_consumers_start(conf, err, sizeof(err)))) {
        outbox__log(OUTBOX_LOG_ERROR, "orders", "consumers_failed", err, NULL);
        rc = 1;
        goto out;
    }
    if (run_api) {
        app.pool = outbox__dbpool_new(outbox_kit_conf_database_url(conf),
                                      (int)outbox_kit_conf_int(conf, "db_pool_size"),
                                      "orders-service api");
        if (!app.pool) {
            outbox__log(OUTBOX_LOG_ERROR, "orders", "listen_failed", "out of memory", NULL);
            rc = 1;
            goto out;
        }
        if (!(http = outbox_kit_http_start(conf, "orders", orders_routes, &app, ready))) {
            rc = 1;
            goto out;
        }
    }

    int64_t next_purge = 0;
    while (!g_stop) {
        if (app.pool)
            outbox_kit_idem_purge_due(app.pool, app.idem_retention_ms, &next_purge, "orders");
        usleep(100 * 1000);
    }
    outbox__log(OUTBOX_LOG_INFO, "orders", "shutting_down",
                "stop requested: draining requests, consumers, relay", NULL);

out:;
    int64_t shutdown_ms = outbox_kit_conf_ms(conf, "shutdown_timeout");
    outbox__http_stop(http, shutdown_ms);
    if (orders_consumers_stop(consumers, shutdown_ms) != 0)
        _exit(rc); /* as the relay below: logged, and the messages come again */
    if (relay) {
        outbox_relay_stop(relay);
        if (outbox_relay_wait(relay, (int)shutdown_ms) == OUTBOX_ERR_TIMEOUT) {
            outbox__log(
                OUTBOX_LOG_WARN, "orders", "shutdown_timeout",
                "relay batches still in flight: exiting; they roll back and are published later",
                NULL);
            _exit(rc);
        }
        outbox_relay_destroy(relay);
    }
    outbox__dbpool_destroy(app.pool);
    outbox_conf_destroy(conf);
    outbox__log(OUTBOX_LOG_INFO, "orders", "stopped", "stopped cleanly", NULL);
    return rc;
}
