/* pizza-consumer: the pizza pipeline's consumer (seed 004, "Consumer API").
 *
 * Seed: "subscribes to the pizza-orders topic in Redis ... The consumer will
 * print every pizza order event it receives from Redis in real time."
 *
 * Reads the Redis stream pizza-orders as consumer group pizza-consumer and
 * logs each order ONCE: in one transaction it records the event id in the
 * inbox (outbox_inbox_record) and the order in pizza_received; only when
 * that commits does it print the order's lines on stdout. A copy of an
 * event it already logged (pizza-job re-publishes after a crash) is logged
 * as "SKIPPING duplicate message <id>" and acknowledged. Handler contract:
 * OUTBOX_OK done, OUTBOX_ERR_REJECTED poison (never succeeds), OUTBOX_ERR_DB
 * own database unreachable (retry, no attempt charged). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "outbox/consumer.h"
#include "pizza.h"

static volatile sig_atomic_t g_stop;
static _Atomic int g_stop_int; /* for outbox_kit_sleep_ms (lock-free: signal-safe) */

static void on_signal(int sig)
{
    (void)sig;
    g_stop_int = 1;
    if (g_stop++)
        _exit(1);
}

typedef struct cons_s {
    const outbox_conf_t *conf;
    PGconn *conn;
    char instance[160];
} cons_t;

static void usage(FILE *fp)
{
    fprintf(fp, "Usage: pizza-consumer [OPTIONS]\n"
                "\n"
                "The pizza pipeline's consumer (seed 004): reads the Redis stream pizza-orders\n"
                "(consumer group pizza-consumer) and prints each pizza order once, even when\n"
                "pizza-job publishes an event again after a crash (the inbox drops the copy:\n"
                "\"SKIPPING duplicate message <id>\"). Several instances share the work.\n"
                "Every option can also be set by the environment variable shown; flags win.\n"
                "\n");
    outbox_kit_conf_print_help(fp, OUTBOX_KIT_SCOPE_DB | OUTBOX_KIT_SCOPE_SERVICE |
                                       OUTBOX_KIT_SCOPE_LOG);
    fprintf(fp, "\nExample:\n"
                "  DATABASE_URL=postgres://app@127.0.0.1/app REDIS_ADDR=127.0.0.1:6379 "
                "pizza-consumer\n");
}

/* (Re)connects; 0 when usable. */
static int session(cons_t *cs)
{
    if (cs->conn && PQstatus(cs->conn) == CONNECTION_OK)
        return 0;
    PQfinish(cs->conn);
    char err[512];
    cs->conn = outbox_kit_db_connect(outbox_kit_conf_database_url(cs->conf), cs->instance, err,
                                     sizeof(err));
    if (!cs->conn)
        outbox__log(OUTBOX_LOG_ERROR, "pizza-consumer", "db_down", err, NULL);
    return cs->conn ? 0 : -1;
}

static outbox_err_t db_fail(cons_t *cs, const char *what, const char *err, const char *id)
{
    outbox__log(OUTBOX_LOG_ERROR, "pizza-consumer", "db_error", err, "what", what, "message_id", id,
                NULL);
    PQclear(PQexec(cs->conn, "ROLLBACK"));
    return OUTBOX_ERR_DB;
}

static const char *str(json_t *o, const char *name)
{
    const char *s = json_string_value(json_object_get(o, name));
    return s ? s : "?";
}

