/* AMQP fault test: RabbitMQ goes away twice in the middle of a run (first a
 * graceful stop, then SIGKILL) while events keep being committed and the
 * relay and an outbox consumer keep running. After the broker is back,
 * every committed event reaches the consumer at least once: nothing lost.
 * Duplicates (at-least-once) are allowed, counted and reported. */
#include <pthread.h>
#include <stdatomic.h>

#include "amqptest.h"

#define MAXEV 40000
#define NKEYS 20
#define TOPIC "payments"

static const char *g_ci;
static atomic_int stop_enqueue, stop_consume;
static atomic_int enqueued;
static long redelivered, consumer_errors;
static ta_seen_t seen;

static void *enqueuer(void *arg)
{
    (void)arg;
    PGconn *c = tu_connect(g_ci);
    while (!atomic_load(&stop_enqueue) && atomic_load(&enqueued) + 5 <= MAXEV) {
        ta_enqueue(c, TOPIC, atomic_load(&enqueued), 5, NKEYS, 5, NULL);
        atomic_fetch_add(&enqueued, 5);
        tu_sleep_ms(10);
    }
    PQfinish(c);
    return NULL;
}

static outbox_err_t handler(const outbox_delivery_t *d, void *opaque)
{
    (void)opaque;
    if (d->redelivered)
        redelivered++;
    ta_seen_add(&seen, ta_seq(d->env.data));
    return OUTBOX_OK;
}

static void *consumer(void *arg)
{
    outbox_consumer_t *cons = arg;
    while (!atomic_load(&stop_consume)) {
        if (outbox_consumer_poll(cons, 200, handler, NULL) != OUTBOX_OK) {
            consumer_errors++;
            tu_sleep_ms(200);
        }
    }
    return NULL;
}

int main(void)
{
    PGconn *db;
    g_ci = ta_setup_db("amqp_broker_restart", &db);
    const char *url = ta_start();
    char err[512];
    ta_seen_init(&seen, MAXEV);

    const char *topics[] = {TOPIC};
    outbox_conf_t *cconf = outbox_conf_new();
    outbox_consumer_t *cons =
        outbox_consumer_new(url, "ledger", "ledger-1", topics, 1, cconf, err, sizeof(err));
    CHECK(cons, "consumer_new: %s", err);
    CHECK(outbox_consumer_poll(cons, 10, handler, NULL) == OUTBOX_OK, "first poll: %s",
          outbox_consumer_errstr(cons));

    outbox_conf_t *conf = ta_relay_conf(g_ci, url, 3);
    ta_conf_set(conf, "backoff_base", "100ms");
    ta_conf_set(conf, "backoff_max", "1s");
    ta_conf_set(conf, "batch_size",
                "500"); /* confirm latency is per batch: drain the backlog in big ones */
    outbox_relay_t *relay = ta_relay_start(conf);
    pthread_t te, tc;
    pthread_create(&te, NULL, enqueuer, NULL);
    pthread_create(&tc, NULL, consumer, cons);

    tu_sleep_ms(1500);
    int before1 = atomic_load(&enqueued);
    long long t = tu_now_ms();
    ta_halt();
    printf("outage 1: graceful stop after %d events (took %lld ms)\n", before1, tu_now_ms() - t);
    tu_sleep_ms(1000);
    ta_restart();
    int after1 = atomic_load(&enqueued);
    tu_sleep_ms(1500);

    int before2 = atomic_load(&enqueued);
    ta_kill();
    printf("outage 2: SIGKILL after %d events\n", before2);
    tu_sleep_ms(500);
    ta_restart();
    tu_sleep_ms(1000);
    atomic_store(&stop_enqueue, 1);
    pthread_join(te, NULL);
    int total = atomic_load(&enqueued);
    printf("enqueued %d events (%d while the broker was stopped the first time)\n", total,
           after1 - before1);

    t = tu_now_ms();
    ta_wait_drained(db, 60000);
    long long drain_ms = tu_now_ms() - t;
    outbox_relay_destroy(relay);
    CHECK(tu_query_ll(db, "SELECT count(*) FROM outbox_dead_letter") == 0,
          "events were dead-lettered by an outage");

    long long end = tu_now_ms() + 30000;
    while (ta_seen_missing(&seen, total) > 0 && tu_now_ms() < end)
        tu_sleep_ms(100);
    tu_sleep_ms(500); /* late duplicates, for the count */
    atomic_store(&stop_consume, 1);
    pthread_join(tc, NULL);
    outbox_consumer_destroy(cons);
    outbox_conf_destroy(cconf);

    int missing = ta_seen_missing(&seen, total);
    if (missing) {
        int shown = 0;
        for (int i = 0; i < total && shown < 10; i++)
            if (!seen.count[i]) {
                fprintf(stderr, "missing event seq %d\n", i);
                shown++;
            }
    }
    CHECK(missing == 0, "%d of %d committed events never reached the consumer", missing, total);
    CHECK(seen.unknown == 0, "%ld messages with an unknown seq", seen.unknown);
    PQfinish(db);
    printf("PASS amqp_broker_restart: %d events committed across a graceful stop and a SIGKILL of "
           "RabbitMQ, all "
           "%d delivered (%ld deliveries: %ld duplicates, %ld flagged redelivered); consumer saw "
           "%ld broker errors "
           "and reconnected; drained %lld ms after the last restart\n",
           total, total, seen.total, seen.dups, redelivered, consumer_errors, drain_ms);
    return 0;
}
