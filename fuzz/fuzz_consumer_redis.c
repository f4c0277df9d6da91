/*
 * src/consumer/redis.c: what the Redis consumer reads from a reply.
 *
 * Input: RESP bytes as the server sends them, read by hiredis' own reader
 * (the client library's parser), then decoded as the consumer does: an
 * XREADGROUP reply [[stream, [[id, [field, value, ...]], ...]], ...] whose
 * entries' "event" field is the CloudEvents document, or a Pub/Sub push
 * ["message", channel, payload]. Every body goes through
 * outbox__consumer_dispatch() to a handler that checks the delivery.
 * The reader is guarded as the consumer's is (outbox__redis_guard_reader):
 * "*300000000\r\n" once made hiredis ask for 2.4 GB.
 */
#include <hiredis/hiredis.h>
#include <string.h>

#include "broker/redis.h"
#include "consumer/consumer_decode.h"
#include "fuzz_common.h"

static void decode(outbox_consumer_t *c, const redisReply *rep)
{
    const char *channel, *id, *body;
    size_t len;
    if (outbox__consumer_redis_pubsub(rep, &channel, &body, &len)) {
        FUZZ_CHECK(channel && body, "pubsub message without channel or body");
        outbox__consumer_dispatch(c, channel, body, len, NULL, 0, fuzz_handler, NULL, NULL);
        return;
    }
    if (rep->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t s = 0; s < rep->elements; s++) {
        const redisReply *st = rep->element[s];
        if (st->type != REDIS_REPLY_ARRAY || st->elements < 2 ||
            st->element[0]->type != REDIS_REPLY_STRING || st->element[1]->type != REDIS_REPLY_ARRAY)
            continue;
        const redisReply *entries = st->element[1];
        for (size_t e = 0; e < entries->elements; e++) {
            if (!outbox__consumer_redis_entry(entries->element[e], &id, &body, &len))
                continue;
            FUZZ_CHECK(id, "entry without an id");
            if (!body)
                continue;
            int64_t retry_in = 0;
            unsigned before = fuzz_handled;
            outbox_err_t rc = outbox__consumer_dispatch(c, "orders", body, len, NULL, 0,
                                                        fuzz_handler, NULL, &retry_in);
            FUZZ_CHECK(fuzz_handled - before <= 1, "handler called %u times",
                       fuzz_handled - before);
            if (rc != OUTBOX_OK)
                FUZZ_CHECK(retry_in >= 1, "retry in %lld ms", (long long)retry_in);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    redisReader *rd = redisReaderCreate();
    FUZZ_CHECK(rd, "out of memory");
    /* as outbox__redis_connect sets up every context's reader: an array
     * declaring millions of elements is refused, not allocated */
    outbox__redis_guard_reader(rd);
    outbox_consumer_t *c = fuzz_consumer_new();
    if (redisReaderFeed(rd, (const char *)data, size) == REDIS_OK) {
        for (int i = 0; i < 16; i++) {
            void *reply = NULL;
            if (redisReaderGetReply(rd, &reply) != REDIS_OK || !reply)
                break;
            decode(c, reply);
            freeReplyObject(reply);
        }
    }
    outbox_consumer_destroy(c);
    redisReaderFree(rd);
    return 0;
}
