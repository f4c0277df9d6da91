/* Consumer poison + database outage on Kafka (see poisonlib.h): librdkafka's
 * mock cluster in this process, as in tests/kafka. A failing message holds
 * back its partition only. */
#include "kafka_common.h"
#include "poisonlib.h"

/* The records after the poison in its partition, read back with kcat. */
static int behind(void *arg, int poison_seq)
{
    kt_cluster_t *cl = arg;
    long n = 0;
    kt_rec_t *recs = kt_kcat_read(cl, "invoices", 1, &n);
    int part = -1, count = 0;
    long long off = -1;
    for (long i = 0; i < n; i++)
        if (recs[i].seq == poison_seq) {
            part = recs[i].partition;
            off = recs[i].offset;
        }
    CHECK(part >= 0, "the poison is not in the topic (%ld records)", n);
    for (long i = 0; i < n; i++)
        count += recs[i].partition == part && recs[i].offset > off;
    kt_recs_free(recs, n);
    printf("partition %d: %d records behind the poison\n", part, count);
    return count;
}

int main(void)
{
    kt_cluster_t cl;
    kt_cluster_start(&cl, 1);
    /* Two partitions: the poison shares its partition with other keys, whose
     * later records wait behind it too (offsets are per partition). */
    kt_topic(&cl, "invoices", 2, 1);
    /* A short session, as in tests/kafka: the restart in phase 1b does not
     * wait 45 s for the old member to time out of the mock's group. */
    const char *consumer[] = {"kafka_offset_reset", "earliest", "kafka_properties",
                              "session.timeout.ms=3000,heartbeat.interval.ms=300", NULL};
    pl_broker_t b = {.name = "kafka",
                     .url = cl.url,
                     .topic = "invoices",
                     .consumer = consumer,
                     .behind = behind,
                     .arg = &cl};
    pl_run("consumer_poison_kafka", &b);
    kt_cluster_stop(&cl);
    return 0;
}
