/* The order system's consumers, each consumer_threads threads with their
 * own database session and broker consumer (group = the consumer's name;
 * the threads of a group share its messages):
 *
 *   inventory  OrderCreated -> in one transaction with its inbox record:
 *              deduct every item's stock (skus in order) and mark the
 *              order confirmed with an OrderConfirmed event; if any sku
 *              lacks stock, deduct nothing and mark it rejected with an
 *              OrderRejected event.
 *   email      OrderCreated -> prints the confirmation email once per
 *              order (inbox), on stdout.
 *
 * Both apply the messages of one poll in one transaction (a batch, see
 * outbox_consumer_set_batch(); consumer_batch_transaction=false turns it
 * off): one COMMIT, one WAL flush, for up to consumer_batch orders, each
 * order in its own savepoint, acknowledged after the COMMIT. A batch of
 * inventory holds the sku locks of all its orders until it commits, taken
 * order after order, not in one sku order: with batches on, every
 * inventory transaction takes one advisory lock first
 * (inventory_begin_sql), so the threads and processes of the group apply
 * their batches one after the other and never deadlock (the next thread's
 * batch runs while the last one's COMMIT waits for its WAL flush). The
 * order_confirmed / order_rejected log lines of a batch come before its
 * COMMIT (a batch that does not commit is applied again).
 *
 * A message already in the inbox is logged "SKIPPING duplicate message <id>"
 * and acknowledged with no effect. The handlers answer with the consumer
 * contract (include/outbox/consumer.h): a database failure is
 * OUTBOX_ERR_DB (retried later, no attempt charged: an outage never
 * dead-letters an order); an OrderCreated that can never be applied (no
 * order id, data that is not a JSON object) is OUTBOX_ERR_REJECTED: it goes
 * to outbox_consumer_dead_letter at once (outboxctl consumer-dlq). */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "orders.h"
#include "outbox/consumer.h"

typedef struct worker_s {
    const char *name; /* "inventory", "email": consumer group and inbox name */
    outbox_consumer_handler_fn handler;
    const char *prepare_sql; /* prepared as statement `name` on each new session, or NULL */
    outbox_conf_t *conf;
    char url[1024];
    char instance[160];
    PGconn *conn;
    pthread_t thread;
    int started;
    int batches;       /* consumer_batch_transaction: inventory transactions take the lock */
    _Atomic int *stop; /* set by another thread to stop this one */
} worker_t;

struct orders_consumers_s {
    _Atomic int stop;
    int nworkers;
    worker_t *workers;
};

static outbox_err_t on_inventory(const outbox_delivery_t *d, void *opaque);

/* (Re)connects the worker's session; 0 when usable. */
static int session(worker_t *w)
{
    if (w->conn && PQstatus(w->conn) == CONNECTION_OK)
        return 0;
    PQfinish(w->conn);
    char err[512];
    w->conn =
        outbox_kit_db_connect(outbox_kit_conf_database_url(w->conf), w->instance, err, sizeof(err));
    if (!w->conn) {
        outbox__log(OUTBOX_LOG_ERROR, w->name, "db_down", err, NULL);
        return -1;
    }
    if (w->prepare_sql) {
        PGresult *r = PQprepare(w->conn, w->name, w->prepare_sql, 0, NULL);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok)
            outbox__log(OUTBOX_LOG_ERROR, w->name, "db_error", PQresultErrorMessage(r), NULL);
        PQclear(r);
        if (!ok) {
            PQfinish(w->conn);
            w->conn = NULL;
            return -1;
        }
    }
    return 0;
}

/* The inventory transactions of every thread and process take this lock
 * first (transaction scope): a batch locks the skus of many orders, not in
 * one sku order, so two batches at once could deadlock. The 4 skus of the
 * load make them wait for each other anyway. */
static const char inventory_begin_sql[] =
    "BEGIN; SELECT pg_advisory_xact_lock(7308604897068083556)";

/* Opens the worker's transaction: BEGIN, and for inventory the lock (one
 * round trip; without batches, one transaction per message locks its skus
 * in order and needs none). */
