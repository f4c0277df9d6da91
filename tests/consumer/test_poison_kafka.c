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
    pl_broker_t b = {.name = "kafka", .url = cl.url, .topic = "invoices", .consumer = consumer};
    pl_run("consumer_poison_kafka", &b);
    kt_cluster_stop(&cl);
    return 0;
}
