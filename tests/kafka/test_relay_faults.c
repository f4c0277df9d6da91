/* Faults while the relay publishes to Kafka under a steady write load:
 * injected produce errors (not leader, timeouts, not enough replicas,
 * disconnects), a partition leader's broker going down with the leadership
 * moved to another broker (failover, while metadata answers "leader not
 * available"), the whole cluster down for 4 s, and a slow broker.
 *
 * Every fault waits until the relay is provably busy (events pending and a
 * batch held by a relay transaction in PostgreSQL) before it is injected,
 * and its effect is checked: injected errors are met by the relay's own
 * produce requests; while a broker is down the other brokers' partitions
 * keep growing; after the failover the moved partitions grow on their new
 * leader; while the whole cluster is down nothing is acknowledged and the
 * outbox grows; a slow broker's partitions still grow.
 *
 * Afterwards every committed event is in Kafka exactly where it belongs
 * (key -> one partition), per-key order holds (first occurrences in commit
 * order, duplicates only repeat what came before), nothing was
 * dead-lettered. */
#include <pthread.h>

#include "kafka_common.h"

#define MAX_EVENTS 20000
#define STEP 50
#define NKEYS 40
#define PARTS 6
#define WAIT_MS 20000

static const char *g_ci;
static _Atomic int g_enqueued, g_stop; /* the producer thread and the test */

/* Writes STEP events (transactions of 5) every 150 ms until told to stop. */
static void *writer(void *arg)
{
    (void)arg;
    PGconn *c = tu_connect(g_ci);
    for (int i = 0; i < MAX_EVENTS && !g_stop; i += STEP) {
        kt_enqueue(c, "payments", "PaymentCaptured", "acct-", i, i + STEP, NKEYS, 5);
        g_enqueued = i + STEP;
        tu_sleep_ms(150);
    }
    PQfinish(c);
    return NULL;
}

static long long g_t0;

static void note(const char *what)
{
    printf("[%5.1fs] %s (enqueued %d)\n", (double)(tu_now_ms() - g_t0) / 1000.0, what, g_enqueued);
    fflush(stdout);
}

/* Events acknowledged by the relay so far (all workers). */
static uint64_t published(outbox_relay_t *relay)
{
    uint64_t n = 0;
    for (int w = 0; w < outbox_relay_worker_count(relay); w++) {
        outbox_worker_stats_t st;
        outbox_relay_worker_stats(relay, w, &st);
        n += st.published;
    }
    return n;
}

/* Rows a relay session holds in an open transaction (a batch in flight),
 * seen through the rows' xmax and pg_locks, taking no lock ourselves. */
static long long inflight(PGconn *db)
{
    return tu_query_ll(
        db, "SELECT count(*) FROM outbox o"
            " JOIN pg_locks l ON l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock'"
            "  AND l.granted AND l.transactionid = o.xmax"
            " JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE a.application_name LIKE 'outbox-relay%'");
}

/* Waits until events are pending and a relay batch holds some of them. */
static void wait_busy(PGconn *db, const char *before)
{
    long long end = tu_now_ms() + WAIT_MS;
    while (tu_query_ll(db, "SELECT count(*) FROM outbox") == 0 || inflight(db) == 0) {
        CHECK(tu_now_ms() < end, "relay never busy (pending events being claimed) before %s",
              before);
        tu_sleep_ms(1);
    }
}

static void wait_published_beyond(outbox_relay_t *relay, uint64_t n, const char *after)
{
    long long end = tu_now_ms() + WAIT_MS;
    while (published(relay) <= n) {
        CHECK(tu_now_ms() < end, "relay acknowledged nothing more after %s (stuck at %llu)", after,
              (unsigned long long)n);
        tu_sleep_ms(20);
    }
}

/* Records in a partition so far (its high watermark), asked by a fresh
 * client each time: a long-lived one keeps asking a partition's old leader
 * after a failover (librdkafka 2.0 then waits past its own timeout). */
static const char *g_bootstraps;

static int64_t hwm(int partition)
{
    long long end = tu_now_ms() + WAIT_MS;
    for (;;) {
        char err[256];
        rd_kafka_conf_t *qc = rd_kafka_conf_new();
        CHECK(rd_kafka_conf_set(qc, "bootstrap.servers", g_bootstraps, err, sizeof(err)) ==
                      RD_KAFKA_CONF_OK &&
                  rd_kafka_conf_set(qc, "log_level", "0", err, sizeof(err)) == RD_KAFKA_CONF_OK,
              "%s", err);
        rd_kafka_t *q = rd_kafka_new(RD_KAFKA_CONSUMER, qc, err, sizeof(err));
        CHECK(q, "rd_kafka_new: %s", err);
        int64_t lo, hi;
        rd_kafka_resp_err_t e =
            rd_kafka_query_watermark_offsets(q, "payments", partition, &lo, &hi, 2000);
        rd_kafka_destroy(q);
        if (!e)
            return hi;
        CHECK(tu_now_ms() < end, "high watermark of payments/%d: %s", partition,
              rd_kafka_err2str(e));
        tu_sleep_ms(50);
    }
}

