/* The Redis sink, called directly with one call larger than its write
 * buffer (src/sink/redis.c writes the call to the socket every 64 KB of RESP
 * as it formats it, instead of holding all of it twice): 2,000 events of
 * distinct keys and ~1 KB data, about 2.5 MB of commands, 40-odd writes,
 * with Redis refusing every 100th (its topic is a plain string: WRONGTYPE).
 *  - every event gets its own result, in the call's order: the refused
 *    ones OUTBOX_ERR_BROKER "Redis: WRONGTYPE ..." (attempted, not_sent = 0),
 *    the others OUTBOX_OK;
 *  - the stream holds exactly the accepted events, in the call's order;
 *  - the connection stays in step: a second call on it gets its own replies.
 * Needs OUTBOX_TEST_REDIS (skipped without it). */
#include "core/message.h"
#include "core/util.h"
#include "sink/sink.h"
#include "sink_test.h"

#define N 2000
#define REFUSE_EVERY 100

static outbox_msg_t msgs[N];
static outbox_pub_result_t res[N];
static char keys[N][16], payloads[N][1100];

static void build(const char *good, const char *bad)
{
    char err[256];
    for (int i = 0; i < N; i++) {
        outbox_msg_t *m = &msgs[i];
        free(m->envelope);
        memset(m, 0, sizeof(*m));
        snprintf(keys[i], sizeof(keys[i]), "k%d", i);
        snprintf(payloads[i], sizeof(payloads[i]), "{\"n\":%d,\"pad\":\"%01000d\"}", i, i);
        outbox_uuid_v7(m->id);
        m->seq = i + 1;
        m->topic = i % REFUSE_EVERY == REFUSE_EVERY - 1 ? bad : good;
        m->type = "Large";
        m->key = keys[i];
        m->source = "/tests/sinks";
        m->payload = payloads[i];
        m->time = "2026-11-30T10:00:00Z";
        m->envelope = outbox__envelope_build(m, &m->envelope_len, err, sizeof(err));
        CHECK(m->envelope, "envelope: %s", err);
    }
}

/* Publishes msgs in one call and checks each result and the stream. */
static void call_and_check(outbox_sink_t *s, redisContext *r, const char *good, long before)
{
    memset(res, 0, sizeof(res));
    s->deadline_ms = outbox__now_ms() + 20000;
    long long t0 = tu_now_ms();
    CHECK(s->ops->publish(s, msgs, N, res) == OUTBOX_OK, "publish: %s", res[0].errstr);
    long long took = tu_now_ms() - t0;
    int refused = 0;
    for (int i = 0; i < N; i++) {
        if (msgs[i].topic != good) {
            refused++;
            CHECK(res[i].err == OUTBOX_ERR_BROKER && !res[i].not_sent &&
                      strstr(res[i].errstr, "WRONGTYPE"),
                  "event %d to the string key: %s (%s), not_sent %d", i, outbox_err_str(res[i].err),
                  res[i].errstr, res[i].not_sent);
        } else {
            CHECK(res[i].err == OUTBOX_OK, "event %d: %s (%s)", i, outbox_err_str(res[i].err),
                  res[i].errstr);
        }
    }
    redisReply *rep = redisCommand(r, "XRANGE %s - +", good);
    CHECK(rep && rep->type == REDIS_REPLY_ARRAY, "XRANGE %s", good);
    CHECK((long)rep->elements == before + N - refused, "stream has %zu entries, want %ld",
          rep->elements, before + N - refused);
    /* Entries are "id <uuid> type ... ", in the order Redis appended them. */
    long e = before;
    for (int i = 0; i < N; i++) {
        if (msgs[i].topic != good)
            continue;
        redisReply *fields = rep->element[e++]->element[1];
        CHECK(fields->elements >= 2 && !strcmp(fields->element[0]->str, "id") &&
                  !strcmp(fields->element[1]->str, msgs[i].id),
              "stream entry %ld is not event %d (%s)", e - 1, i, msgs[i].id);
    }
    freeReplyObject(rep);
    printf("one call of %d events (%d refused by Redis) in %lld ms: every result and the "
           "stream's order as sent\n",
           N, refused, took);
}

int main(void)
{
    char host[64], url[128], err[512];
    int port;
    tu_redis_addr(host, sizeof(host), &port);
    redisContext *r = tu_redis_connect(host, port);
    const char *good = tu_unique("large"), *bad = tu_unique("large-string");
    redisReply *rep = redisCommand(r, "SET %s not-a-stream", bad);
    CHECK(rep && rep->type != REDIS_REPLY_ERROR, "SET %s", bad);
    freeReplyObject(rep);

    snprintf(url, sizeof(url), "redis://%s:%d", host, port);
    outbox_conf_t *conf = outbox_conf_new();
    st_conf_set(conf, "publish_timeout", "30s");
    outbox_sink_t *s = outbox__sink_new(url, conf, "t", err, sizeof(err));
    CHECK(s, "sink_new: %s", err);

    build(good, bad);
    call_and_check(s, r, good, 0);
    build(good, bad); /* new ids: the second call's replies must be its own */
    call_and_check(s, r, good, N - N / REFUSE_EVERY);

    for (int i = 0; i < N; i++)
        free(msgs[i].envelope);
    rep = redisCommand(r, "DEL %s %s", good, bad);
    freeReplyObject(rep);
    redisFree(r);
    outbox__sink_destroy(s);
    outbox_conf_destroy(conf);
    printf("PASS sink_redis_large_call\n");
    return 0;
}