static int begin_tx(worker_t *w, char *err, size_t err_size)
{
    if (w->handler != on_inventory || !w->batches)
        return outbox_kit_db_exec(w->conn, "BEGIN", err, err_size) ? -1 : 0;
    PGresult *r = PQexec(w->conn, inventory_begin_sql);
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        snprintf(err, err_size, "%s", PQresultErrorMessage(r));
    PQclear(r);
    return ok ? 0 : -1;
}

/* The batch hook (outbox_consumer_set_batch()): outbox_consumer_batch_pg on
 * the worker's session, and the inventory lock after BEGIN. */
static outbox_err_t batch_hook(outbox_consumer_batch_op_t op, int n, void *opaque)
{
    worker_t *w = opaque;
    if (op != OUTBOX_CONSUMER_BATCH_BEGIN)
        return outbox_consumer_batch_pg(op, n, &w->conn);
    char err[512];
    if (session(w) != 0)
        return OUTBOX_ERR_DB;
    if (begin_tx(w, err, sizeof(err))) {
        outbox__log(OUTBOX_LOG_ERROR, w->name, "db_error", err, NULL);
        PQclear(PQexec(w->conn, "ROLLBACK"));
        return OUTBOX_ERR_DB;
    }
    return OUTBOX_OK;
}

/* Undoes the handler's work: the whole transaction, or inside a batch
 * nothing here (the consumer rolls back to the message's savepoint). */
static void undo(worker_t *w, const outbox_delivery_t *d)
{
    if (!outbox_delivery_batched(d))
        PQclear(PQexec(w->conn, "ROLLBACK"));
}

/* BEGIN (unless inside a batch: the transaction is open) + inbox record.
 * Returns 1 new (transaction open), 0 duplicate (undone, logged), -1
 * error (undone). */
static int begin_once(worker_t *w, const outbox_delivery_t *d)
{
    char err[512];
    int is_new = 0;
    int batched = outbox_delivery_batched(d);
    if (!batched && session(w) != 0) {
        outbox_delivery_set_error(d, "no database session");
        return -1;
    }
    if ((!batched && begin_tx(w, err, sizeof(err))) ||
        outbox_inbox_record(w->conn, w->name, d->env.id, &is_new, err, sizeof(err))) {
        outbox__log(OUTBOX_LOG_ERROR, w->name, "db_error", err, "message_id", d->env.id, NULL);
        outbox_delivery_set_error(d, "%s", err);
        undo(w, d);
        return -1;
    }
    if (!is_new) {
        undo(w, d);
        char msg[96];
        snprintf(msg, sizeof(msg), "SKIPPING duplicate message %s", d->env.id);
        outbox__log(OUTBOX_LOG_INFO, w->name, "duplicate", msg, "message_id", d->env.id, "type",
                    d->env.type, NULL);
        return 0;
    }
    return 1;
}

/* COMMIT, or inside a batch nothing (the batch commits). */
static outbox_err_t commit(worker_t *w, const outbox_delivery_t *d)
{
    if (outbox_delivery_batched(d))
        return OUTBOX_OK;
    PGresult *r = PQexec(w->conn, "COMMIT");
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) {
        outbox__log(OUTBOX_LOG_ERROR, w->name, "db_error", PQresultErrorMessage(r), NULL);
        outbox_delivery_set_error(d, "COMMIT failed: %s", PQresultErrorMessage(r));
    }
    PQclear(r);
    return ok ? OUTBOX_OK : OUTBOX_ERR_DB;
}

static outbox_err_t rollback(worker_t *w, const outbox_delivery_t *d)
{
    undo(w, d);
    return OUTBOX_ERR_DB;
}