/* Waits until each partition in parts[0..n) has more records than before[]. */
static void wait_partitions_grow(const int *parts, int n, const int64_t *before, const char *what)
{
    long long end = tu_now_ms() + WAIT_MS;
    for (int i = 0; i < n; i++)
        while (hwm(parts[i]) <= before[i]) {
            CHECK(tu_now_ms() < end, "%s: partition %d got no record (still %lld)", what, parts[i],
                  (long long)before[i]);
            tu_sleep_ms(20);
        }
}

/* Pushes errs[0..n) onto broker b's Produce error stack, one by one. */
static void push_produce_errors(kt_cluster_t *cl, int b, const rd_kafka_resp_err_t *errs, int n)
{
    for (int i = 0; i < n; i++)
        CHECK(rd_kafka_mock_broker_push_request_error_rtts(cl->mc, b, 0 /* Produce */, 1, errs[i],
                                                           0) == RD_KAFKA_RESP_ERR_NO_ERROR,
              "push error onto broker %d", b);
}

/* Waits until the relay's produce requests met every error pushed. */
static void wait_errors_consumed(kt_cluster_t *cl, const char *what)
{
    long long end = tu_now_ms() + WAIT_MS;
    for (int b = 1; b <= 3; b++) {
        size_t left = 1;
        while (rd_kafka_mock_broker_error_stack_cnt(cl->mc, b, 0, &left) ==
                   RD_KAFKA_RESP_ERR_NO_ERROR &&
               left) {
            CHECK(tu_now_ms() < end,
                  "%s: %zu injected errors on broker %d never met a produce request", what, left,
                  b);
            tu_sleep_ms(10);
        }
    }
}

