/* Consumer poison + database outage on RabbitMQ (see poisonlib.h): a node
 * of our own through scripts/rabbitmq.sh, as in tests/amqp. */
#include "amqptest.h"
#include "poisonlib.h"

int main(void)
{
    const char *url = ta_start();
    const char *consumer[] = {"amqp_prefetch", "50", NULL};
    pl_broker_t b = {.name = "amqp", .url = url, .topic = "invoices", .consumer = consumer};
    pl_run("consumer_poison_amqp", &b);
    return 0;
}
