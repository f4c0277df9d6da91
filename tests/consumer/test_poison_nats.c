/* Consumer poison + database outage on NATS JetStream (see poisonlib.h);
 * a throwaway nats-server as in tests/nats. */
#include "natstest.h"
#include "poisonlib.h"

int main(void)
{
    tn_require();
    tn_server_t srv = {0};
    tn_start(&srv);
    const char *consumer[] = {"nats_nak_delay", "50ms", "nats_fetch_batch", "50", NULL};
    pl_broker_t b = {.name = "nats", .url = srv.url, .topic = "invoices", .consumer = consumer};
    pl_run("consumer_poison_nats", &b);
    tn_cleanup(&srv);
    return 0;
}