/*
 * The inventory effect of one order as one statement: one round trip per
 * order, prepared per session (see docs/ORDERS.md "Performance").
 * $1 order id, $2 this consumer's name, $3 the message id, $4 its
 * traceparent (or NULL).
 *   ib     the inbox record: a row only when this message is new; every
 *          change below waits for it, so a duplicate changes nothing;
 *   lk     locks the order's inventory rows in sku order (so concurrent
 *          consumers cannot deadlock) and tells whether each has enough stock;
 *   short  the first sku (in sku order) without enough stock, or NULL;
 *   u      decides the order: confirmed, or rejected with the reason, if it
 *          is still pending (it returns no row otherwise);
 *   d, r   deduct every item's stock and record its reservation, only when
 *          u decided "confirmed";
 *   e      the OrderConfirmed / OrderRejected event, in the outbox, in the
 *          same transaction (what outbox_enqueue would write: a UUIDv7 id,
 *          source /inventory, the payload compact JSON in this key order).
 * Each change waits for the values it depends on (d and u need short, which
 * needs every lock of lk), so nothing is changed before every row is locked.
 * Returns one row: is_new (0 for a duplicate), then u's status, reason,
 * user_id and amount (NULL when the order is missing or already decided).
 */
static const char inventory_sql[] =
    "WITH ib AS (INSERT INTO outbox_inbox (consumer, message_id) VALUES ($2, $3::uuid)"
    "            ON CONFLICT DO NOTHING RETURNING 1),"
    " it AS (SELECT sku, quantity FROM order_items"
    "        WHERE order_id = $1::uuid AND EXISTS (SELECT 1 FROM ib)),"
    " lk AS (SELECT v.sku, v.stock >= it.quantity AS enough FROM inventory v"
    "        JOIN it ON v.sku = it.sku ORDER BY v.sku FOR NO KEY UPDATE OF v),"
    " short AS (SELECT min(it.sku) AS sku FROM it"
    "           WHERE NOT EXISTS (SELECT 1 FROM lk WHERE lk.sku = it.sku AND lk.enough)),"
    " u AS (UPDATE orders SET"
    "         status = CASE WHEN (SELECT sku FROM short) IS NULL THEN 'confirmed'"
    "                  ELSE 'rejected' END,"
    "         reason = 'insufficient stock for ' || (SELECT sku FROM short),"
    "         updated_at = now()"
    "       WHERE id = $1::uuid AND status = 'pending' AND EXISTS (SELECT 1 FROM ib)"
    "       RETURNING status, reason, user_id, amount),"
    " d AS (UPDATE inventory v SET stock = v.stock - it.quantity, updated_at = now() FROM it"
    "       WHERE v.sku = it.sku AND EXISTS (SELECT 1 FROM u WHERE u.status = 'confirmed')"
    "       RETURNING v.sku, it.quantity),"
    " r AS (INSERT INTO inventory_reservations (order_id, sku, quantity)"
    "       SELECT $1::uuid, sku, quantity FROM d),"
    " e AS (INSERT INTO outbox (id, topic, type, key, payload, traceparent, source)"
    "       SELECT outbox_uuid_v7(), '" ORDERS_TOPIC "',"
    "              CASE WHEN u.status = 'confirmed' THEN 'OrderConfirmed' ELSE 'OrderRejected' END,"
    "              $1, ('{\"order_id\":' || to_json($1::text) || ',\"status\":' || "
    "to_json(u.status)"
    "                   || ',\"user_id\":' || to_json(u.user_id) || ',\"amount\":' || u.amount"
    "                   || CASE WHEN u.status = 'confirmed' THEN ''"
    "                      ELSE ',\"reason\":' || to_json(coalesce(u.reason, '')) END || "
    "'}')::json,"
    "              $4, '/inventory' FROM u)"
    " SELECT (SELECT count(*) FROM ib), u.status, u.reason, u.user_id, u.amount"
    "   FROM (SELECT 1) one LEFT JOIN u ON true";

