/* The generic Redis consumer (src/consumer/redis.c) on its own:
 *   - Streams: consumer group, acknowledge only after the handler succeeds,
 *     a failed message is redelivered in order, a crashed consumer's pending
 *     entries are taken over by another (XAUTOCLAIM), junk is dropped, the
 *     stream is trimmed of what every group acknowledged (after the retention);
 *     (poison handling: tests/consumer/);
 *   - Pub/Sub: subscribe and receive. */
#include <string.h>

#include "orders_testlib.h"
#include "outbox/consumer.h"

typedef struct seen_s {
    char ids[32][40];
    int n;
    int fail_first; /* fail this many calls, then succeed */
    int redelivered;
} seen_t;

static outbox_err_t handler(const outbox_delivery_t *d, void *opaque)
{
    seen_t *s = opaque;
    if (s->fail_first > 0) {
        s->fail_first--;
        return OUTBOX_ERR_DB;
    }
    if (s->n < 32)
        snprintf(s->ids[s->n++], sizeof(s->ids[0]), "%s", d->env.id);
    s->redelivered += d->redelivered;
    return OUTBOX_OK;
}

static void event(char *out, size_t size, const char *id)
{
    snprintf(out, size,
             "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"/"
             "test\",\"type\":\"T\",\"subject\":\"k\","
             "\"datacontenttype\":\"application/json\",\"data\":{\"n\":1}}",
             id);
}

static long long pending(redisContext *rc, const char *stream, const char *group)
{
    redisReply *x = redisCommand(rc, "XPENDING %s %s", stream, group);
    CHECK(x && x->type == REDIS_REPLY_ARRAY && x->elements >= 1, "XPENDING");
    long long n = x->element[0]->integer;
    freeReplyObject(x);
    return n;
}

static void poll_until(outbox_consumer_t *c, seen_t *s, int want, int timeout_ms)
{
    long long end = tu_now_ms() + timeout_ms;
    while (s->n < want && tu_now_ms() < end)
        outbox_consumer_poll(c, 100, handler, s);
}

