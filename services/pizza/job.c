/* pizza-job: the pizza pipeline's job service (seed 004, "Job Service").
 *
 * Seed: "polls the outbox table for new events with status pending. For
 * each event, it simulates payment and delivery, then publishes the event
 * payload to the pizza-orders topic in Redis. After successful publishing,
 * it marks the event as completed."
 *
 * Here: the library's relay, embedded, polls pizza_order_outbox
 * (outbox_table=pizza_order_outbox, ack_mode=mark). Its sink is this
 * process's own loopback endpoint POST /steps (the webhook sink), which for
 * each event
 *   1. payment   (pizza_orders: pending -> paid)      delay + failure rate
 *   2. delivery  (pizza_orders: paid -> delivered)    delay + failure rate
 *   3. publishes the event (the CloudEvents document as the relay built it)
 *      to the Redis stream pizza-orders (XADD, the redis sink's layout) and
 *      sets the order completed;
 * and answers 200, after which the relay marks the outbox row processed
 * (the view pizza_order_events shows it as "completed"). A failed step
 * answers 503: the relay retries the event with its backoff (backoff_base,
 * doubling, backoff_max) and, after max_attempts, dead-letters it. A step
 * already done is not done again (the order's status records it), so a
 * retry after a failed delivery does not pay twice. A crash after step 3
 * and before the mark publishes the event again on restart, with the same
 * event id: pizza-consumer's inbox drops the copy.
 *
 * Why a loopback endpoint: the relay's sinks are chosen by URL and a step
 * that sleeps has no place inside a relay transaction's publish call other
 * than through a sink; the webhook sink gives per-event outcomes, retries,
 * dead letters and the publish timeout for free. See docs/PIZZA.md. */
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pizza.h"

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    if (g_stop++)
        _exit(1);
}

enum { O_PAY_DELAY, O_PAY_FAIL, O_DEL_DELAY, O_DEL_FAIL, O_STEPS_PORT, O__COUNT };
static pizza_opt_t g_opts[O__COUNT] = {
    {"payment-delay", "PIZZA_PAYMENT_DELAY", "200ms", "time the simulated payment takes", NULL},
    {"payment-fail-rate", "PIZZA_PAYMENT_FAIL_RATE", "0.1",
     "fraction (0..1) of payments that fail (retried with the relay's backoff)", NULL},
    {"delivery-delay", "PIZZA_DELIVERY_DELAY", "300ms", "time the simulated delivery takes", NULL},
    {"delivery-fail-rate", "PIZZA_DELIVERY_FAIL_RATE", "0.1",
     "fraction (0..1) of deliveries that fail (retried with the relay's backoff)", NULL},
    {"steps-port", "PIZZA_JOB_STEPS_PORT", "0",
     "loopback port of the job's internal steps endpoint (0: any free port)", NULL},
};

typedef struct job_s {
    const outbox_conf_t *conf;
    outbox_dbpool_t *pool;
    int64_t pay_delay_ms, del_delay_ms;
    double pay_fail, del_fail;
    pthread_mutex_t redis_lock;
    redisContext *redis; /* under redis_lock; NULL until connected */
} job_t;

static void usage(FILE *fp)
{
    fprintf(fp, "Usage: pizza-job [OPTIONS]\n"
                "\n"
                "The pizza pipeline's job (seed 004): takes the pending events of\n"
                "pizza_order_outbox (the library's relay, ack_mode=mark), simulates payment and\n"
                "delivery (each with a delay and a failure rate; failures are retried with the\n"
                "relay's backoff), publishes each order to the Redis stream pizza-orders and\n"
                "marks its event processed (\"completed\" in the view pizza_order_events).\n"
                "Every option can also be set by the environment variable shown; flags win.\n"
                "Defaults that differ for the job: OUTBOX_TABLE=pizza_order_outbox,\n"
                "OUTBOX_ACK_MODE=mark, OUTBOX_BATCH_SIZE=8 (a batch's steps must fit in\n"
                "publish_timeout). The relay's sink is the job's own steps endpoint; the Redis\n"
                "it publishes to is REDIS_ADDR (OUTBOX_SINK is not used).\n"
                "\n"
                "Pipeline options:\n");
    pizza_opts_help(fp, g_opts, O__COUNT);
    fprintf(fp, "\n");
    outbox_kit_conf_print_help(fp, OUTBOX_KIT_SCOPE_DB | OUTBOX_KIT_SCOPE_RELAY |
                                       OUTBOX_KIT_SCOPE_SINK | OUTBOX_KIT_SCOPE_LOG);
    fprintf(fp, "\nExample:\n"
                "  DATABASE_URL=postgres://app@127.0.0.1/app REDIS_ADDR=127.0.0.1:6379 \\\n"
                "    pizza-job --payment-fail-rate 0.2 --delivery-delay 1s\n");
}