static outbox_err_t on_inventory(const outbox_delivery_t *d, void *opaque)
{
    worker_t *w = opaque;
    if (strcmp(d->env.type, "OrderCreated") != 0)
        return OUTBOX_OK; /* our own OrderConfirmed/OrderRejected */
    const char *order_id = d->env.subject;
    if (!outbox_uuid_valid(order_id)) {
        outbox_delivery_set_error(d, "OrderCreated without an order id subject (got \"%.60s\")",
                                  order_id ? order_id : "");
        return OUTBOX_ERR_REJECTED; /* can never succeed: dead-lettered */
    }
    char err[512];
    if (!outbox_delivery_batched(d)) { /* its own transaction (in a batch: its savepoint) */
        if (session(w) != 0) {
            outbox_delivery_set_error(d, "no database session");
            return OUTBOX_ERR_DB;
        }
        if (begin_tx(w, err, sizeof(err))) {
            outbox__log(OUTBOX_LOG_ERROR, w->name, "db_error", err, "message_id", d->env.id, NULL);
            outbox_delivery_set_error(d, "%s", err);
            return rollback(w, d);
        }
    }
    PGconn *c = w->conn;
    const char *p1[4] = {order_id, w->name, d->env.id,
                         d->env.traceparent && *d->env.traceparent ? d->env.traceparent : NULL};
    PGresult *r = PQexecPrepared(c, w->name, 4, p1, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        outbox__log(OUTBOX_LOG_ERROR, w->name, "db_error", PQresultErrorMessage(r), "order_id",
                    order_id, NULL);
        outbox_delivery_set_error(d, "inventory update: %s", PQresultErrorMessage(r));
        PQclear(r);
        return rollback(w, d);
    }
    if (strcmp(PQgetvalue(r, 0, 0), "0") == 0) { /* already in the inbox: nothing changed */
        PQclear(r);
        undo(w, d);
        char msg[96];
        snprintf(msg, sizeof(msg), "SKIPPING duplicate message %s", d->env.id);
        outbox__log(OUTBOX_LOG_INFO, w->name, "duplicate", msg, "message_id", d->env.id, "type",
                    d->env.type, NULL);
        return OUTBOX_OK;
    }
    if (PQgetisnull(r, 0, 1)) {
        outbox__log(OUTBOX_LOG_WARN, w->name, "not_pending",
                    "order missing or already decided: nothing to do", "order_id", order_id, NULL);
        PQclear(r);
        return commit(w, d); /* record the message as handled */
    }
    int rejected = strcmp(PQgetvalue(r, 0, 1), "confirmed") != 0;
    char reason[160];
    snprintf(reason, sizeof(reason), "%s", PQgetvalue(r, 0, 2));
    PQclear(r);
    if (commit(w, d) != OUTBOX_OK)
        return OUTBOX_ERR_DB;
    outbox__log(rejected ? OUTBOX_LOG_WARN : OUTBOX_LOG_INFO, w->name,
                rejected ? "order_rejected" : "order_confirmed",
                rejected ? reason : "stock deducted", "order_id", order_id, "message_id", d->env.id,
                NULL);
    return OUTBOX_OK;
}

static outbox_err_t on_email(const outbox_delivery_t *d, void *opaque)
{
    worker_t *w = opaque;
    if (strcmp(d->env.type, "OrderCreated") != 0)
        return OUTBOX_OK;
    json_error_t jerr;
    json_t *data = json_loads(d->env.data ? d->env.data : "{}", 0, &jerr);
    if (!json_is_object(data)) {
        outbox_delivery_set_error(d, "OrderCreated data is not a JSON object: %s",
                                  data ? "another JSON value" : jerr.text);
        json_decref(data);
        return OUTBOX_ERR_REJECTED; /* can never succeed: dead-lettered */
    }
    int b = begin_once(w, d);
    if (b <= 0) {
        json_decref(data);
        return b == 0 ? OUTBOX_OK : OUTBOX_ERR_DB;
    }
    const char *order = json_string_value(json_object_get(data, "order_id"));
    const char *user = json_string_value(json_object_get(data, "user_id"));
    json_t *amount = json_object_get(data, "amount");
    /* The effect outside the database happens before the commit: a crash in
     * between sends the email again (at least once), never zero times. */
    flockfile(stdout);
    printf("[EMAIL] Sending confirmation email for Order %s\n", order ? order : d->env.subject);
    printf("[EMAIL] -> User: %s\n", user ? user : "(unknown)");
    printf("[EMAIL] -> Amount: %lld\n",
           json_is_integer(amount) ? (long long)json_integer_value(amount) : 0LL);
    printf("[EMAIL] \xE2\x9C\x93 Email sent successfully!\n");
    fflush(stdout);
    funlockfile(stdout);
    json_decref(data);
    return commit(w, d);
}

