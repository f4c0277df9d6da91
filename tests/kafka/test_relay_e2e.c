/* End to end: events enqueued in committed transactions reach Kafka through
 * the embedded relay (4 workers, one idempotent producer each), read back
 * with kcat from a 3-broker mock cluster: every event present, message key
 * = aggregate id, one partition per key, per-key order, valid CloudEvents. */
#include "kafka_common.h"

#define TOTAL 3000
#define NKEYS 60

int main(void)
{
    PGconn *db;
    const char *ci = kt_setup_db("kafka_relay_e2e", &db);
    kt_cluster_t cl;
    kt_cluster_start(&cl, 3);
    kt_topic(&cl, "orders", 6, 3);

    /* Half before the relay starts, half while it runs. */
    kt_enqueue(db, "orders", "OrderCreated", "order-", 0, TOTAL / 2, NKEYS, 10);
    /* A rolled-back transaction publishes nothing. */
    PQclear(tu_exec(db, "BEGIN"));
    char err[512];
    outbox_event_t ghost = {
        .topic = "orders", .type = "Ghost", .key = "order-0", .payload = "{\"seq\":-1}"};
    CHECK(outbox_enqueue(db, &ghost, NULL, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    PQclear(tu_exec(db, "ROLLBACK"));

    outbox_conf_t *conf = kt_relay_conf(ci, &cl);
    kt_conf_set(conf, "workers", "4");
    kt_conf_set(conf, "batch_size", "200");
    kt_conf_set(conf, "publish_timeout", "5s");
    long long t0 = tu_now_ms();
    outbox_relay_t *relay = kt_relay_start(conf);
    kt_enqueue(db, "orders", "OrderCreated", "order-", TOTAL / 2, TOTAL, NKEYS, 10);
    kt_wait_drained(db, 45000);
    long long ms = tu_now_ms() - t0;
    printf("relay drained %d events in %lld ms (%.0f events/s, 4 workers, enqueue included)\n",
           TOTAL, ms, TOTAL * 1000.0 / (double)(ms ? ms : 1));
    uint64_t published = 0;
    for (int w = 0; w < outbox_relay_worker_count(relay); w++) {
        outbox_worker_stats_t st;
        outbox_relay_worker_stats(relay, w, &st);
        published += st.published;
    }
    outbox_relay_destroy(relay);
    CHECK(published == TOTAL, "relay acknowledged %llu events, want %d",
          (unsigned long long)published, TOTAL);
    CHECK(tu_query_ll(db, "SELECT count(*) FROM outbox_dead_letter") == 0,
          "dead letters in a clean run");

    long n;
    kt_rec_t *recs = kt_kcat_read(&cl, "orders", 1, &n);
    long dups = kt_check(recs, n, "order-", TOTAL, NKEYS);
    printf("orders: %ld records, %ld duplicates, every key in one partition and in commit order\n",
           n, dups);
    CHECK(dups == 0, "duplicates in a clean run: %ld", dups);
    int partitions_used[6] = {0};
    for (long i = 0; i < n; i++) {
        CHECK(!strcmp(recs[i].env.type, "OrderCreated"), "type %s", recs[i].env.type);
        CHECK(strstr(recs[i].headers, "content-type=application/cloudevents+json"), "headers %s",
              recs[i].headers);
        partitions_used[recs[i].partition] = 1;
    }
    int used = 0;
    for (int p = 0; p < 6; p++)
        used += partitions_used[p];
    CHECK(used >= 4, "60 keys landed in only %d of 6 partitions", used);
    kt_recs_free(recs, n);
    PQfinish(db);
    kt_cluster_stop(&cl);
    printf("PASS kafka_relay_e2e\n");
    return 0;
}
