/* Faults while the relay publishes to Kafka under a steady write load:
 * injected produce errors (not leader, timeouts, not enough replicas,
 * disconnects), a partition leader's broker going down with the leadership
 * moved to another broker (failover, while metadata answers "leader not
 * available"), the whole cluster down for 3 s, and a
 * slow broker. Afterwards every committed event is in Kafka exactly where it
 * belongs (key -> one partition), per-key order holds (first occurrences in
 * commit order, duplicates only repeat what came before), nothing was
 * dead-lettered. */
#include <pthread.h>

#include "kafka_common.h"

#define TOTAL 4000
#define NKEYS 40
#define PARTS 6

static const char *g_ci;
static volatile int g_enqueued;

/* Writes TOTAL events over ~12 s in transactions of 5. */
static void *writer(void *arg)
{
    (void)arg;
    PGconn *c = tu_connect(g_ci);
    for (int i = 0; i < TOTAL; i += 50) {
        kt_enqueue(c, "payments", "PaymentCaptured", "acct-", i, i + 50, NKEYS, 5);
        g_enqueued = i + 50;
        tu_sleep_ms(150);
    }
    PQfinish(c);
    return NULL;
}

static void at(long long t0, long long ms)
{
    long long d = t0 + ms - tu_now_ms();
    if (d > 0)
        tu_sleep_ms((long)d);
}

static void note(long long t0, const char *what)
{
    printf("[%5.1fs] %s (enqueued %d)\n", (double)(tu_now_ms() - t0) / 1000.0, what, g_enqueued);
    fflush(stdout);
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

    outbox_conf_t *conf = kt_relay_conf(g_ci, &cl);
    kt_conf_set(conf, "workers", "3");
    kt_conf_set(conf, "batch_size", "100");
    kt_conf_set(conf, "publish_timeout", "2s");
    kt_conf_set(conf, "backoff_base", "100ms");
    kt_conf_set(conf, "backoff_max", "1s");
    kt_conf_set(conf, "max_attempts", "100000"); /* an outage must never dead-letter */
    outbox_relay_t *relay = kt_relay_start(conf);

    long long t0 = tu_now_ms();
    pthread_t wt;
    pthread_create(&wt, NULL, writer, NULL);

    at(t0, 1000);
    note(t0, "20 produce errors: not leader, timed out, not enough replicas, disconnect");
    rd_kafka_mock_push_request_errors(
        cl.mc, 0 /* Produce */, 20, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, RD_KAFKA_RESP_ERR__TRANSPORT, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, RD_KAFKA_RESP_ERR__TRANSPORT,
        RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, RD_KAFKA_RESP_ERR__TRANSPORT, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, RD_KAFKA_RESP_ERR__TRANSPORT,
        RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND);

    at(t0, 2500);
    note(t0, "broker 1 down (leader of partitions 0 and 3)");
    rd_kafka_mock_broker_set_down(cl.mc, 1);
    at(t0, 4000);
    note(t0, "failover: partitions 0 and 3 led by broker 2; metadata says leader not available for 1 s");
    rd_kafka_mock_topic_set_error(cl.mc, "payments", RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE);
    rd_kafka_mock_partition_set_leader(cl.mc, "payments", 0, 2);
    rd_kafka_mock_partition_set_leader(cl.mc, "payments", 3, 2);
    at(t0, 5000);
    rd_kafka_mock_topic_set_error(cl.mc, "payments", RD_KAFKA_RESP_ERR_NO_ERROR);
    at(t0, 5500);
    note(t0, "broker 1 back");
    rd_kafka_mock_broker_set_up(cl.mc, 1);

    at(t0, 6500);
    note(t0, "whole cluster down for 3 s");
    for (int b = 1; b <= 3; b++)
        rd_kafka_mock_broker_set_down(cl.mc, b);
    at(t0, 9500);
    for (int b = 1; b <= 3; b++)
        rd_kafka_mock_broker_set_up(cl.mc, b);
    note(t0, "cluster back");

    at(t0, 10500);
    note(t0, "broker 3 slow (300 ms round trip) for 2 s; leaders back to 1,2,3");
    rd_kafka_mock_partition_set_leader(cl.mc, "payments", 0, 1);
    rd_kafka_mock_partition_set_leader(cl.mc, "payments", 3, 1);
    rd_kafka_mock_broker_set_rtt(cl.mc, 3, 300);
    at(t0, 12500);
    rd_kafka_mock_broker_set_rtt(cl.mc, 3, 0);
    note(t0, "5 disconnects on produce");
    rd_kafka_mock_push_request_errors(cl.mc, 0, 5, RD_KAFKA_RESP_ERR__TRANSPORT, RD_KAFKA_RESP_ERR__TRANSPORT,
                                      RD_KAFKA_RESP_ERR__TRANSPORT, RD_KAFKA_RESP_ERR__TRANSPORT,
                                      RD_KAFKA_RESP_ERR__TRANSPORT);

    pthread_join(wt, NULL);
    note(t0, "writer done");
    kt_wait_drained(db, 30000);
    note(t0, "outbox drained");
    uint64_t published = 0, failed = 0;
    for (int w = 0; w < outbox_relay_worker_count(relay); w++) {
        outbox_worker_stats_t st;
        outbox_relay_worker_stats(relay, w, &st);
        published += st.published;
        failed += st.failed;
    }
    outbox_relay_destroy(relay);
    printf("relay: %llu acknowledged, %llu failed publish attempts (retried)\n", (unsigned long long)published,
           (unsigned long long)failed);
    CHECK(published >= TOTAL, "acknowledged %llu < %d", (unsigned long long)published, TOTAL);
    CHECK(tu_query_ll(db, "SELECT count(*) FROM outbox_dead_letter") == 0, "an outage dead-lettered events");

    long n;
    kt_rec_t *recs = kt_kcat_read(&cl, "payments", 1, &n);
    long dups = kt_check(recs, n, "acct-", TOTAL, NKEYS);
    printf("payments: %ld records for %d events: none lost, %ld duplicates (at least once), per-key order kept\n",
           n, TOTAL, dups);
    kt_recs_free(recs, n);
    PQfinish(db);
    kt_cluster_stop(&cl);
    printf("PASS kafka_relay_faults\n");
    return 0;
}