/* A uniform number in [0, 1), per thread. */
static double chance(void)
{
    static __thread unsigned seed;
    if (!seed)
        seed = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)pthread_self() ^ (unsigned)getpid();
    return (double)rand_r(&seed) / ((double)RAND_MAX + 1.0);
}

/* Runs one parameterised statement; the rows it changed or returned (>= 0),
 * or -1 with err set. *out gets the first column of the first row when out
 * is not NULL ("" if none). */
static int run(PGconn *c, const char *sql, int n, const char *const *p, char *out, size_t out_size,
               char *err, size_t err_size)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, p, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        snprintf(err, err_size, "%s", PQresultErrorMessage(r));
        err[strcspn(err, "\n")] = '\0';
        PQclear(r);
        return -1;
    }
    if (out)
        snprintf(out, out_size, "%s",
                 st == PGRES_TUPLES_OK && PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "");
    int rows = st == PGRES_TUPLES_OK ? PQntuples(r) : atoi(PQcmdTuples(r));
    PQclear(r);
    return rows;
}

/* XADD pizza-orders * id <event id> type <type> event <document>: the
 * layout of the library's redis sink, so outbox consumers read it.
 * 0 or -1 with err set. */
static int publish(job_t *job, const char *id, const char *type, const char *doc, size_t len,
                   char *err, size_t err_size)
{
    pthread_mutex_lock(&job->redis_lock);
    int ok = 0;
    for (int attempt = 0; attempt < 2 && !ok; attempt++) {
        if (!job->redis)
            job->redis = outbox_kit_redis_connect(job->conf, 3000, err, err_size);
        if (!job->redis)
            break;
        redisReply *x = redisCommand(job->redis, "XADD %s * id %s type %s event %b", PIZZA_TOPIC,
                                     id, type, doc, len);
        if (x && x->type == REDIS_REPLY_STRING) {
            ok = 1;
        } else {
            snprintf(err, err_size, "XADD %s: %s", PIZZA_TOPIC,
                     x ? (x->str ? x->str : "unexpected reply") : job->redis->errstr);
            if (!x) { /* connection broken: reconnect once */
                redisFree(job->redis);
                job->redis = NULL;
            }
        }
        if (x)
            freeReplyObject(x);
        if (x)
            break; /* Redis answered with an error: retrying now will not help */
    }
    pthread_mutex_unlock(&job->redis_lock);
    return ok ? 0 : -1;
}

/* The two simulated steps. Each names its own columns in fixed statements
 * (no SQL is built from strings). */
typedef enum { STEP_PAYMENT = 0, STEP_DELIVERY } step_kind_t;

static const char *const step_failed_sql[] = {
    "UPDATE pizza_orders SET payment_attempts = payment_attempts + 1, last_error = $3,"
    " updated_at = now() WHERE id = $1::uuid AND status = $2",
    "UPDATE pizza_orders SET delivery_attempts = delivery_attempts + 1, last_error = $3,"
    " updated_at = now() WHERE id = $1::uuid AND status = $2"};
static const char *const step_done_sql[] = {
    "UPDATE pizza_orders SET payment_attempts = payment_attempts + 1, status = $3,"
    " paid_at = now(), updated_at = now() WHERE id = $1::uuid AND status = $2",
    "UPDATE pizza_orders SET delivery_attempts = delivery_attempts + 1, status = $3,"
    " delivered_at = now(), updated_at = now() WHERE id = $1::uuid AND status = $2"};

/* One simulated step: sleeps delay_ms, then fails with probability rate.
 * On success moves the order from `from` to `to` (setting the step's time
 * column to now()); on failure counts the attempt and records why. Returns
 * 1 done, 0 failed (why set), -1 database error (err set), 2 when the
 * order is no longer at `from`: another job did the step meanwhile (this
 * one was frozen past its relay transaction's end and another took the
 * event), so this one did not do it. */