static outbox_err_t on_order(const outbox_delivery_t *d, void *opaque)
{
    cons_t *cs = opaque;
    json_t *data = json_loads(d->env.data ? d->env.data : "", 0, NULL);
    const char *order = json_string_value(json_object_get(data, "order_id"));
    if (!json_is_object(data) || !outbox_uuid_valid(order)) {
        outbox__log(OUTBOX_LOG_ERROR, "pizza-consumer", "bad_message",
                    "event data is not a pizza order (no order_id): rejected", "message_id",
                    d->env.id, "type", d->env.type, NULL);
        json_decref(data);
        return OUTBOX_ERR_REJECTED;
    }
    if (session(cs) != 0) {
        json_decref(data);
        return OUTBOX_ERR_DB;
    }
    char err[512];
    int is_new = 0;
    outbox_err_t rc = OUTBOX_OK;
    if (outbox_kit_db_exec(cs->conn, "BEGIN", err, sizeof(err)) ||
        outbox_inbox_record(cs->conn, PIZZA_CONSUMER, d->env.id, &is_new, err, sizeof(err))) {
        rc = db_fail(cs, "inbox", err, d->env.id);
        goto out;
    }
    if (!is_new) {
        PQclear(PQexec(cs->conn, "ROLLBACK"));
        char msg[96];
        snprintf(msg, sizeof(msg), "SKIPPING duplicate message %s", d->env.id);
        outbox__log(OUTBOX_LOG_INFO, "pizza-consumer", "duplicate", msg, "message_id", d->env.id,
                    "order_id", order, NULL);
        goto out;
    }
    const char *p[2] = {d->env.id, order};
    PGresult *r = PQexecParams(cs->conn,
                               "INSERT INTO pizza_received (event_id, order_id)"
                               " VALUES ($1::uuid, $2::uuid)",
                               2, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        snprintf(err, sizeof(err), "%s", PQresultErrorMessage(r));
        err[strcspn(err, "\n")] = '\0';
        PQclear(r);
        rc = db_fail(cs, "recording the order", err, d->env.id);
        goto out;
    }
    PQclear(r);
    switch (outbox_kit_db_commit(cs->conn, err, sizeof(err))) {
    case OUTBOX_KIT_COMMITTED:
        break;
    case OUTBOX_KIT_ROLLED_BACK:
    case OUTBOX_KIT_COMMIT_UNKNOWN: /* redelivered: the inbox tells if it landed */
        outbox__log(OUTBOX_LOG_ERROR, "pizza-consumer", "db_error", err, "what", "commit",
                    "message_id", d->env.id, NULL);
        rc = OUTBOX_ERR_DB;
        goto out;
    }
    /* Printed after the commit: a copy never prints twice. */
    json_t *price = json_object_get(data, "price");
    char pr[32] = "?";
    if (json_is_number(price))
        snprintf(pr, sizeof(pr), "%.2f", json_number_value(price));
    json_t *q = json_object_get(data, "quantity");
    flockfile(stdout);
    printf("[PIZZA] Received order %s\n", order);
    printf("[PIZZA] -> %lld x %s %s for %s\n",
           json_is_integer(q) ? (long long)json_integer_value(q) : 0LL, str(data, "size"),
           str(data, "flavor"), str(data, "user_name"));
    printf("[PIZZA] -> Address: %s, price: %s\n", str(data, "address"), pr);
    printf("[PIZZA] \xE2\x9C\x93 Order %s delivered and logged\n", order);
    fflush(stdout);
    funlockfile(stdout);
    outbox__log(OUTBOX_LOG_INFO, "pizza-consumer", "order_logged", "pizza order logged", "order_id",
                order, "message_id", d->env.id, NULL);
out:
    json_decref(data);
    return rc;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--version")) {
            printf("pizza-consumer %s\n", OUTBOX_VERSION_STR);
            return 0;
        }
    int rc;
    setenv("OUTBOX_TABLE", PIZZA_TABLE, 0); /* the pipeline's table (logged in the config line) */
    outbox_conf_t *conf = outbox_kit_conf_load("pizza-consumer", argc, argv, usage, NULL, &rc);
    if (!conf)
        return rc;
    outbox_kit_conf_log(conf, "pizza-consumer", OUTBOX_KIT_SCOPE_DB | OUTBOX_KIT_SCOPE_SERVICE);
    outbox_kit_on_stop_signals(on_signal);
    PGconn *db = pizza_connect(conf, "pizza-consumer", "pizza-consumer", &g_stop);
    if (!db || pizza_migrate(db, "pizza-consumer") != 0) {
        PQfinish(db);
        outbox_conf_destroy(conf);
        return 1;
    }
    PQfinish(db);
    outbox__log(OUTBOX_LOG_INFO, "pizza-consumer", "db_connected",
                "Connected to database successfully", NULL);

    char url[1024], err[512], host[128] = "host";
    const char *src = outbox_kit_conf_str(conf, "consumer_source");
    if (src[0])
        snprintf(url, sizeof(url), "%s", src);
    else
        snprintf(url, sizeof(url), "redis://%s", outbox_kit_conf_str(conf, "redis_addr"));
    gethostname(host, sizeof(host) - 1);
    cons_t cs = {.conf = conf};
    snprintf(cs.instance, sizeof(cs.instance), "pizza-consumer-%s-%d", host, (int)getpid());
    const char *topics[1] = {PIZZA_TOPIC};
    outbox_consumer_t *c =
        outbox_consumer_new(url, PIZZA_CONSUMER, cs.instance, topics, 1, conf, err, sizeof(err));
    if (!c) {
        outbox__log(OUTBOX_LOG_ERROR, "pizza-consumer", "consumer_failed", err, NULL);
        outbox_conf_destroy(conf);
        return 1;
    }
    outbox__log(OUTBOX_LOG_INFO, "pizza-consumer", "started",
                "Consumer started: listening on pizza-orders", "group", PIZZA_CONSUMER, "instance",
                cs.instance, NULL);
    int broker_down = 0;
    while (!g_stop) {
        if (session(&cs) != 0) {
            outbox_kit_sleep_ms(1000, &g_stop_int);
            continue;
        }
        outbox_err_t e = outbox_consumer_poll(c, 500, on_order, &cs);
        if (e == OUTBOX_ERR_BROKER) {
            if (!broker_down++)
                outbox__log(OUTBOX_LOG_WARN, "pizza-consumer", "broker_down",
                            outbox_consumer_errstr(c), NULL);
            outbox_kit_sleep_ms(500, &g_stop_int);
        } else if (broker_down) {
            broker_down = 0;
            outbox__log(OUTBOX_LOG_INFO, "pizza-consumer", "broker_up", "Redis reachable again",
                        NULL);
        }
    }
    outbox__log(OUTBOX_LOG_INFO, "pizza-consumer", "shutting_down", "stop requested", NULL);
    outbox_consumer_destroy(c);
    PQfinish(cs.conn);
    outbox_conf_destroy(conf);
    outbox__log(OUTBOX_LOG_INFO, "pizza-consumer", "stopped", "stopped cleanly", NULL);
    return 0;
}
