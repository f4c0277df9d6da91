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
 * batch runs while the last one's COMMIT waits for its WAL flush). A
 * set-based inventory batch is three round trips: BEGIN and the read (the
 * inbox records, the orders and their items) before the lock, so that it
 * runs while another batch holds the lock; the lock and the skus' stock in
 * one pipeline; the write and COMMIT in another. Its
 * order_confirmed / order_rejected log lines come once its COMMIT has
 * succeeded (a batch that does not commit is applied again, and logged
 * then); an email is printed before its COMMIT (at least once).
 *
 * A message already in the inbox is logged "SKIPPING duplicate message <id>"
 * and acknowledged with no effect. The handlers answer with the consumer
 * contract (include/outbox/consumer.h): a database failure is
 * OUTBOX_ERR_DB (retried later, no attempt charged: an outage never
 * dead-letters an order), except a statement the database refuses for the
 * order's own data (failure_of: a charged attempt); an OrderCreated that can never be applied (no
 * order id, data that is not a JSON object) is OUTBOX_ERR_REJECTED: it goes
 * to outbox_consumer_dead_letter at once (outboxctl consumer-dlq). */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "orders.h"
#include "outbox/consumer.h"

/* One message of a batch whose work is deferred to the batch's end. */
typedef struct pending_s {
    char id[40];      /* message id (a UUID) */
    char *order;      /* inventory: the order id (the subject); email: the data's order_id */
    char *user;       /* email: the data's user_id, or NULL */
    char *tp;         /* inventory: the traceparent, or NULL */
    long long amount; /* email: the data's amount (0 when not an integer) */
} pending_t;

/* A statement prepared on every session of a worker (PQprepare at connect).
 * Prepared, a batch statement is parsed once per session and, after five
 * executions, runs a generic plan: the planning was 0.35 ms of a 100-order
 * read and 1.1 ms of its write (psql, 25 batches each way, alternated). */
typedef struct stmt_s {
    const char *name, *sql;
} stmt_t;

typedef struct worker_s {
    const char *name; /* "inventory", "email": consumer group and inbox name */
    outbox_consumer_handler_fn handler;
    const char *prepare_sql;    /* prepared as statement `name` on each new session, or NULL */
    const struct stmt_s *stmts; /* the set-based batch statements, prepared on each session */
    int nstmts;
    outbox_conf_t *conf;
    char url[1024];
    char instance[160];
    PGconn *conn;
    pthread_t thread;
    int started;
    int batches;       /* consumer_batch_transaction: inventory transactions take the lock */
    _Atomic int *stop; /* set by another thread to stop this one */
    /* The batch being collected (see "Set-based batches" below). */
    int in_batch; /* between the batch hook's BEGIN and its COMMIT/ABORT */
    int deferred; /* the batch's BEGIN (and lock) not sent yet: it goes with its first statement */
    int one_by_one; /* an apply failed: a savepoint per message until a clean batch */
    int failed;     /* a handler call of the current batch failed */
    int batch_max;  /* consumer_batch: the most messages of a set-based batch */
    pending_t *pend;
    int npend, pend_cap;
} worker_t;

struct orders_consumers_s {
    _Atomic int stop;
    int nworkers;
    worker_t *workers;
};

static outbox_err_t on_inventory(const outbox_delivery_t *d, void *opaque);

/* One of a new session's set-up statements (its result r): 1 when it
 * succeeded, else 0 (logged). */
