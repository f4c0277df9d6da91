/* AMQP consumer + inbox: each effect happens exactly once despite
 * redelivery. The relay publishes N events; consumer instance A (a child
 * process) applies effects in transactions with outbox_inbox_record() and
 * is killed (_exit) right after committing its K-th message, before the
 * ack: RabbitMQ redelivers that message and A's prefetched ones to
 * instance B. B also fails every 7th message after committing (nack +
 * requeue: redelivered again). At the end every event has exactly one
 * effect row with n = 1, and the redeliveries were seen and suppressed. */
#include <sys/wait.h>

#include "amqptest.h"

#define N 1000
#define NKEYS 20
#define K 300
#define TOPIC "stock"
#define GROUP "inventory"

typedef struct ctx_s {
    PGconn *db;
    int crash_after; /* >0: _exit after committing this many */
    int fail_every;  /* >0: return an error after committing every n-th */
    long handled, applied, suppressed, redelivered, injected;
} ctx_t;

static outbox_err_t handler(const outbox_delivery_t *d, void *opaque)
{
    ctx_t *x = opaque;
    char err[512];
    int is_new = 0;
    x->handled++;
    if (d->redelivered)
        x->redelivered++;
    PQclear(tu_exec(x->db, "BEGIN"));
    if (outbox_inbox_record(x->db, GROUP, d->env.id, &is_new, err, sizeof(err)) != OUTBOX_OK) {
        fprintf(stderr, "inbox: %s\n", err);
        PQclear(PQexec(x->db, "ROLLBACK"));
        return OUTBOX_ERR_DB;
    }
    if (is_new) {
        const char *params[] = {d->env.id};
        PGresult *r = PQexecParams(x->db,
                                   "INSERT INTO effects (msg_id, n) VALUES ($1, 1) "
                                   "ON CONFLICT (msg_id) DO UPDATE SET n = effects.n + 1",
                                   1, NULL, params, NULL, NULL, 0);
        CHECK(PQresultStatus(r) == PGRES_COMMAND_OK, "effect: %s", PQerrorMessage(x->db));
        PQclear(r);
        x->applied++;
    } else {
        x->suppressed++;
    }
    PQclear(tu_exec(x->db, "COMMIT"));
    if (x->crash_after > 0 && x->handled >= x->crash_after)
        _exit(0); /* crash between commit and ack */
    if (x->fail_every > 0 && x->handled % x->fail_every == 0) {
        x->injected++;
        return OUTBOX_ERR_DB; /* e.g. lost the DB after committing: nack, requeue */
    }
    return OUTBOX_OK;
}

static outbox_consumer_t *make_consumer(const char *url, const char *name)
{
    char err[512];
    const char *topics[] = {TOPIC};
    outbox_conf_t *conf = outbox_conf_new();
    ta_conf_set(conf, "amqp_prefetch", "20");
    outbox_consumer_t *c = outbox_consumer_new(url, GROUP, name, topics, 1, conf, err, sizeof(err));
    outbox_conf_destroy(conf);
    CHECK(c, "consumer_new: %s", err);
    return c;
}

int main(void)
{
    PGconn *db;
    const char *ci = ta_setup_db("amqp_consumer_inbox_once", &db);
    PQclear(tu_exec(db, "CREATE TABLE effects (msg_id text PRIMARY KEY, n int NOT NULL)"));
    const char *url = ta_start();

    /* Declare the group's queue, then publish. */
    outbox_consumer_t *b = make_consumer(url, "inventory-b");
    ctx_t cb = {.db = db, .fail_every = 7};
    CHECK(outbox_consumer_poll(b, 10, handler, &cb) == OUTBOX_OK, "first poll: %s",
          outbox_consumer_errstr(b));
    CHECK(cb.handled == 0, "messages before anything was published");
    outbox_consumer_destroy(b);

    ta_enqueue(db, TOPIC, 0, N, NKEYS, 100, NULL);
    outbox_relay_t *relay = ta_relay_start(ta_relay_conf(ci, url, 2));
    ta_wait_drained(db, 60000);
    outbox_relay_destroy(relay);

    /* Instance A in a child process; it dies after committing K. */
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        ta_server.dir[0] = '\0'; /* the parent owns the broker */
        ctx_t ca = {.db = tu_connect(ci), .crash_after = K};
        outbox_consumer_t *a = make_consumer(url, "inventory-a");
        long long end = tu_now_ms() + 30000;
        while (tu_now_ms() < end)
            outbox_consumer_poll(a, 200, handler, &ca);
        _exit(3); /* never reached K */
    }
    int st = tu_wait(pid, 40000);
    CHECK(st == 0, "consumer A should have crashed after %d messages (status %d)", K, st);
    long after_a = tu_query_ll(db, "SELECT count(*) FROM effects");
    CHECK(after_a == K, "A applied %ld effects, want %d", after_a, K);

    /* Instance B takes over. */
    b = make_consumer(url, "inventory-b");
    long long end = tu_now_ms() + 40000;
    while (tu_now_ms() < end) {
        CHECK(outbox_consumer_poll(b, 200, handler, &cb) == OUTBOX_OK, "poll: %s",
              outbox_consumer_errstr(b));
        if (tu_query_ll(db, "SELECT count(*) FROM effects") == N &&
            cb.handled >= N - K + cb.injected)
            break;
    }
    /* Drain stragglers (requeued duplicates) so nothing is left unacked. */
    for (int i = 0; i < 5; i++)
        CHECK(outbox_consumer_poll(b, 200, handler, &cb) == OUTBOX_OK, "poll: %s",
              outbox_consumer_errstr(b));
    outbox_consumer_destroy(b);

    long effects = tu_query_ll(db, "SELECT count(*) FROM effects");
    long twice = tu_query_ll(db, "SELECT count(*) FROM effects WHERE n <> 1");
    long inbox = tu_query_ll(db, "SELECT count(*) FROM outbox_inbox");
    CHECK(effects == N, "%ld effects for %d events", effects, N);
    CHECK(twice == 0, "%ld effects applied more than once", twice);
    CHECK(inbox == N, "%ld inbox rows for %d events", inbox, N);
    CHECK(cb.suppressed >= 1 + cb.injected,
          "B suppressed %ld redeliveries; expected at least the crashed one + %ld", cb.suppressed,
          cb.injected);
    CHECK(cb.redelivered >= cb.suppressed, "redelivered flag missing (%ld flagged, %ld suppressed)",
          cb.redelivered, cb.suppressed);
    PQfinish(db);
    printf("PASS amqp_consumer_inbox_once: %d events, consumer A crashed after committing %d "
           "(before the ack), "
           "B handled %ld deliveries (%ld flagged redelivered, %ld nacked on purpose after "
           "commit), suppressed %ld "
           "duplicate effects via the inbox; every effect applied exactly once\n",
           N, K, cb.handled, cb.redelivered, cb.injected, cb.suppressed);
    return 0;
}
