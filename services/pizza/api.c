/* pizza-api: the pizza pipeline's producer API (seed 004, "Producer API").
 *
 *   POST /pizza      {"flavor","size","quantity","price","address","user_name"}
 *                    -> the order in pizza_orders and its PizzaOrderPlaced
 *                    event in pizza_order_outbox, in ONE transaction: 201.
 *   GET /pizza/{id}  the order and where it is (pending, paid, delivered,
 *                    completed), with its attempts and last error.
 *
 * Bad input gets 400 application/problem+json saying which field and why.
 * See docs/PIZZA.md. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "pizza.h"

#define EXAMPLE PIZZA_EXAMPLE

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    if (g_stop++)
        _exit(1); /* second signal: leave now; open transactions roll back */
}

typedef struct app_s {
    outbox_dbpool_t *pool;
    const char *table; /* outbox_table: pizza_order_outbox unless configured */
} app_t;

static void usage(FILE *fp)
{
    fprintf(fp, "Usage: pizza-api [OPTIONS]\n"
                "\n"
                "The pizza pipeline's API (seed 004). POST /pizza writes the order to\n"
                "pizza_orders and its PizzaOrderPlaced event to pizza_order_outbox in one\n"
                "transaction; pizza-job then pays, delivers and publishes it. GET /pizza/{id}\n"
                "shows the order's status. Every option can also be set by the environment\n"
                "variable shown; flags win.\n"
                "\n");
    outbox_kit_conf_print_help(fp,
                               OUTBOX_KIT_SCOPE_DB | OUTBOX_KIT_SCOPE_HTTP | OUTBOX_KIT_SCOPE_LOG);
    fprintf(fp,
            "\nExample:\n"
            "  DATABASE_URL=postgres://app@127.0.0.1/app PORT=8080 pizza-api\n"
            "  curl -X POST http://localhost:8080/pizza -H 'Content-Type: application/json' \\\n"
            "    -d '" EXAMPLE "'\n");
}

/* Checks the body; on success fills the text parameters of the INSERT. */
static int validate(const outbox_http_req_t *req, outbox_http_resp_t *resp, const char *p[7],
                    pizza_order_t *o)
{
    char why[512];
    if (pizza_order_check(req->json, o, why, sizeof(why))) {
        outbox__http_problem(req, resp, 400, "validation-error", NULL, "%s", why);
        return -1;
    }
    p[1] = o->flavor;
    p[2] = o->size;
    p[3] = o->quantity;
    p[4] = o->price;
    p[5] = o->address;
    p[6] = o->user_name;
    return 0;
}

static void db_problem(const outbox_http_req_t *req, outbox_http_resp_t *resp, PGconn *c,
                       const char *what, const char *err)
{
    outbox__log(OUTBOX_LOG_ERROR, "pizza-api", "db_error", err, "what", what, "path", req->path,
                NULL);
    int down = !c || PQstatus(c) != CONNECTION_OK;
    outbox__http_problem(req, resp, down ? 503 : 500, down ? "database-unavailable" : "internal",
                         NULL, "%s failed: the database %s; nothing was written, retry later", what,
                         down ? "is unreachable" : "returned an error (see the server log)");
}

/* The order's row, as the event's data and the answer's body. */
#define ORDER_JSON                                                                                 \
    "row_to_json((SELECT r FROM (SELECT id AS order_id, flavor, size, quantity, price, address,"   \
    " user_name, status, to_char(created_at AT TIME ZONE 'UTC',"                                   \
    " 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS created_at) r))"