static void *run(void *arg)
{
    worker_t *w = arg;
    const char *topics[1] = {ORDERS_TOPIC};
    char err[512];
    outbox_consumer_t *c =
        outbox_consumer_new(w->url, w->name, w->instance, topics, 1, w->conf, err, sizeof(err));
    if (!c) {
        outbox__log(OUTBOX_LOG_ERROR, w->name, "consumer_failed", err, NULL);
        return NULL;
    }
    outbox_consumer_set_batch(c, batch_hook, w);
    while (!*w->stop) {
        if (session(w) != 0) {
            outbox_kit_sleep_ms(1000, w->stop);
            continue;
        }
        outbox_consumer_poll(c, 500, w->handler, w);
    }
    outbox_consumer_destroy(c);
    PQfinish(w->conn);
    w->conn = NULL;
    outbox__log(OUTBOX_LOG_INFO, w->name, "consumer_stopped", "consumer stopped", NULL);
    return NULL;
}

orders_consumers_t *orders_consumers_start(const outbox_conf_t *conf, char *errstr,
                                           size_t errstr_size)
{
    orders_consumers_t *cs = calloc(1, sizeof(*cs));
    if (!cs) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    char url[1024];
    const char *src = outbox_kit_conf_str(conf, "consumer_source");
    const char *sink = outbox_kit_conf_str(conf, "sink");
    if (src[0])
        snprintf(url, sizeof(url), "%s", src);
    else if (sink[0])
        snprintf(url, sizeof(url), "%s", sink);
    else
        snprintf(url, sizeof(url), "redis://%s", outbox_kit_conf_str(conf, "redis_addr"));
    char host[128] = "host";
    gethostname(host, sizeof(host) - 1);
    static const struct {
        const char *name, *started, *sql;
        outbox_consumer_handler_fn fn;
    } defs[2] = {{"inventory", "Inventory consumer started", inventory_sql, on_inventory},
                 {"email", "Email consumer started", NULL, on_email}};
    int per = (int)outbox_kit_conf_int(conf, "consumer_threads");
    cs->workers = calloc((size_t)(2 * per), sizeof(worker_t));
    if (!cs->workers) {
        free(cs);
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    for (int i = 0; i < 2; i++) {
        for (int k = 0; k < per; k++) {
            worker_t *w = &cs->workers[cs->nworkers++];
            w->name = defs[i].name;
            w->handler = defs[i].fn;
            w->prepare_sql = defs[i].sql;
            w->stop = &cs->stop;
            w->conf = outbox_conf_dup(conf);
            w->batches = outbox_kit_conf_bool(conf, "consumer_batch_transaction");
            snprintf(w->url, sizeof(w->url), "%s", url);
            snprintf(w->instance, sizeof(w->instance), "%s-%s-%d-%d", w->name, host, (int)getpid(),
                     k + 1);
            if (!w->conf || pthread_create(&w->thread, NULL, run, w) != 0) {
                snprintf(errstr, errstr_size, "cannot start the %s consumer", w->name);
                orders_consumers_stop(cs);
                return NULL;
            }
            w->started = 1;
        }
        char n[16];
        snprintf(n, sizeof(n), "%d", per);
        outbox__log(OUTBOX_LOG_INFO, defs[i].name, "consumer_started", defs[i].started, "group",
                    defs[i].name, "threads", n, NULL);
    }
    return cs;
}

void orders_consumers_stop(orders_consumers_t *cs)
{
    if (!cs)
        return;
    cs->stop = 1;
    for (int i = 0; i < cs->nworkers; i++) {
        if (cs->workers[i].started)
            pthread_join(cs->workers[i].thread, NULL);
        outbox_conf_destroy(cs->workers[i].conf);
    }
    free(cs->workers);
    free(cs);
}
