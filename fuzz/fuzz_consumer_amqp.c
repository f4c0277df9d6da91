/*
 * src/consumer/amqp.c: what the AMQP consumer reads from a delivery: the
 * basic properties (content-type; in binary mode the ce_* headers of the
 * field table) and the body; and the broker's close reasons it reports.
 *
 * Input: a 2-byte big-endian length, that many bytes of encoded
 * basic.properties (the content header frame's property list: flags,
 * then the fields), then the body. rabbitmq-c decodes the properties, as
 * it does off the wire; the body is also decoded as a connection.close
 * and a channel.close method for outbox__amqp_reply_str().
 */
#include <string.h>

#include "broker/amqp.h"
#include "consumer/consumer_decode.h"
#include "fuzz_common.h"

static void check_close(amqp_pool_t *pool, amqp_method_number_t id, const uint8_t *b, size_t n)
{
    void *decoded = NULL;
    amqp_bytes_t bytes = {n, (void *)b};
    if (amqp_decode_method(id, pool, bytes, &decoded) != AMQP_STATUS_OK || !decoded)
        return;
    amqp_rpc_reply_t r = {.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION};
    r.reply.id = id;
    r.reply.decoded = decoded;
    char why[256];
    outbox__amqp_reply_str(r, why, sizeof(why));
    FUZZ_CHECK(strlen(why) < sizeof(why), "unterminated reason");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t plen = (size_t)data[0] << 8 | data[1];
    if (plen > size - 2)
        plen = size - 2;
    const uint8_t *props = data + 2, *body = props + plen;
    size_t blen = size - 2 - plen;
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);
    void *decoded = NULL;
    amqp_bytes_t enc = {plen, (void *)props};
    if (amqp_decode_properties(AMQP_BASIC_CLASS, &pool, enc, &decoded) == AMQP_STATUS_OK &&
        decoded) {
        char **attrs = outbox__consumer_amqp_attrs(decoded);
        for (size_t i = 0; attrs && attrs[i]; i += 2)
            FUZZ_CHECK(attrs[i + 1] && !strncmp(attrs[i], "ce_", 3), "attribute %s", attrs[i]);
        outbox_consumer_t *c = fuzz_consumer_new();
        int64_t retry_in = 0;
        unsigned before = fuzz_handled;
        outbox_err_t rc =
            outbox__consumer_dispatch(c, "orders", (const char *)body, blen,
                                      (const char *const *)attrs, 0, fuzz_handler, NULL, &retry_in);
        FUZZ_CHECK(fuzz_handled - before <= 1, "handler called %u times", fuzz_handled - before);
        if (rc != OUTBOX_OK)
            FUZZ_CHECK(retry_in >= 1, "retry in %lld ms", (long long)retry_in);
        outbox_consumer_destroy(c);
        outbox__consumer_amqp_attrs_free(attrs);
    }
    check_close(&pool, AMQP_CONNECTION_CLOSE_METHOD, body, blen);
    check_close(&pool, AMQP_CHANNEL_CLOSE_METHOD, body, blen);
    empty_amqp_pool(&pool);
    return 0;
}