static void create_pizza(outbox_http_req_t *req, outbox_http_resp_t *resp, void *opaque)
{
    app_t *app = opaque;
    const char *p[7];
    pizza_order_t order;
    char id[OUTBOX_UUID_STRLEN + 1], err[512];
    if (validate(req, resp, p, &order) != 0)
        return;
    outbox_uuid_v7(id);
    p[0] = id;
    PGconn *c = outbox__dbpool_get(app->pool, 5000, err, sizeof(err));
    if (!c) {
        db_problem(req, resp, NULL, "placing the order", err);
        return;
    }
    char *payload = NULL;
    if (outbox_kit_db_exec(c, "BEGIN", err, sizeof(err)))
        goto dberr;
    PGresult *r = PQexecParams(c,
                               "INSERT INTO pizza_orders (id, flavor, size, quantity, price, "
                               "address, user_name) VALUES ($1::uuid, $2, $3, $4::int, "
                               "$5::numeric, $6, $7) RETURNING " ORDER_JSON "::text",
                               7, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        snprintf(err, sizeof(err), "%s", PQresultErrorMessage(r));
        err[strcspn(err, "\n")] = '\0';
        PQclear(r);
        goto dberr;
    }
    payload = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    if (!payload) {
        snprintf(err, sizeof(err), "out of memory");
        goto dberr;
    }
    outbox_event_t ev = {.topic = PIZZA_TOPIC,
                         .type = PIZZA_EVENT_TYPE,
                         .key = id,
                         .payload = payload,
                         .source = PIZZA_SOURCE,
                         .table = app->table};
    char event_id[OUTBOX_UUID_STRLEN + 1];
    if (outbox_enqueue(c, &ev, event_id, err, sizeof(err)))
        goto dberr;
    switch (outbox_kit_db_commit(c, err, sizeof(err))) {
    case OUTBOX_KIT_COMMITTED:
        break;
    case OUTBOX_KIT_ROLLED_BACK:
        goto dberr;
    case OUTBOX_KIT_COMMIT_UNKNOWN:
        outbox__log(OUTBOX_LOG_ERROR, "pizza-api", "commit_outcome_unknown",
                    "connection lost during COMMIT: the order may or may not exist", "order_id", id,
                    "error", err, NULL);
        outbox__http_problem(req, resp, 503, "commit-outcome-unknown", "Commit Outcome Unknown",
                             "the connection to the database broke while order %s was being "
                             "committed; GET /pizza/%s tells whether it was placed (404: not)",
                             id, id);
        outbox__http_problem_member(resp, "order_id", id);
        goto done;
    }
    /* The answer: the order as stored (price as PostgreSQL wrote it, not
     * re-encoded through a double), plus its event id. */
    size_t pl = strlen(payload);
    char *body = malloc(pl + 64);
    if (body && pl > 1 && payload[pl - 1] == '}') {
        int n =
            snprintf(body, pl + 64, "%.*s,\"event_id\":\"%s\"}", (int)(pl - 1), payload, event_id);
        outbox__http_reply_raw(resp, 201, "application/json", body, (size_t)n);
    } else {
        outbox__http_reply_raw(resp, 201, "application/json", payload, pl);
    }
    free(body);
    char loc[64];
    snprintf(loc, sizeof(loc), "/pizza/%s", id);
    outbox__http_add_header(resp, "Location", loc);
    outbox__log(OUTBOX_LOG_INFO, "pizza-api", "order_placed", "pizza order placed", "order_id", id,
                "event_id", event_id, "flavor", p[1], "size", p[2], "quantity", p[3], "price", p[4],
                "user_name", p[6], NULL);
    goto done;
dberr:
    db_problem(req, resp, c, "placing the order", err);
done:
    free(payload);
    outbox__dbpool_put(app->pool, c); /* rolls back anything left open */
}

