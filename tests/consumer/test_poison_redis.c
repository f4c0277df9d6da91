/* Consumer poison + database outage on Redis Streams (see poisonlib.h). */
#include <stdio.h>

#include "poisonlib.h"
#include "testutil.h"

int main(void)
{
    char host[128], url[200];
    int port;
    tu_redis_addr(host, sizeof(host), &port);
    snprintf(url, sizeof(url), "redis://%s:%d", host, port);
    pl_broker_t b = {.name = "redis", .url = url, .topic = tu_unique("invoices")};
    pl_run("consumer_poison_redis", &b);
    return 0;
}
