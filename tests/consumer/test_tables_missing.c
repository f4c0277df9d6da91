/* A consumer whose database lacks the consumer tables (migrations not
 * applied): failures are retried without being counted (nothing paused as
 * an outage, nothing lost), rejected messages are not dropped, and the
 * consumer says once what to do (consumer_tables_missing). Redis Streams,
 * entries written with XADD. */
#include <string.h>

#include "outbox/consumer.h"
#include "testutil.h"

typedef struct ctx_s {
    int calls_a, calls_b, done;
} ctx_t;

static outbox_err_t handler(const outbox_delivery_t *d, void *opaque)
{
    ctx_t *x = opaque;
    if (!strcmp(d->env.subject, "a") && ++x->calls_a <= 2) {
        outbox_delivery_set_error(d, "flaky dependency");
        return OUTBOX_ERR_TIMEOUT; /* charged, if it could be counted */
    }
    if (!strcmp(d->env.subject, "b") && ++x->calls_b <= 2)
        return OUTBOX_ERR_REJECTED; /* would be dead-lettered: no table, kept instead */
    x->done++;
    return OUTBOX_OK;
}

int main(void)
{
    const char *ci = tu_fresh_db("consumer_tables_missing"); /* no migrations */
    PGconn *db = tu_connect(ci);
    char host[128], url[200], err[512];
    int port;
    tu_redis_addr(host, sizeof(host), &port);
    snprintf(url, sizeof(url), "redis://%s:%d", host, port);
    const char *topic = tu_unique("things");
    redisContext *rc = tu_redis_connect(host, port);
    const char *subjects[] = {"a", "b", "c", "d"};
    for (int i = 0; i < 4; i++) {
        char id[40], doc[512];
        outbox_uuid_v7(id);
        snprintf(doc, sizeof(doc),
                 "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"/t\",\"type\":\"T\","
                 "\"subject\":\"%s\",\"data\":{}}",
                 id, subjects[i]);
        redisReply *r = redisCommand(rc, "XADD %s * event %s", topic, doc);
        CHECK(r && r->type == REDIS_REPLY_STRING, "XADD");
        freeReplyObject(r);
    }
    redisFree(rc);
    outbox_conf_t *conf = outbox_conf_new();
    tu_conf_set(conf, "database_url", ci);
    tu_conf_set(conf, "consumer_retry_backoff", "50ms");
    const char *topics[1] = {topic};
    outbox_consumer_t *c =
        outbox_consumer_new(url, "grp", "grp-1", topics, 1, conf, err, sizeof(err));
    CHECK(c, "consumer_new: %s", err);
    outbox_conf_destroy(conf);
    ctx_t x = {0};
    long long end = tu_now_ms() + 20000;
    while (x.done < 4) {
        outbox_consumer_poll(c, 100, handler, &x);
        CHECK(tu_now_ms() < end, "handled %d of 4 (a: %d calls, b: %d calls)", x.done, x.calls_a,
              x.calls_b);
    }
    CHECK(x.calls_a == 3 && x.calls_b == 3, "calls a %d b %d", x.calls_a, x.calls_b);
    CHECK(tu_query_ll(db, "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'outbox%'") == 0,
          "the consumer created tables");
    outbox_consumer_destroy(c);
    PQfinish(db);
    printf("PASS consumer_tables_missing\n");
    return 0;
}