static void get_pizza(outbox_http_req_t *req, outbox_http_resp_t *resp, void *opaque)
{
    app_t *app = opaque;
    const char *id = outbox__http_param(req, "id");
    if (!outbox_uuid_valid(id)) {
        outbox__http_problem(req, resp, 400, "invalid-order-id", NULL,
                             "order id \"%.64s\" is not a UUID (8-4-4-4-12 hex digits)",
                             id ? id : "");
        return;
    }
    char err[512];
    PGconn *c = outbox__dbpool_get(app->pool, 5000, err, sizeof(err));
    if (!c) {
        db_problem(req, resp, NULL, "reading the order", err);
        return;
    }
    const char *p[1] = {id};
    PGresult *r = PQexecParams(
        c,
        "SELECT row_to_json(r)::text FROM (SELECT id AS order_id, flavor, size, quantity,"
        " price, address, user_name, status, payment_attempts, delivery_attempts, last_error,"
        " created_at, paid_at, delivered_at, completed_at FROM pizza_orders"
        " WHERE id = $1::uuid) r",
        1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, sizeof(err), "%s", PQresultErrorMessage(r));
        err[strcspn(err, "\n")] = '\0';
        db_problem(req, resp, c, "reading the order", err);
    } else if (PQntuples(r) == 0) {
        outbox__http_problem(req, resp, 404, "order-not-found", NULL, "no pizza order with id %s",
                             id);
    } else {
        outbox__http_reply_raw(resp, 200, "application/json", PQgetvalue(r, 0, 0),
                               (size_t)PQgetlength(r, 0, 0));
    }
    PQclear(r);
    outbox__dbpool_put(app->pool, c);
}

static const outbox_http_route_t routes[] = {
    {"POST", "/pizza", create_pizza, 1},
    {"GET", "/pizza/{id}", get_pizza, 0},
    {NULL, NULL, NULL, 0},
};

static int ready(void *opaque, char *why, size_t why_size)
{
    app_t *app = opaque;
    return outbox__dbpool_ready(app->pool, why, why_size);
}

int main(int argc, char **argv)
{
    int rc;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--version")) {
            printf("pizza-api %s\n", OUTBOX_VERSION_STR);
            return 0;
        }
    setenv("OUTBOX_TABLE", PIZZA_TABLE, 0); /* the pipeline's table (logged in the config line) */
    outbox_conf_t *conf = outbox_kit_conf_load("pizza-api", argc, argv, usage, NULL, &rc);
    if (!conf)
        return rc;
    outbox_kit_conf_log(conf, "pizza-api", OUTBOX_KIT_SCOPE_DB | OUTBOX_KIT_SCOPE_HTTP);
    outbox_kit_on_stop_signals(on_signal);
    PGconn *db = pizza_connect(conf, "pizza-api", "pizza-api", &g_stop);
    char err[512];
    if (db && strcmp(outbox_kit_conf_str(conf, "outbox_table"), PIZZA_TABLE) &&
        outbox_migrate_table(db, outbox_kit_conf_str(conf, "outbox_table"), NULL, err,
                             sizeof(err))) {
        outbox__log(OUTBOX_LOG_ERROR, "pizza-api", "migrate_failed", err, NULL);
        PQfinish(db);
        db = NULL;
    }
    if (!db || pizza_migrate(db, "pizza-api") != 0) {
        PQfinish(db);
        outbox_conf_destroy(conf);
        return 1;
    }
    PQfinish(db);
    outbox__log(OUTBOX_LOG_INFO, "pizza-api", "db_connected", "Connected to database successfully",
                NULL);

    app_t app = {.table = outbox_kit_conf_str(conf, "outbox_table"),
                 .pool = outbox__dbpool_new(outbox_kit_conf_database_url(conf),
                                            (int)outbox_kit_conf_int(conf, "db_pool_size"),
                                            "pizza-api")};
    outbox_http_t *http =
        app.pool ? outbox_kit_http_start(conf, "pizza-api", routes, &app, ready) : NULL;
    if (!http) {
        if (!app.pool)
            outbox__log(OUTBOX_LOG_ERROR, "pizza-api", "listen_failed", "out of memory", NULL);
        outbox__dbpool_destroy(app.pool);
        outbox_conf_destroy(conf);
        return 1;
    }
    while (!g_stop)
        usleep(100 * 1000);
    outbox__log(OUTBOX_LOG_INFO, "pizza-api", "shutting_down", "stop requested: draining requests",
                NULL);
    outbox__http_stop(http, outbox_kit_conf_ms(conf, "shutdown_timeout"));
    outbox__dbpool_destroy(app.pool);
    outbox_conf_destroy(conf);
    outbox__log(OUTBOX_LOG_INFO, "pizza-api", "stopped", "stopped cleanly", NULL);
    return 0;
}