static int setup_ok(const worker_t *w, PGresult *r)
{
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        outbox__log(OUTBOX_LOG_ERROR, w->name, "db_error", PQresultErrorMessage(r), NULL);
    PQclear(r);
    return ok;
}

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
    /* No sequential scan where an index serves, as the API's and the
     * relay's sessions. The batch statements join the batch's orders to
     * `orders`; planned with statistics that say almost no order is
     * pending, the planner read the whole table for every batch (a Seq
     * Scan under a hash join, auto_explain: 171-239 ms a batch at 45,000
     * orders), so a batch cost more with every order ever taken and the
     * consumer fell behind under a steady load.
     * And every statement planned once for the session: the statements are
     * written so that any plan is index probes whatever the tables' size
     * then (no sequential scan; the inventory batch's reads one probe per
     * message, its writes by `id = ANY`, see inventory_read_sql).
     * The planner kept making a new plan at every execution of the
     * one-message statement (inventory_sql): 0.3-0.5 ms of planning for 0.3
     * of work, about one message in three under a steady load
     * (pg_stat_statements, track_planning). */
    if (!setup_ok(w, PQexec(w->conn, "SET enable_seqscan = off;"
                                     " SET plan_cache_mode = force_generic_plan")) ||
        (w->prepare_sql && !setup_ok(w, PQprepare(w->conn, w->name, w->prepare_sql, 0, NULL)))) {
        PQfinish(w->conn);
        w->conn = NULL;
        return -1;
    }
    for (int i = 0; i < w->nstmts; i++) {
        if (!setup_ok(w, PQprepare(w->conn, w->stmts[i].name, w->stmts[i].sql, 0, NULL))) {
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
#define INVENTORY_LOCK_SQL "SELECT pg_advisory_xact_lock(7308604897068083556)"
static const char inventory_begin_sql[] = "BEGIN; " INVENTORY_LOCK_SQL;

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

/* Sends the batch's deferred BEGIN (and lock) now, for a message that
 * needs the transaction before the batch's statements (see "Set-based
 * batches"): 0 when open. */
static int open_deferred(worker_t *w, char *err, size_t err_size)
{
    if (!w->deferred)
        return 0;
    w->deferred = 0;
    return begin_tx(w, err, err_size);
}

static void pend_reset(worker_t *w)
{
    for (int i = 0; i < w->npend; i++) {
        free(w->pend[i].order);
        free(w->pend[i].user);
        free(w->pend[i].tp);
    }
    w->npend = 0;
}

/* Adds a message to the batch being collected; NULL when out of memory
 * (the caller then handles the message on its own). */
static pending_t *pend_add(worker_t *w, const char *id, const char *order, const char *user,
                           const char *tp)
{
    if (w->npend == w->pend_cap) {
        int cap = w->pend_cap ? 2 * w->pend_cap : 64;
        pending_t *p = realloc(w->pend, (size_t)cap * sizeof(*p));
        if (!p)
            return NULL;
        w->pend = p;
        w->pend_cap = cap;
    }
    pending_t *p = &w->pend[w->npend];
    memset(p, 0, sizeof(*p));
    snprintf(p->id, sizeof(p->id), "%s", id);
    p->order = strdup(order);
    p->user = user ? strdup(user) : NULL;
    p->tp = tp && *tp ? strdup(tp) : NULL;
    if (!p->order || (user && !p->user) || (tp && *tp && !p->tp)) {
        free(p->order);
        free(p->user);
        free(p->tp);
        return NULL;
    }
    w->npend++;
    return p;
}

/* May this message's work wait for the end of its batch? Only inside a
 * batch, only when the last batch's apply did not fail, and only for a
 * message id the set-based statements can take (a UUID). */
static int deferrable(const worker_t *w, const outbox_delivery_t *d)
{
    return w->in_batch && !w->one_by_one && outbox_uuid_valid(d->env.id);
}

/* What apply_inventory / apply_email did with the batch's transaction. */
enum {
    APPLY_FAILED = -1,      /* a statement failed (err): the batch is to be rolled back */
    APPLY_OPEN = 0,         /* applied, the transaction still open: the hook commits */
    APPLY_COMMITTED = 1,    /* applied and committed (the COMMIT went with the last statement) */
    APPLY_COMMIT_FAILED = 2 /* applied, but the COMMIT failed or its outcome is unknown (err) */
};
static int apply_inventory(worker_t *w, char *err, size_t err_size);
static int apply_email(worker_t *w, char *err, size_t err_size);

/* The batch hook (outbox_consumer_set_batch()): outbox_consumer_batch_pg on
 * the worker's session, the inventory lock after BEGIN, and before COMMIT
 * the set-based work of the messages collected (apply_inventory /
 * apply_email). When that work fails the batch is rolled back (nothing is
 * acknowledged: the consumer delivers the messages again) and the next
 * batch goes one message per savepoint, so a message that fails on its own
 * gets the consumer's retries and dead letter instead of failing every
 * batch it is in; set-based batches come back after a batch in which every
 * message succeeded. */
static outbox_err_t batch_hook(outbox_consumer_batch_op_t op, int n, void *opaque)
{
    worker_t *w = opaque;
    char err[512];
    switch (op) {
    case OUTBOX_CONSUMER_BATCH_BEGIN:
        pend_reset(w);
        w->failed = 0;
        w->deferred = 0;
        if (session(w) != 0)
            return OUTBOX_ERR_DB;
        w->in_batch = 1;
        if (!w->one_by_one) { /* sent with the batch's first statement */
            w->deferred = 1;
            return OUTBOX_OK;
        }
        if (begin_tx(w, err, sizeof(err))) {
            outbox__log(OUTBOX_LOG_ERROR, w->name, "db_error", err, NULL);
            PQclear(PQexec(w->conn, "ROLLBACK"));
            w->in_batch = 0;
            return OUTBOX_ERR_DB;
        }
        return OUTBOX_OK;
    case OUTBOX_CONSUMER_BATCH_COMMIT: {
        w->in_batch = 0;
        outbox_err_t rc = OUTBOX_OK;
        if (w->npend > 0) {
            int done = w->handler == on_inventory ? apply_inventory(w, err, sizeof(err))
                                                  : apply_email(w, err, sizeof(err));
            char nm[16];
            snprintf(nm, sizeof(nm), "%d", w->npend);
            if (done == APPLY_FAILED) {
                outbox__log(OUTBOX_LOG_ERROR, w->name, "batch_apply_failed", err, "messages", nm,
                            NULL);
                pend_reset(w);
                w->one_by_one = 1;
                w->deferred = 0;
                (void)outbox_consumer_batch_pg(OUTBOX_CONSUMER_BATCH_ABORT, 0, &w->conn);
                return OUTBOX_ERR_DB;
            }
            if (done == APPLY_COMMIT_FAILED) {
                outbox__log(OUTBOX_LOG_ERROR, w->name, "db_error", err, "messages", nm, NULL);
                rc = OUTBOX_ERR_DB;
            } else {
                outbox__log(OUTBOX_LOG_DEBUG, w->name, "batch_applied",
                            "batch applied in one go with its COMMIT", "messages", nm, NULL);
            }
            pend_reset(w);
            if (done == APPLY_OPEN)
                rc = outbox_consumer_batch_pg(op, n, &w->conn);
        } else if (w->deferred) {
            w->deferred = 0; /* nothing was sent: nothing to commit */
        } else {
            rc = outbox_consumer_batch_pg(op, n, &w->conn);
        }
        if (rc == OUTBOX_OK && !w->failed)
            w->one_by_one = 0; /* every message of a batch applied on its own: back to sets */
        return rc;
    }
    case OUTBOX_CONSUMER_BATCH_ABORT:
        w->in_batch = 0;
        pend_reset(w);
        if (w->deferred) {
            w->deferred = 0; /* nothing was sent: nothing to undo */
            return OUTBOX_OK;
        }
        return outbox_consumer_batch_pg(op, n, &w->conn);
    default: /* a savepoint: the transaction first */
        if (open_deferred(w, err, sizeof(err))) {
            outbox__log(OUTBOX_LOG_ERROR, w->name, "db_error", err, NULL);
            return OUTBOX_ERR_DB;
        }
        return outbox_consumer_batch_pg(op, n, &w->conn);
    }
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
        (batched && open_deferred(w, err, sizeof(err))) ||
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

/* What a failed statement means for the message: the database refused this
 * message's data (SQLSTATE class 22 data exception, 23 constraint, P0 a
 * PL/pgSQL RAISE, 44 check option): a failed attempt, charged, so one order
 * the database will not take is retried with backoff and in the end
 * dead-lettered instead of pausing the consumer for ever. Anything else (no
 * answer, connection, resources, deadlock, a missing table) is
 * OUTBOX_ERR_DB: an outage, retried without charging an attempt. */
static outbox_err_t failure_of(const worker_t *w, const PGresult *r)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (!state || PQstatus(w->conn) != CONNECTION_OK)
        return OUTBOX_ERR_DB;
    static const char *const message_fault[] = {"22", "23", "P0", "44"};
    for (size_t i = 0; i < sizeof(message_fault) / sizeof(message_fault[0]); i++)
        if (!strncmp(state, message_fault[i], 2))
            return OUTBOX_ERR_INVALID_ARG;
    return OUTBOX_ERR_DB;
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
    if (deferrable(w, d) &&
        pend_add(w, d->env.id, order_id, NULL, d->env.traceparent)) /* NULL: out of memory */
        return OUTBOX_OK; /* applied with its batch, before the COMMIT (apply_inventory) */
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
        outbox_err_t e = failure_of(w, r);
        PQclear(r);
        undo(w, d);
        return e;
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

/* The seed's confirmation email, on stdout, its four lines together. The
 * emails go out in whole write(2)s of at most PIPE_BUF bytes, each holding
 * whole emails (one email alone when it is longer), so a log line written
 * to the same file or pipe at that moment (stderr, one write a line) never
 * lands inside an email: POSIX makes writes of up to PIPE_BUF bytes to a
 * pipe atomic, and a file's writes do not interleave. Through stdio, a
 * batch's emails went out in 4 KiB pieces and the chaos test read an
 * inventory log line in the middle of one. */
#define EMAIL_FMT                                                                                  \
    "[EMAIL] Sending confirmation email for Order %s\n"                                            \
    "[EMAIL] -> User: %s\n"                                                                        \
    "[EMAIL] -> Amount: %lld\n"                                                                    \
    "[EMAIL] \xE2\x9C\x93 Email sent successfully!\n"

typedef struct emails_s {
    char buf[PIPE_BUF];
    size_t len;
} emails_t;

static void write_out(const char *p, size_t n)
{
    while (n) {
        ssize_t k = write(STDOUT_FILENO, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return; /* stdout gone: the email is recorded all the same */
        p += k;
        n -= (size_t)k;
    }
}

static void emails_flush(emails_t *o)
{
    write_out(o->buf, o->len);
    o->len = 0;
}

static void emails_add(emails_t *o, const char *order, const char *user, long long amount)
{
    if (!user)
        user = "(unknown)";
    char one[PIPE_BUF];
    int n = snprintf(one, sizeof(one), EMAIL_FMT, order, user, amount);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(one)) { /* longer than PIPE_BUF: alone */
        emails_flush(o);
        char *big = malloc((size_t)n + 1);
        if (big && snprintf(big, (size_t)n + 1, EMAIL_FMT, order, user, amount) == n)
            write_out(big, (size_t)n);
        free(big);
        return;
    }
    if (o->len + (size_t)n > sizeof(o->buf))
        emails_flush(o);
    memcpy(o->buf + o->len, one, (size_t)n);
    o->len += (size_t)n;
}

/* Starts a run of emails: anything stdio holds for stdout goes first. The
 * caller ends it with emails_end. */
static void emails_begin(emails_t *o)
{
    flockfile(stdout);
    fflush(stdout);
    o->len = 0;
}

static void emails_end(emails_t *o)
{
    emails_flush(o);
    funlockfile(stdout);
}

static void print_email(const char *order, const char *user, long long amount)
{
    emails_t o;
    emails_begin(&o);
    emails_add(&o, order, user, amount);
    emails_end(&o);
}

/* What the email needs of an OrderCreated payload, read by the JSON
 * scanner (no jansson tree per message): order_id and user_id when they are
 * strings, amount when it is an integer (else 0). 0, or -1 with why set
 * when the data is not an object or a string holds U+0000 (the message can
 * never succeed). Free order and user. */
typedef struct email_data_s {
    char *order, *user;
    long long amount;
} email_data_t;

static int email_data(const char *data, email_data_t *e, const char **why)
{
    static const char *const names[] = {"order_id", "user_id", "amount"};
    outbox__json_span_t sp[3];
    outbox__json_error_t jerr;
    memset(e, 0, sizeof(*e));
    if (!data || outbox__json_find_members(data, strlen(data), names, 3, sp, &jerr) < 0) {
        *why = !data                                    ? "no data"
               : strcmp(jerr.what, "not a JSON object") ? jerr.what
                                                        : "another JSON value";
        return -1;
    }
    for (int k = 0; k < 2; k++) {
        if (!sp[k].len || data[sp[k].off] != '"')
            continue;
        char **out = k == 0 ? &e->order : &e->user;
        int rc = outbox__json_string_dup(data + sp[k].off, sp[k].len, out);
        if (rc) {
            free(e->order);
            free(e->user);
            *why = rc == -2 ? "out of memory" : "a string holds U+0000 or a lone surrogate";
            return -1;
        }
    }
    /* An integer: digits only, optionally negative, within long long. */
    const char *a = data + sp[2].off;
    size_t alen = sp[2].len;
    if (alen && alen < 21 && strspn(a + (*a == '-'), "0123456789") == alen - (*a == '-')) {
        errno = 0;
        long long v = strtoll(a, NULL, 10);
        e->amount = errno ? 0 : v;
    }
    return 0;
}

static outbox_err_t on_email(const outbox_delivery_t *d, void *opaque)
{
    worker_t *w = opaque;
    if (strcmp(d->env.type, "OrderCreated") != 0)
        return OUTBOX_OK;
    email_data_t e;
    const char *why = NULL;
    if (email_data(d->env.data, &e, &why)) {
        outbox_delivery_set_error(d, "OrderCreated data is not a JSON object: %s", why);
        return OUTBOX_ERR_REJECTED; /* can never succeed: dead-lettered */
    }
    const char *order = e.order ? e.order : d->env.subject ? d->env.subject : "";
    outbox_err_t rc;
    pending_t *p = deferrable(w, d) ? pend_add(w, d->env.id, order, e.user, NULL) : NULL;
    if (p) {
        p->amount = e.amount;
        rc = OUTBOX_OK; /* printed and recorded with its batch (apply_email) */
    } else {
        int b = begin_once(w, d);
        if (b <= 0) {
            rc = b == 0 ? OUTBOX_OK : OUTBOX_ERR_DB;
        } else {
            /* The effect outside the database happens before the commit: a
             * crash in between sends the email again (at least once), never
             * zero times. */
            print_email(order, e.user, e.amount);
            rc = commit(w, d);
        }
    }
    free(e.order);
    free(e.user);
    return rc;
}

/*
 * Set-based batches. Inside a batch (outbox_consumer_set_batch()) the
 * handlers only collect their messages (pend_add), and the batch hook
 * applies them all at the COMMIT: three statements for inventory, one for
 * email, instead of a savepoint and a statement per message. The batch's
 * BEGIN is deferred (w->deferred) and sent with its first statement
 * (batch_statement), inventory's write with the COMMIT (last_statement);
 * a message that needs the transaction earlier (one going alone in its
 * savepoint) opens it then (open_deferred). Under
 * a write load the two cores are shared by dozens of busy PostgreSQL
 * sessions and every round trip of a consumer waits for its session's turn
 * on a CPU: with three round trips per order the inventory consumer applied
 * 324 orders/s while the API committed 1,245/s (docs/BENCHMARKS.md, F6).
 * The outcome is the one message-by-message handling gives, in the batch's
 * order: an order is confirmed when every sku has its quantity left after
 * the orders before it, else rejected for the first sku (in sku order)
 * without; a message already in the inbox (or twice in the batch) is a
 * duplicate; an order missing or already decided is only recorded.
 *
 * The inventory read runs before the lock, so a batch may read an order
 * that another batch, holding the lock, decides meanwhile (two messages of
 * one order): the write changes only orders still pending and says which
 * were not. Stock is read and changed only under the lock. Two batches
 * carrying the same message at once (a redelivery) can still wait for each
 * other across the lock: one holds the message's inbox record and waits for
 * the lock, the other holds the lock and inserts that record one message at
 * a time. PostgreSQL ends such a deadlock by failing one transaction, whose
 * messages stay pending and come again; nothing is lost or applied twice.
 */
/* 1 when the message of w->pend[i] came earlier in the batch too. */
static int pend_repeat(const worker_t *w, int i)
{
    for (int k = 0; k < i; k++)
        if (!strcmp(w->pend[k].id, w->pend[i].id))
            return 1;
    return 0;
}

static void log_duplicate(const worker_t *w, const char *id)
{
    char msg[96];
    snprintf(msg, sizeof(msg), "SKIPPING duplicate message %s", id);
    outbox__log(OUTBOX_LOG_INFO, w->name, "duplicate", msg, "message_id", id, "type",
                "OrderCreated", NULL);
}

/* The batch's messages to send, each once: their ids (and, when orders is
 * not NULL, their orders) as array elements, sent[k] = index in w->pend of
 * element k + 1; a repeat is logged as a duplicate. Returns how many. */
static int pend_collect(worker_t *w, int *sent, orders_arr_t *ids, orders_arr_t *orders)
{
    int nsent = 0;
    for (int i = 0; i < w->npend; i++) {
        if (pend_repeat(w, i)) {
            log_duplicate(w, w->pend[i].id);
            continue;
        }
        sent[nsent++] = i;
        orders_arr_add(ids, w->pend[i].id);
        if (orders)
            orders_arr_add(orders, w->pend[i].order);
    }
    return nsent;
}

/* A batch statement that returns rows (the prepared st, n text
 * parameters), in one pipeline with what must go first: the batch's BEGIN
 * while it is deferred, and with lock the inventory lock. One round trip,
 * and the statement runs the moment the lock is granted, without a client
 * turn in between: under a write load every round trip waits for the
 * session's turn on a busy CPU. The result, or NULL with err set. */
static PGresult *batch_statement(worker_t *w, int lock, const stmt_t *st, int n,
                                 const char *const *params, const char *what, char *err,
                                 size_t err_size)
{
    const char *sqls[3], *names[3] = {NULL, NULL, NULL};
    const char *const *pp[3] = {NULL, NULL, NULL};
    int np[3] = {0, 0, 0}, k = 0;
    ExecStatusType want[3];
    if (w->deferred) {
        w->deferred = 0;
        sqls[k] = "BEGIN";
        want[k++] = PGRES_COMMAND_OK;
    }
    if (lock) {
        sqls[k] = INVENTORY_LOCK_SQL;
        want[k++] = PGRES_TUPLES_OK;
    }
    sqls[k] = st->sql;
    names[k] = st->name;
    np[k] = n;
    pp[k] = params;
    want[k++] = PGRES_TUPLES_OK;
    PGresult *res[3] = {NULL, NULL, NULL}, *out = NULL;
    (void)outbox_kit_db_pipeline(w->conn, k, names, sqls, np, pp, res);
    for (int i = 0; i < k; i++) {
        if (!res[i] || PQresultStatus(res[i]) != want[i]) {
            snprintf(err, err_size, "%s: %s", i == k - 1 ? what : sqls[i],
                     res[i] ? PQresultErrorMessage(res[i]) : PQerrorMessage(w->conn));
            break;
        }
        if (i == k - 1) {
            out = res[i];
            res[i] = NULL;
        }
    }
    for (int i = 0; i < k; i++)
        PQclear(res[i]);
    return out;
}

/* The batch's last statement and its COMMIT in one pipeline (one round
 * trip fewer). APPLY_FAILED: the statement failed (err; the COMMIT was not
 * run, the transaction is to be rolled back); APPLY_COMMITTED, *out its
 * result; APPLY_COMMIT_FAILED, *out its result and err: the COMMIT failed,
 * or its answer never came (then whether it committed is unknown: the
 * batch is not acknowledged, and its redelivery meets the inbox). */
static int last_statement(worker_t *w, const stmt_t *st, int n, const char *const *params,
                          const char *what, PGresult **out, char *err, size_t err_size)
{
    const char *sqls[2] = {st->sql, "COMMIT"}, *names[2] = {st->name, NULL};
    int np[2] = {n, 0};
    const char *const *pp[2] = {params, NULL};
    PGresult *res[2] = {NULL, NULL};
    int rc;
    *out = NULL;
    (void)outbox_kit_db_pipeline(w->conn, 2, names, sqls, np, pp, res);
    if (!res[0] || PQresultStatus(res[0]) != PGRES_TUPLES_OK) {
        snprintf(err, err_size, "%s: %s", what,
                 res[0] ? PQresultErrorMessage(res[0]) : PQerrorMessage(w->conn));
        rc = APPLY_FAILED;
    } else if (!res[1] || PQresultStatus(res[1]) != PGRES_COMMAND_OK ||
               strcmp(PQcmdStatus(res[1]), "COMMIT") != 0) {
        /* A COMMIT of a transaction that failed answers ROLLBACK. */
        snprintf(err, err_size, "COMMIT failed: %s",
                 !res[1]                                      ? PQerrorMessage(w->conn)
                 : PQresultStatus(res[1]) == PGRES_COMMAND_OK ? "the transaction was rolled back"
                                                              : PQresultErrorMessage(res[1]));
        *out = res[0];
        res[0] = NULL;
        rc = APPLY_COMMIT_FAILED;
    } else {
        *out = res[0];
        res[0] = NULL;
        rc = APPLY_COMMITTED;
    }
    PQclear(res[0]);
    PQclear(res[1]);
    return rc;
}

/* Statement 1 of a batch, before the lock: the inbox records, with each
 * message's order status and items. $1 consumer, $2 message ids, $3 order
 * ids (the subjects, as sent). One row per message and item, in batch and
 * sku order: ord, is_new, status (NULL: no such order), sku, quantity.
 * The orders and their items are read by one index probe per message
 * (LATERAL subqueries, kept apart by LIMIT / OFFSET): a session keeps one
 * plan per statement, and one made while `orders` looked small (emptied,
 * its size unknown: estimated at 700 rows) hashed the batch against a full
 * Index Scan of orders_pkey, every entry of it for every batch
 * (auto_explain: 70-100 ms a batch 20 s into the load; the bench's write
 * path with relay and consumers at 0.73-0.79 of pgbench instead of
 * 0.86-0.92). Bounding the scans with `= ANY (the batch's ids)` instead made
 * each item probe walk the whole array (a Bitmap Index Scan with both
 * conditions, 150 ms for a batch of 500). Test orders_inventory_batch,
 * part 5. */
static const char inventory_read_sql[] =
    "WITH m AS MATERIALIZED (SELECT * FROM unnest($2::uuid[], $3::text[]) WITH ORDINALITY"
    "                        AS m(message_id, order_key, ord)),"
    " ib AS (INSERT INTO outbox_inbox (consumer, message_id)"
    "        SELECT $1, message_id FROM m ORDER BY ord ON CONFLICT DO NOTHING"
    "        RETURNING message_id)"
    " SELECT m.ord, ib.message_id IS NOT NULL, o.status, oi.sku, oi.quantity"
    "   FROM m LEFT JOIN ib ON ib.message_id = m.message_id"
    "          LEFT JOIN LATERAL (SELECT r.id, r.status FROM orders r"
    "                              WHERE r.id = m.order_key::uuid LIMIT 1) o ON true"
    "          LEFT JOIN LATERAL (SELECT i.sku, i.quantity FROM order_items i"
    "                              WHERE i.order_id = o.id AND ib.message_id IS NOT NULL"
    "                              OFFSET 0) oi ON true"
    "  ORDER BY m.ord, oi.sku";

/* Statement 2, after the inventory lock (same pipeline): the stock of the
 * skus of the batch's pending orders, their rows locked in sku order. $1
 * the skus. Rows: sku, stock (a sku not in the inventory has no row).
 * Only this statement, the write and the COMMIT hold the lock: the read
 * above (the inbox records and the orders, a third of a batch's work) runs
 * while another thread's batch holds it. */
static const char inventory_stock_sql[] =
    "SELECT sku, stock FROM inventory WHERE sku = ANY ($1::text[]) ORDER BY sku"
    " FOR NO KEY UPDATE";

/* Statement 3: the decisions. $1 order ids, $2 statuses, $3 reasons, $4
 * traceparents (one per decided order, in batch order); $5 order ids, $6
 * skus, $7 quantities of the confirmed orders' items. Only an order still
 * pending changes (u), and only its items move stock (rv, d, r); its
 * OrderConfirmed / OrderRejected event as inventory_sql writes it, in batch
 * order. Returns the ord of each decided order that was no longer pending.
 * The orders change by `id = ANY (the batch's ids)`, confirmed ones and
 * rejected ones apart, so no plan joins the batch to the table: joined to
 * x, a plan kept from statistics that made pending orders look rare
 * looped over the batch for every order (a Nested Loop with a Join Filter
 * casting each key: 50 ms a batch of 500, and a consumer that fell behind
 * stayed behind, its batches at their largest). */
static const char inventory_write_sql[] =
    "WITH x AS MATERIALIZED (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])"
    "                        WITH ORDINALITY AS x(order_key, status, reason, tp, ord)),"
    " uc AS (UPDATE orders o SET status = 'confirmed', reason = NULL, updated_at = now()"
    "        WHERE o.id = ANY ((SELECT array_agg(x.order_key::uuid) FROM x"
    "                            WHERE x.status = 'confirmed')::uuid[])"
    "          AND o.status = 'pending'"
    "        RETURNING o.id, o.status, o.reason, o.user_id, o.amount),"
    " ur AS (UPDATE orders o SET status = 'rejected', updated_at = now(),"
    "          reason = (SELECT x.reason FROM x WHERE x.order_key::uuid = o.id LIMIT 1)"
    "        WHERE o.id = ANY ((SELECT array_agg(x.order_key::uuid) FROM x"
    "                            WHERE x.status = 'rejected')::uuid[])"
    "          AND o.status = 'pending'"
    "        RETURNING o.id, o.status, o.reason, o.user_id, o.amount),"
    " u AS (SELECT * FROM uc UNION ALL SELECT * FROM ur),"
    " rv AS MATERIALIZED (SELECT i.order_key, i.sku, i.quantity"
    "       FROM unnest($5::text[], $6::text[], $7::int[]) AS i(order_key, sku, quantity)"
    "       WHERE i.order_key::uuid IN (SELECT id FROM u WHERE status = 'confirmed')),"
    " d AS (UPDATE inventory v SET stock = v.stock - s.q, updated_at = now()"
    "       FROM (SELECT sku, sum(quantity) AS q FROM rv GROUP BY sku) s WHERE v.sku = s.sku),"
    " r AS (INSERT INTO inventory_reservations (order_id, sku, quantity)"
    "       SELECT order_key::uuid, sku, quantity FROM rv),"
    " e AS (INSERT INTO outbox (id, topic, type, key, payload, traceparent, source)"
    "       SELECT outbox_uuid_v7(), '" ORDERS_TOPIC "',"
    "              CASE WHEN u.status = 'confirmed' THEN 'OrderConfirmed' ELSE 'OrderRejected' END,"
    "              x.order_key, ('{\"order_id\":' || to_json(x.order_key) || ',\"status\":' || "
    "to_json(u.status)"
    "                   || ',\"user_id\":' || to_json(u.user_id) || ',\"amount\":' || u.amount"
    "                   || CASE WHEN u.status = 'confirmed' THEN ''"
    "                      ELSE ',\"reason\":' || to_json(coalesce(u.reason, '')) END || "
    "'}')::json,"
    "              x.tp, '/inventory' FROM x JOIN u ON u.id = x.order_key::uuid ORDER BY x.ord)"
    " SELECT x.ord FROM x WHERE NOT EXISTS (SELECT 1 FROM u WHERE u.id = x.order_key::uuid)";

static const stmt_t inventory_stmts[] = {{"inventory_read", inventory_read_sql},
                                         {"inventory_stock", inventory_stock_sql},
                                         {"inventory_write", inventory_write_sql}};

typedef struct stock_s {
    const char *sku; /* in the statement's result */
    long long left;  /* what is left of its stock for the orders after this one */
} stock_t;

/* What apply_inventory decided for one order. */
typedef struct decision_s {
    int pend;             /* index in w->pend */
    const char *short_of; /* rejected: the sku without enough stock; NULL: confirmed */
} decision_t;

static int apply_inventory(worker_t *w, char *err, size_t err_size)
{
    int n = w->npend, nsent = 0, rc = APPLY_FAILED;
    int *sent = calloc((size_t)n, sizeof(int)); /* sent[k]: index in pend of element k + 1 */
    decision_t *dec = calloc((size_t)n, sizeof(*dec));
    stock_t *st = NULL;
    int nst = 0, ndec = 0, pending = 0;
    orders_arr_t ids = {0}, keys = {0}, dk = {0}, ds = {0}, dr = {0}, dt = {0}, rk = {0}, rs = {0},
                 rq = {0}, skus = {0};
    PGresult *r = NULL, *r2 = NULL, *r3 = NULL;
    if (!sent || !dec)
        goto nomem;
    nsent = pend_collect(w, sent, &ids, &keys);
    const char *p1[3] = {w->name, orders_arr_end(&ids), orders_arr_end(&keys)};
    if (!p1[1] || !p1[2])
        goto nomem;
    r = batch_statement(w, 0, &inventory_stmts[0], 3, p1, "inventory batch read", err, err_size);
    if (!r)
        goto out;
    int rows = PQntuples(r);
    /* The skus of the new, pending orders; then, under the lock, their
     * stock (st: one entry per sku, in sku order). */
    for (int row = 0; row < rows; row++) {
        if (strcmp(PQgetvalue(r, row, 1), "t") != 0 || PQgetisnull(r, row, 2) ||
            strcmp(PQgetvalue(r, row, 2), "pending") != 0)
            continue;
        pending = 1;
        if (!PQgetisnull(r, row, 3))
            orders_arr_add(&skus, PQgetvalue(r, row, 3));
    }
    if (pending) {
        const char *p3[1] = {orders_arr_end(&skus)};
        if (!p3[0])
            goto nomem;
        r3 = batch_statement(w, 1, &inventory_stmts[1], 1, p3, "inventory batch stock", err,
                             err_size);
        if (!r3)
            goto out;
        nst = PQntuples(r3);
        if (nst && !(st = calloc((size_t)nst, sizeof(*st))))
            goto nomem;
        for (int k = 0; k < nst; k++) {
            st[k].sku = PQgetvalue(r3, k, 0);
            st[k].left = atoll(PQgetvalue(r3, k, 1));
        }
    }
    for (int row = 0; row < rows;) {
        int ord = atoi(PQgetvalue(r, row, 0)), end = row + 1;
        while (end < rows && atoi(PQgetvalue(r, end, 0)) == ord)
            end++;
        if (ord < 1 || ord > nsent) {
            snprintf(err, err_size, "inventory batch read: row for message %d of %d", ord, nsent);
            goto out;
        }
        pending_t *p = &w->pend[sent[ord - 1]];
        int first = row;
        row = end;
        if (strcmp(PQgetvalue(r, first, 1), "t") != 0) {
            log_duplicate(w, p->id);
            continue;
        }
        if (PQgetisnull(r, first, 2) || strcmp(PQgetvalue(r, first, 2), "pending") != 0) {
            outbox__log(OUTBOX_LOG_WARN, w->name, "not_pending",
                        "order missing or already decided: nothing to do", "order_id", p->order,
                        NULL);
            continue; /* the inbox records it as handled */
        }
        /* The skus of the order, in sku order: the first one short (or not
         * in the inventory) rejects it. */
        const char *short_of = NULL;
        for (int k = first; k < end && !PQgetisnull(r, k, 3); k++) {
            const char *sku = PQgetvalue(r, k, 3);
            stock_t *s = NULL;
            for (int j = 0; j < nst && !s; j++)
                if (!strcmp(st[j].sku, sku))
                    s = &st[j];
            if (!s || s->left < atoll(PQgetvalue(r, k, 4))) {
                short_of = sku;
                break;
            }
        }
        char reason[160];
        if (short_of)
            snprintf(reason, sizeof(reason), "insufficient stock for %s", short_of);
        for (int k = first; !short_of && k < end && !PQgetisnull(r, k, 3); k++) {
            for (int j = 0; j < nst; j++)
                if (!strcmp(st[j].sku, PQgetvalue(r, k, 3)))
                    st[j].left -= atoll(PQgetvalue(r, k, 4));
            orders_arr_add(&rk, p->order);
            orders_arr_add(&rs, PQgetvalue(r, k, 3));
            orders_arr_add(&rq, PQgetvalue(r, k, 4));
        }
        dec[ndec].pend = sent[ord - 1];
        dec[ndec++].short_of = short_of;
        orders_arr_add(&dk, p->order);
        orders_arr_add(&ds, short_of ? "rejected" : "confirmed");
        orders_arr_add(&dr, short_of ? reason : NULL);
        orders_arr_add(&dt, p->tp);
    }
    if (ndec == 0) {
        rc = APPLY_OPEN; /* nothing to write: the hook commits the inbox records */
        goto out;
    }
    const char *p2[7] = {orders_arr_end(&dk), orders_arr_end(&ds), orders_arr_end(&dr),
                         orders_arr_end(&dt), orders_arr_end(&rk), orders_arr_end(&rs),
                         orders_arr_end(&rq)};
    for (int i = 0; i < 7; i++)
        if (!p2[i])
            goto nomem;
    rc = last_statement(w, &inventory_stmts[2], 7, p2, "inventory batch write", &r2, err, err_size);
    if (rc != APPLY_COMMITTED)
        goto out; /* not applied, or not known to be: no line (it comes with its redelivery) */
    /* The log lines, in batch order, once committed. */
    for (int i = 0; i < ndec; i++) {
        pending_t *p = &w->pend[dec[i].pend];
        int raced = 0;
        for (int k = 0; k < PQntuples(r2) && !raced; k++)
            raced = atoi(PQgetvalue(r2, k, 0)) == i + 1;
        if (raced) {
            outbox__log(OUTBOX_LOG_WARN, w->name, "not_pending",
                        "order missing or already decided: nothing to do", "order_id", p->order,
                        NULL);
        } else if (dec[i].short_of) {
            char reason[160];
            snprintf(reason, sizeof(reason), "insufficient stock for %s", dec[i].short_of);
            outbox__log(OUTBOX_LOG_WARN, w->name, "order_rejected", reason, "order_id", p->order,
                        "message_id", p->id, NULL);
        } else {
            outbox__log(OUTBOX_LOG_INFO, w->name, "order_confirmed", "stock deducted", "order_id",
                        p->order, "message_id", p->id, NULL);
        }
    }
    goto out;
nomem:
    snprintf(err, err_size, "out of memory");
    rc = APPLY_FAILED;
out:
    PQclear(r2);
    PQclear(r);  /* dec[].short_of points into it */
    PQclear(r3); /* st[].sku points into it */
    orders_arr_t *bufs[] = {&ids, &keys, &dk, &ds, &dr, &dt, &rk, &rs, &rq, &skus};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
        free(bufs[i]->p);
    free(st);
    free(dec);
    free(sent);
    return rc;
}

/* The email batch: one statement records the inbox entries ($1 consumer, $2
 * message ids), then the new ones are printed, in batch order, before the
 * COMMIT (a crash in between prints them again: at least once). Returns
 * ord, is_new per message. */
static const char email_record_sql[] =
    "WITH m AS MATERIALIZED (SELECT * FROM unnest($2::uuid[]) WITH ORDINALITY AS m(message_id, "
    "ord)),"
    " ib AS (INSERT INTO outbox_inbox (consumer, message_id)"
    "        SELECT $1, message_id FROM m ORDER BY ord ON CONFLICT DO NOTHING"
    "        RETURNING message_id)"
    " SELECT m.ord, ib.message_id IS NOT NULL FROM m LEFT JOIN ib ON ib.message_id = m.message_id"
    "  ORDER BY m.ord";

static const stmt_t email_stmts[] = {{"email_record", email_record_sql}};

static int apply_email(worker_t *w, char *err, size_t err_size)
{
    int n = w->npend, nsent = 0, rc = APPLY_FAILED;
    int *sent = calloc((size_t)n, sizeof(int));
    orders_arr_t ids = {0};
    PGresult *r = NULL;
    if (!sent) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    nsent = pend_collect(w, sent, &ids, NULL);
    const char *p[2] = {w->name, orders_arr_end(&ids)};
    if (!p[1]) {
        snprintf(err, err_size, "out of memory");
        goto out;
    }
    r = batch_statement(w, 0, &email_stmts[0], 2, p, "email batch inbox", err, err_size);
    if (!r)
        goto out;
    /* The duplicates' log lines first, then the emails (few writes, see
     * EMAIL_FMT), all before the COMMIT. */
    for (int k = 0; k < PQntuples(r); k++) {
        int ord = atoi(PQgetvalue(r, k, 0));
        if (ord >= 1 && ord <= nsent && strcmp(PQgetvalue(r, k, 1), "t") != 0)
            log_duplicate(w, w->pend[sent[ord - 1]].id);
    }
    emails_t out;
    emails_begin(&out);
    for (int k = 0; k < PQntuples(r); k++) {
        int ord = atoi(PQgetvalue(r, k, 0));
        if (ord < 1 || ord > nsent || strcmp(PQgetvalue(r, k, 1), "t") != 0)
            continue;
        pending_t *m = &w->pend[sent[ord - 1]];
        emails_add(&out, m->order, m->user, m->amount);
    }
    emails_end(&out);
    rc = APPLY_OPEN; /* printed: the hook commits */
out:
    PQclear(r);
    free(ids.p);
    free(sent);
    return rc;
}

/* The handler the consumer calls: the worker's, noting a failure inside a
 * batch (see batch_hook). */
static outbox_err_t handle(const outbox_delivery_t *d, void *opaque)
{
    worker_t *w = opaque;
    outbox_err_t rc = w->handler(d, w);
    if (rc != OUTBOX_OK && w->in_batch)
        w->failed = 1;
    return rc;
}

static void *run(void *arg)
{
    worker_t *w = arg;
    const char *topics[1] = {ORDERS_TOPIC};
    outbox_kit_thread_name("c-", w->name);
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
        /* Set-based batches open no savepoint per message: as many as a
         * poll reads (consumer_batch); one message per savepoint after a
         * failed apply: the library's cap. */
        outbox_consumer_set_batch_max(c, w->one_by_one ? 0 : w->batch_max);
        outbox_consumer_poll(c, 500, handle, w);
    }
    outbox_consumer_destroy(c);
    pend_reset(w);
    free(w->pend);
    w->pend = NULL;
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
            w->stmts = i == 0 ? inventory_stmts : email_stmts;
            w->nstmts = i == 0 ? 3 : 1;
            w->stop = &cs->stop;
            w->conf = outbox_conf_dup(conf);
            w->batches = outbox_kit_conf_bool(conf, "consumer_batch_transaction");
            w->batch_max = (int)outbox_kit_conf_int(conf, "consumer_batch");
            snprintf(w->url, sizeof(w->url), "%s", url);
            snprintf(w->instance, sizeof(w->instance), "%s-%s-%d-%d", w->name, host, (int)getpid(),
                     k + 1);
            if (!w->conf || pthread_create(&w->thread, NULL, run, w) != 0) {
                snprintf(errstr, errstr_size, "cannot start the %s consumer", w->name);
                orders_consumers_stop(cs, 0);
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

int orders_consumers_stop(orders_consumers_t *cs, int64_t timeout_ms)
{
    if (!cs)
        return 0;
    cs->stop = 1;
    int64_t deadline = timeout_ms > 0 ? outbox_kit_now_ms() + timeout_ms : 0;
    for (int i = 0; i < cs->nworkers; i++) {
        worker_t *w = &cs->workers[i];
        if (!w->started)
            continue;
        if (outbox_kit_join_consumer(w->thread, deadline, w->name, w->instance) != 0)
            return -1;
        w->started = 0;
    }
    for (int i = 0; i < cs->nworkers; i++)
        outbox_conf_destroy(cs->workers[i].conf);
    free(cs->workers);
    free(cs);
    return 0;
}