int main(void)
{
    PGconn *db;
    g_ci = kt_setup_db("kafka_relay_faults", &db);
    kt_cluster_t cl;
    kt_cluster_start(&cl, 3);
    kt_topic(&cl, "payments", PARTS, 3);
    for (int p = 0; p < PARTS; p++) /* leaders 1,2,3,1,2,3 */
        rd_kafka_mock_partition_set_leader(cl.mc, "payments", p, p % 3 + 1);
    g_bootstraps = cl.bootstraps;

    outbox_conf_t *conf = kt_relay_conf(g_ci, &cl);
    kt_conf_set(conf, "workers", "3");
    kt_conf_set(conf, "batch_size", "100");
    kt_conf_set(conf, "publish_timeout", "2s");
    kt_conf_set(conf, "backoff_base", "100ms");
    kt_conf_set(conf, "backoff_max", "1s");
    kt_conf_set(conf, "max_attempts", "100000"); /* an outage must never dead-letter */
    outbox_relay_t *relay = kt_relay_start(conf);

    g_t0 = tu_now_ms();
    pthread_t wt;
    pthread_create(&wt, NULL, writer, NULL);

    /* 1. Produce errors on every broker: not leader, timed out, not enough
     *    replicas, leader not available, disconnect. */
    static const rd_kafka_resp_err_t mix[] = {
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        RD_KAFKA_RESP_ERR__TRANSPORT,
        RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
    };
    wait_busy(db, "produce errors");
    note(
        "21 produce errors (7 per broker): not leader, timed out, not enough replicas, disconnect");
    for (int b = 1; b <= 3; b++)
        push_produce_errors(&cl, b, mix, (int)(sizeof(mix) / sizeof(mix[0])));
    wait_errors_consumed(&cl, "produce errors");
    note("every injected error met a relay produce request");
    wait_published_beyond(relay, published(relay), "the produce errors");

    /* 2. Broker 1 (leader of partitions 0 and 3) down; then failover. */
    static const int others[] = {1, 2, 4, 5}, moved[] = {0, 3};
    int64_t before[4];
    wait_busy(db, "broker 1 down");
    for (int i = 0; i < 4; i++)
        before[i] = hwm(others[i]);
    note("broker 1 down (leader of partitions 0 and 3)");
    rd_kafka_mock_broker_set_down(cl.mc, 1);
    wait_partitions_grow(others, 4, before, "other keys keep flowing while broker 1 is down");
    note("partitions 1, 2, 4, 5 kept growing");
    note(
        "failover: partitions 0 and 3 led by broker 2; metadata says leader not available for 1 s");
    rd_kafka_mock_topic_set_error(cl.mc, "payments", RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE);
    rd_kafka_mock_partition_set_leader(cl.mc, "payments", 0, 2);
    rd_kafka_mock_partition_set_leader(cl.mc, "payments", 3, 2);
    tu_sleep_ms(1000); /* the length of the metadata fault, not a wait for a state */
    rd_kafka_mock_topic_set_error(cl.mc, "payments", RD_KAFKA_RESP_ERR_NO_ERROR);
    int64_t at_failover[2] = {hwm(0), hwm(3)};
    wait_partitions_grow(moved, 2, at_failover,
                         "the relay follows the new leader of partitions 0 and 3");
    note("partitions 0 and 3 growing on broker 2; broker 1 back");
    rd_kafka_mock_broker_set_up(cl.mc, 1);

    /* 3. The whole cluster down for 4 s. A batch open at the cut may still
     *    acknowledge what Kafka confirmed before it, but only until its
     *    publish deadline (publish_timeout, 2 s); after that nothing may be
     *    acknowledged until a broker is back. */
    wait_busy(db, "cluster down");
    note("whole cluster down for 4 s");
    long long down_at = tu_now_ms();
    long long pending_down = tu_query_ll(db, "SELECT count(*) FROM outbox");
    for (int b = 1; b <= 3; b++)
        rd_kafka_mock_broker_set_down(cl.mc, b);
    tu_sleep_ms(2500); /* publish_timeout + 0.5 s: the batches open at the cut are over */
    uint64_t pub_down = published(relay);
    long long rest = down_at + 4000 - tu_now_ms();
    tu_sleep_ms(rest > 0 ? rest : 0); /* the rest of the outage */
    CHECK(published(relay) == pub_down, "%llu events acknowledged while no broker was up",
          (unsigned long long)(published(relay) - pub_down));
    long long pending_up = tu_query_ll(db, "SELECT count(*) FROM outbox");
    CHECK(pending_up > pending_down,
          "the outbox did not grow while the cluster was down (%lld -> %lld)", pending_down,
          pending_up);
    for (int b = 1; b <= 3; b++)
        rd_kafka_mock_broker_set_up(cl.mc, b);
    note("cluster back");
    wait_published_beyond(relay, pub_down, "the cluster came back");

    /* 4. Broker 3 slow (300 ms round trip); leaders back to 1,2,3. */
    static const int slow[] = {2, 5};
    wait_busy(db, "slow broker");
    note("broker 3 slow (300 ms round trip); leaders back to 1,2,3");
    int64_t at_slow[2] = {hwm(2), hwm(5)};
    rd_kafka_mock_partition_set_leader(cl.mc, "payments", 0, 1);
    rd_kafka_mock_partition_set_leader(cl.mc, "payments", 3, 1);
    rd_kafka_mock_broker_set_rtt(cl.mc, 3, 300);
    wait_partitions_grow(slow, 2, at_slow, "publishing through the slow broker 3");
    rd_kafka_mock_broker_set_rtt(cl.mc, 3, 0);
    note("broker 3's partitions kept growing; round trip back to 0");

    /* 5. Five disconnects on produce. */
    static const rd_kafka_resp_err_t cut[] = {RD_KAFKA_RESP_ERR__TRANSPORT,
                                              RD_KAFKA_RESP_ERR__TRANSPORT};
    wait_busy(db, "disconnects");
    note("5 disconnects on produce");
    push_produce_errors(&cl, 1, cut, 2);
    push_produce_errors(&cl, 2, cut, 2);
    push_produce_errors(&cl, 3, cut, 1);
    wait_errors_consumed(&cl, "disconnects");
    wait_published_beyond(relay, published(relay), "the disconnects");

    g_stop = 1;
    pthread_join(wt, NULL);
    int total = g_enqueued;
    note("writer done");
    kt_wait_drained(db, 30000);
    note("outbox drained");
    uint64_t acked = 0, failed = 0;
    for (int w = 0; w < outbox_relay_worker_count(relay); w++) {
        outbox_worker_stats_t st;
        outbox_relay_worker_stats(relay, w, &st);
        acked += st.published;
        failed += st.failed;
    }
    outbox_relay_destroy(relay);
    printf("relay: %llu acknowledged, %llu failed publish attempts (retried)\n",
           (unsigned long long)acked, (unsigned long long)failed);
    CHECK(acked >= (uint64_t)total, "acknowledged %llu < %d", (unsigned long long)acked, total);
    CHECK(tu_query_ll(db, "SELECT count(*) FROM outbox_dead_letter") == 0,
          "an outage dead-lettered events");

    long n;
    kt_rec_t *recs = kt_kcat_read(&cl, "payments", 1, &n);
    long dups = kt_check(recs, n, "acct-", total, NKEYS);
    printf("payments: %ld records for %d events: none lost, %ld duplicates (at least once), "
           "per-key order kept\n",
           n, total, dups);
    kt_recs_free(recs, n);
    PQfinish(db);
    kt_cluster_stop(&cl);
    printf("PASS kafka_relay_faults\n");
    return 0;
}