static int step(PGconn *c, const char *order_id, const char *from, const char *to, step_kind_t kind,
                int64_t delay_ms, double rate, const char *failure, char *err, size_t err_size)
{
    if (delay_ms > 0)
        usleep((useconds_t)(delay_ms * 1000));
    int failed = rate > 0 && chance() < rate;
    const char *sql = failed ? step_failed_sql[kind] : step_done_sql[kind];
    const char *p[3] = {order_id, from, failed ? failure : to};
    int rows = run(c, sql, 3, p, NULL, 0, err, err_size);
    if (rows < 0)
        return -1;
    return rows == 0 ? 2 : failed ? 0 : 1;
}

static void steps(outbox_http_req_t *req, outbox_http_resp_t *resp, void *opaque)
{
    job_t *job = opaque;
    json_t *doc = req->json;
    const char *id = json_string_value(json_object_get(doc, "id"));
    const char *type = json_string_value(json_object_get(doc, "type"));
    const char *order = json_string_value(json_object_get(doc, "subject"));
    if (!id || !type || !outbox_uuid_valid(order)) {
        outbox__log(OUTBOX_LOG_ERROR, "pizza-job", "bad_event",
                    "event without id, type or an order id subject: dead-lettered", "event_id",
                    id ? id : "(none)", NULL);
        outbox__http_problem(req, resp, 422, "bad-event", NULL,
                             "the event needs id, type and subject (the order id)");
        return;
    }
    char err[512], status[32];
    PGconn *c = outbox__dbpool_get(job->pool, 5000, err, sizeof(err));
    if (!c) {
        outbox__log(OUTBOX_LOG_WARN, "pizza-job", "db_down", err, "order_id", order, NULL);
        outbox__http_problem(req, resp, 503, "database-unavailable", NULL, "%s", err);
        return;
    }
    const char *p1[1] = {order};
    if (run(c, "SELECT status FROM pizza_orders WHERE id = $1::uuid", 1, p1, status, sizeof(status),
            err, sizeof(err)) < 0)
        goto dberr;
    if (!status[0]) {
        outbox__log(OUTBOX_LOG_ERROR, "pizza-job", "order_missing",
                    "no pizza_orders row for this event: dead-lettered", "order_id", order,
                    "event_id", id, NULL);
        outbox__http_problem(req, resp, 422, "order-not-found", NULL, "no pizza order %s", order);
        goto done;
    }
    const char *was = strcmp(status, "completed") ? NULL : "completed";
    if (!strcmp(status, "pending")) {
        int s = step(c, order, "pending", "paid", STEP_PAYMENT, job->pay_delay_ms, job->pay_fail,
                     "payment declined (simulated)", err, sizeof(err));
        if (s < 0)
            goto dberr;
        if (s == 2)
            goto moved;
        if (s == 0) {
            outbox__log(OUTBOX_LOG_WARN, "pizza-job", "payment_failed",
                        "payment declined (simulated): retried with backoff", "order_id", order,
                        NULL);
            outbox__http_problem(req, resp, 503, "payment-failed", NULL,
                                 "payment for order %s declined (simulated); retry later", order);
            goto done;
        }
        outbox__log(OUTBOX_LOG_INFO, "pizza-job", "payment_ok", "payment accepted", "order_id",
                    order, NULL);
        snprintf(status, sizeof(status), "paid");
    }
    if (!strcmp(status, "paid")) {
        int s = step(c, order, "paid", "delivered", STEP_DELIVERY, job->del_delay_ms, job->del_fail,
                     "delivery failed (simulated)", err, sizeof(err));
        if (s < 0)
            goto dberr;
        if (s == 2)
            goto moved;
        if (s == 0) {
            outbox__log(OUTBOX_LOG_WARN, "pizza-job", "delivery_failed",
                        "delivery failed (simulated): retried with backoff", "order_id", order,
                        NULL);
            outbox__http_problem(req, resp, 503, "delivery-failed", NULL,
                                 "delivery of order %s failed (simulated); retry later", order);
            goto done;
        }
        outbox__log(OUTBOX_LOG_INFO, "pizza-job", "delivered", "pizza delivered", "order_id", order,
                    NULL);
    }
    if (publish(job, id, type, req->body, req->body_len, err, sizeof(err))) {
        outbox__log(OUTBOX_LOG_WARN, "pizza-job", "publish_failed", err, "order_id", order,
                    "event_id", id, NULL);
        outbox__http_problem(req, resp, 503, "redis-unavailable", NULL, "%s", err);
        goto done;
    }
    int done = run(c,
                   "UPDATE pizza_orders SET status = 'completed', completed_at = now(),"
                   " updated_at = now() WHERE id = $1::uuid AND status = 'delivered'",
                   1, p1, NULL, 0, err, sizeof(err));
    if (done < 0)
        goto dberr; /* published: the retry publishes again, the consumer drops the copy */
    if (done == 0 && !was)
        was = "completed"; /* another job completed it meanwhile: this was a re-publish */
    char msg[128];
    snprintf(msg, sizeof(msg), "Order %s published to %s%s", order, PIZZA_TOPIC,
             was ? " again (it was completed before: a re-publish after a restart)" : "");
    outbox__log(OUTBOX_LOG_INFO, "pizza-job", was ? "republished" : "completed", msg, "order_id",
                order, "event_id", id, NULL);
    outbox__http_reply_raw(resp, 200, "application/json", "{\"status\":\"completed\"}", 22);
    goto done;
moved:
    /* Another job moved the order on while this one waited (frozen past its
     * relay transaction, the event taken by another relay): the step was
     * not done here. The answer fails the event; if it is still this
     * relay's, its retry takes the order where it is now. */
    outbox__log(OUTBOX_LOG_INFO, "pizza-job", "step_taken",
                "another job did this step meanwhile: not done again here", "order_id", order,
                "event_id", id, NULL);
    outbox__http_problem(req, resp, 503, "order-moved-on", NULL,
                         "order %s moved on while this step ran; retry", order);
    goto done;
dberr:
    outbox__log(OUTBOX_LOG_ERROR, "pizza-job", "db_error", err, "order_id", order, NULL);
    outbox__http_problem(req, resp, 503, "database-error", NULL, "%s", err);
done:
    outbox__dbpool_put(job->pool, c);
}