int main(void)
{
    char h[64];
    int p;
    tu_redis_addr(h, sizeof(h), &p);
    int port = tu_free_port();
    pid_t rpid = tu_redis_server_start(port);
    redisContext *rc = tu_redis_connect("127.0.0.1", port);
    char url[64], err[256];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
    outbox_conf_t *conf = outbox_conf_new();
    CHECK(outbox_conf_set(conf, "consumer_claim_idle", "300ms", err, sizeof(err)) == OUTBOX_OK,
          "%s", err);
    const char *topics[1] = {"things"};

    char ids[3][40], doc[512];
    for (int i = 0; i < 3; i++) {
        outbox_uuid_v7(ids[i]);
        event(doc, sizeof(doc), ids[i]);
        redisReply *x = redisCommand(rc, "XADD things * id %s event %s", ids[i], doc);
        CHECK(x && x->type == REDIS_REPLY_STRING, "XADD");
        freeReplyObject(x);
    }
    redisReply *x = redisCommand(rc, "XADD things * junk yes");
    freeReplyObject(x);

    /* A: its handler fails on everything -> none of the three acknowledged (the
     * junk entry is dropped at once: a failure no longer stops the read, only
     * its key waits); then it "crashes". */
    outbox_consumer_t *a = outbox_consumer_new(url, "grp", "a", topics, 1, conf, err, sizeof(err));
    CHECK(a, "consumer a: %s", err);
    seen_t sa = {.fail_first = 1000};
    for (int i = 0; i < 3; i++)
        outbox_consumer_poll(a, 100, handler, &sa);
    CHECK(sa.n == 0, "a handled %d", sa.n);
    CHECK(pending(rc, "things", "grp") == 3, "pending after a: %lld", pending(rc, "things", "grp"));
    outbox_consumer_destroy(a);

    /* B takes over after claim_idle and handles all three in order; junk is dropped. */
    outbox_consumer_t *b = outbox_consumer_new(url, "grp", "b", topics, 1, conf, err, sizeof(err));
    CHECK(b, "consumer b: %s", err);
    seen_t sb = {0};
    poll_until(b, &sb, 3, 10000);
    CHECK(sb.n == 3, "b handled %d of 3", sb.n);
    for (int i = 0; i < 3; i++)
        CHECK(!strcmp(sb.ids[i], ids[i]), "order: got %s at %d, want %s", sb.ids[i], i, ids[i]);
    CHECK(sb.redelivered == 3, "claimed messages not flagged redelivered (%d)", sb.redelivered);
    for (int i = 0; i < 10 && pending(rc, "things", "grp") > 0; i++)
        outbox_consumer_poll(b, 100, handler, &sb);
    CHECK(pending(rc, "things", "grp") == 0, "pending after b: %lld", pending(rc, "things", "grp"));

    /* New messages: a transient handler failure is retried in order, acked after. */
    char more[2][40];
    for (int i = 0; i < 2; i++) {
        outbox_uuid_v7(more[i]);
        event(doc, sizeof(doc), more[i]);
        x = redisCommand(rc, "XADD things * id %s event %s", more[i], doc);
        freeReplyObject(x);
    }
    sb.fail_first = 1;
    poll_until(b, &sb, 5, 10000);
    CHECK(sb.n == 5 && !strcmp(sb.ids[3], more[0]) && !strcmp(sb.ids[4], more[1]),
          "retry order (n=%d)", sb.n);
    for (int i = 0; i < 10 && pending(rc, "things", "grp") > 0; i++)
        outbox_consumer_poll(b, 100, handler, &sb);
    CHECK(pending(rc, "things", "grp") == 0, "pending after retry");
    outbox_consumer_destroy(b);

    /* Trimming (consumer_stream_retention): only what every group has acknowledged
     * and what is older than the retention leaves the stream. */
    {
        outbox_conf_t *tconf = outbox_conf_new();
        CHECK(outbox_conf_set(tconf, "consumer_stream_retention", "1ms", err, sizeof(err)) ==
                  OUTBOX_OK,
              "%s", err);
        const char *ttopics[1] = {"trimmed"};
        char sid[5][48];
        for (int i = 0; i < 5; i++) {
            char eid[40];
            outbox_uuid_v7(eid);
            event(doc, sizeof(doc), eid);
            x = redisCommand(rc, "XADD trimmed * id %s event %s", eid, doc);
            CHECK(x && x->type == REDIS_REPLY_STRING, "XADD trimmed");
            snprintf(sid[i], sizeof(sid[i]), "%s", x->str);
            freeReplyObject(x);
        }
        x = redisCommand(rc,
                         "XGROUP CREATE trimmed g2 0"); /* a second group, reading nothing yet */
        freeReplyObject(x);
        outbox_consumer_t *t =
            outbox_consumer_new(url, "g1", "t", ttopics, 1, tconf, err, sizeof(err));
        CHECK(t, "trimming consumer: %s", err);
        seen_t st = {0};
        poll_until(t, &st, 5, 10000);
        CHECK(st.n == 5, "trimming consumer handled %d of 5", st.n);
        tu_sleep_ms(1100);
        outbox_consumer_poll(t, 100, handler, &st);
        x = redisCommand(rc, "XLEN trimmed");
        CHECK(x && x->integer == 5, "g2 read nothing: nothing may be trimmed, XLEN %lld",
              x ? x->integer : -1);
        freeReplyObject(x);
        /* g2 reads two, acknowledges the first: the second is still needed */
        x = redisCommand(rc, "XREADGROUP GROUP g2 x COUNT 2 STREAMS trimmed >");
        freeReplyObject(x);
        x = redisCommand(rc, "XACK trimmed g2 %s", sid[0]);
        freeReplyObject(x);
        tu_sleep_ms(1100);
        outbox_consumer_poll(t, 100, handler, &st);
        x = redisCommand(rc, "XRANGE trimmed - +");
        CHECK(x && x->type == REDIS_REPLY_ARRAY && x->elements == 4 &&
                  !strcmp(x->element[0]->element[0]->str, sid[1]),
              "trimmed to g2's pending entry: %zu entries", x ? x->elements : 0);
        freeReplyObject(x);
        /* g2 reads and acknowledges everything: all but the last delivered go */
        x = redisCommand(rc, "XREADGROUP GROUP g2 x STREAMS trimmed >");
        freeReplyObject(x);
        for (int i = 1; i < 5; i++) {
            x = redisCommand(rc, "XACK trimmed g2 %s", sid[i]);
            freeReplyObject(x);
        }
        tu_sleep_ms(1100);
        outbox_consumer_poll(t, 100, handler, &st);
        x = redisCommand(rc, "XRANGE trimmed - +");
        CHECK(x && x->type == REDIS_REPLY_ARRAY && x->elements == 1 &&
                  !strcmp(x->element[0]->element[0]->str, sid[4]),
              "all acknowledged: %zu entries left", x ? x->elements : 0);
        freeReplyObject(x);
        CHECK(st.n == 5, "trimming delivered something again (%d)", st.n);
        outbox_consumer_destroy(t);
        outbox_conf_destroy(tconf);

        /* The default retention (1h) keeps acknowledged entries. */
        for (int i = 0; i < 3; i++) {
            char eid[40];
            outbox_uuid_v7(eid);
            event(doc, sizeof(doc), eid);
            x = redisCommand(rc, "XADD kept * id %s event %s", eid, doc);
            freeReplyObject(x);
        }
        const char *ktopics[1] = {"kept"};
        outbox_consumer_t *k =
            outbox_consumer_new(url, "g1", "k", ktopics, 1, conf, err, sizeof(err));
        CHECK(k, "consumer k: %s", err);
        seen_t sk = {0};
        poll_until(k, &sk, 3, 10000);
        CHECK(sk.n == 3, "k handled %d of 3", sk.n);
        x = redisCommand(rc, "XLEN kept");
        CHECK(x && x->integer == 3, "default retention trimmed: XLEN %lld", x ? x->integer : -1);
        freeReplyObject(x);
        outbox_consumer_destroy(k);
    }

    /* Pub/Sub. */
    snprintf(url, sizeof(url), "redis+pubsub://127.0.0.1:%d", port);
    outbox_consumer_t *ps =
        outbox_consumer_new(url, "grp", "ps", topics, 1, conf, err, sizeof(err));
    CHECK(ps, "pubsub consumer: %s", err);
    seen_t sp = {0};
    outbox_consumer_poll(ps, 100, handler, &sp); /* connects and subscribes */
    char pid[40];
    outbox_uuid_v7(pid);
    event(doc, sizeof(doc), pid);
    x = redisCommand(rc, "PUBLISH things %s", doc);
    CHECK(x && x->integer == 1, "PUBLISH reached %lld subscribers", x ? x->integer : -1);
    freeReplyObject(x);
    poll_until(ps, &sp, 1, 5000);
    CHECK(sp.n == 1 && !strcmp(sp.ids[0], pid), "pubsub message not received");
    outbox_consumer_destroy(ps);

    /* Broker down: poll reports OUTBOX_ERR_BROKER, does not crash. */
    redisFree(rc);
    tu_stop(rpid);
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
    outbox_consumer_t *d = outbox_consumer_new(url, "grp", "d", topics, 1, conf, err, sizeof(err));
    CHECK(d, "consumer with broker down must still be created: %s", err);
    CHECK(outbox_consumer_poll(d, 50, handler, &sp) == OUTBOX_ERR_BROKER, "poll with broker down");
    CHECK(strstr(outbox_consumer_errstr(d), "cannot connect"), "errstr: %s",
          outbox_consumer_errstr(d));
    outbox_consumer_destroy(d);
    outbox_conf_destroy(conf);
    printf("PASS orders_consumer_redis\n");
    return 0;
}
