/* Consumer poison + database outage on Kafka (see poisonlib.h): librdkafka's
 * mock cluster in this process, as in tests/kafka. A failing message holds
 * back its partition only. */
#include "kafka_common.h"
#include "poisonlib.h"

int main(void)
{
    kt_cluster_t cl;
    kt_cluster_start(&cl, 1);
    kt_topic(&cl, "invoices", 4, 1);
    const char *consumer[] = {"kafka_offset_reset", "earliest", NULL};
    /* The poison (key k-0) holds back its partition: the keys the sink's
     * partitioner (murmur2_random) puts there wait behind it. */
    static char keys[20][8];
    const char *held[21];
    int nheld = 0;
    int32_t p0 = rd_kafka_msg_partitioner_murmur2_random(NULL, "k-0", 3, 4, NULL, NULL);
    for (int i = 0; i < 20; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k-%d", i);
        if (rd_kafka_msg_partitioner_murmur2_random(NULL, keys[i], strlen(keys[i]), 4, NULL,
                                                    NULL) == p0)
            held[nheld++] = keys[i];
    }
    held[nheld] = NULL;
    printf("partition %d holds keys behind the poison: %d of 20\n", (int)p0, nheld);
    pl_broker_t b = {.name = "kafka",
                     .url = cl.url,
                     .topic = "invoices",
                     .consumer = consumer,
                     .held_keys = held};
    pl_run("consumer_poison_kafka", &b);
    kt_cluster_stop(&cl);
    return 0;
}