static const outbox_http_route_t routes[] = {{"POST", "/steps", steps, 1}, {NULL, NULL, NULL, 0}};

static int parse_opts(job_t *job)
{
    if (pizza_parse_ms(g_opts[O_PAY_DELAY].value, &job->pay_delay_ms) ||
        pizza_parse_ms(g_opts[O_DEL_DELAY].value, &job->del_delay_ms)) {
        fprintf(stderr,
                "pizza-job: a step delay must be a duration such as 250ms or 2s (got "
                "\"%s\" / \"%s\")\n",
                g_opts[O_PAY_DELAY].value, g_opts[O_DEL_DELAY].value);
        return -1;
    }
    if (pizza_parse_rate(g_opts[O_PAY_FAIL].value, &job->pay_fail) ||
        pizza_parse_rate(g_opts[O_DEL_FAIL].value, &job->del_fail)) {
        fprintf(stderr,
                "pizza-job: a failure rate must be a number from 0 to 1 (got \"%s\" / "
                "\"%s\")\n",
                g_opts[O_PAY_FAIL].value, g_opts[O_DEL_FAIL].value);
        return -1;
    }
    if (job->pay_fail >= 1 || job->del_fail >= 1)
        fprintf(stderr, "pizza-job: warning: a failure rate of 1 fails every order; they end "
                        "in the dead letters after max_attempts\n");
    return 0;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--version")) {
            printf("pizza-job %s\n", OUTBOX_VERSION_STR);
            return 0;
        }
    char err[1024];
    if (pizza_opts_take(g_opts, O__COUNT, &argc, argv, err, sizeof(err))) {
        fprintf(stderr, "pizza-job: %s (see --help)\n", err);
        return 2;
    }
    /* The job's own defaults; the environment and flags still win. */
    setenv("OUTBOX_TABLE", PIZZA_TABLE, 0);
    setenv("OUTBOX_ACK_MODE", "mark", 0);
    setenv("OUTBOX_BATCH_SIZE", "8", 0);
    int rc;
    outbox_conf_t *conf = outbox_kit_conf_load("pizza-job", argc, argv, usage, NULL, &rc);
    if (!conf)
        return rc;
    job_t job = {.conf = conf, .redis_lock = PTHREAD_MUTEX_INITIALIZER};
    if (parse_opts(&job)) {
        outbox_conf_destroy(conf);
        return 2;
    }
    int64_t steps_port = strtoll(g_opts[O_STEPS_PORT].value, NULL, 10);
    outbox_kit_conf_log(conf, "pizza-job", OUTBOX_KIT_SCOPE_DB | OUTBOX_KIT_SCOPE_RELAY);
    outbox__log(OUTBOX_LOG_INFO, "pizza-job", "steps_config", "simulated steps", "payment_delay",
                g_opts[O_PAY_DELAY].value, "payment_fail_rate", g_opts[O_PAY_FAIL].value,
                "delivery_delay", g_opts[O_DEL_DELAY].value, "delivery_fail_rate",
                g_opts[O_DEL_FAIL].value, NULL);
    outbox_kit_on_stop_signals(on_signal);

    PGconn *db = pizza_connect(conf, "pizza-job", "pizza-job", &g_stop);
    if (!db || pizza_migrate(db, "pizza-job") != 0) {
        PQfinish(db);
        outbox_conf_destroy(conf);
        return 1;
    }
    PQfinish(db);
    outbox__log(OUTBOX_LOG_INFO, "pizza-job", "db_connected", "Connected to database successfully",
                NULL);

    rc = 1;
    outbox_relay_t *relay = NULL;
    outbox_http_t *http = NULL;
    job.pool = outbox__dbpool_new(outbox_kit_conf_database_url(conf),
                                  (int)outbox_kit_conf_int(conf, "workers") + 2, "pizza-job steps");
    outbox_http_opts_t opts = {.name = "pizza-job",
                               .addr = "127.0.0.1",
                               .port = (int)steps_port,
                               .max_body = 1024 * 1024,
                               .max_connections = 256,
                               .timeout_s = 60,
                               .routes = routes,
                               .opaque = &job};
    if (!job.pool || !(http = outbox__http_start(&opts, err, sizeof(err)))) {
        outbox__log(OUTBOX_LOG_ERROR, "pizza-job", "listen_failed",
                    job.pool ? err : "out of memory", NULL);
        goto out;
    }
    char sink[64];
    snprintf(sink, sizeof(sink), "http://127.0.0.1:%d/steps", outbox__http_port(http));
    outbox_conf_t *rconf = outbox_conf_dup(conf);
    if (!rconf || outbox_conf_set(rconf, "sink", sink, err, sizeof(err)) ||
        outbox_conf_set(rconf, "content_mode", "structured", err, sizeof(err)) ||
        outbox_conf_set(rconf, "webhook_batch", "false", err, sizeof(err)) ||
        !(relay = outbox_relay_new(rconf, err, sizeof(err)))) {
        outbox_conf_destroy(rconf);
        outbox__log(OUTBOX_LOG_ERROR, "pizza-job", "relay_failed", rconf ? err : "out of memory",
                    NULL);
        goto out;
    }
    if (outbox_relay_start(relay, err, sizeof(err))) {
        outbox__log(OUTBOX_LOG_ERROR, "pizza-job", "relay_failed", err, NULL);
        goto out;
    }
    outbox__log(OUTBOX_LOG_INFO, "pizza-job", "started",
                "Job started: polling pizza_order_outbox for pending events", "table",
                outbox_kit_conf_str(conf, "outbox_table"), "ack_mode",
                outbox_kit_conf_str(conf, "ack_mode"), "topic", PIZZA_TOPIC, "redis",
                outbox_kit_conf_str(conf, "redis_addr"), "steps", sink, NULL);
    rc = 0;
    while (!g_stop) {
        const char *fatal = outbox_relay_fatal(relay);
        if (fatal) {
            outbox__log(OUTBOX_LOG_ERROR, "pizza-job", "relay_stopped", fatal, NULL);
            rc = 1;
            break;
        }
        usleep(100 * 1000);
    }
    outbox__log(OUTBOX_LOG_INFO, "pizza-job", "shutting_down",
                "stop requested: finishing the batches in flight", NULL);
out:;
    int64_t shutdown_ms = outbox_kit_conf_ms(conf, "shutdown_timeout");
    if (relay) {
        outbox_relay_stop(relay);
        if (outbox_relay_wait(relay, (int)shutdown_ms) == OUTBOX_ERR_TIMEOUT) {
            outbox__log(OUTBOX_LOG_WARN, "pizza-job", "shutdown_timeout",
                        "batches still in flight: exiting; they roll back and are retried later",
                        NULL);
            _exit(rc);
        }
        outbox_relay_destroy(relay);
    }
    outbox__http_stop(http, shutdown_ms);
    outbox__dbpool_destroy(job.pool);
    if (job.redis)
        redisFree(job.redis);
    outbox_conf_destroy(conf);
    outbox__log(OUTBOX_LOG_INFO, "pizza-job", "stopped", "stopped cleanly", NULL);
    return rc;
}
