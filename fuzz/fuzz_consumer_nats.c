/*
 * src/consumer/nats.c: what the NATS JetStream consumer reads from a
 * message: the JetStream metadata in its reply subject (redelivered or
 * not), its headers (ce-* in binary mode, content-type, traceparent) and
 * its data.
 *
 * Input: the reply subject on the first line (e.g.
 * $JS.ACK.ORDERS.group.1.5.5.1700000000000000000.0), header lines
 * "Key: value", an empty line, then the data. The message is built with
 * nats.c's own API, as the client hands it over.
 */
#include <string.h>

#include "consumer/consumer_decode.h"
#include "fuzz_common.h"

#define MAX_HEADERS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_lines_t r;
    const char *line;
    size_t len;
    fuzz_lines_init(&r, data, size);
    char *reply = fuzz_line(&r, &line, &len) ? fuzz_str((const uint8_t *)line, len) : NULL;
    char *keys[MAX_HEADERS], *vals[MAX_HEADERS];
    int n = 0;
    while (n < MAX_HEADERS && fuzz_line(&r, &line, &len) && len > 0) {
        const char *colon = memchr(line, ':', len);
        size_t kl = colon ? (size_t)(colon - line) : len;
        const char *v = colon ? colon + 1 : line + len;
        if (v < line + len && *v == ' ')
            v++;
        keys[n] = fuzz_str((const uint8_t *)line, kl);
        vals[n] = fuzz_str((const uint8_t *)v, (size_t)(line + len - v));
        n++;
    }
    size_t dlen;
    const char *d = fuzz_rest(&r, &dlen);
    natsMsg *m = NULL;
    if (natsMsg_Create(&m, "orders.OrderCreated", reply && *reply ? reply : NULL, d, (int)dlen) ==
        NATS_OK) {
        for (int i = 0; i < n; i++)
            natsMsgHeader_Add(m, keys[i], vals[i]);
        outbox_consumer_t *c = fuzz_consumer_new();
        int64_t retry_in = 0;
        unsigned before = fuzz_handled;
        outbox_err_t rc =
            outbox__consumer_nats_handle(c, "orders", m, fuzz_handler, NULL, &retry_in);
        FUZZ_CHECK(fuzz_handled - before <= 1, "handler called %u times", fuzz_handled - before);
        if (rc != OUTBOX_OK)
            FUZZ_CHECK(retry_in >= 1, "retry in %lld ms", (long long)retry_in);
        outbox_consumer_destroy(c);
        natsMsg_Destroy(m);
    }
    for (int i = 0; i < n; i++) {
        free(keys[i]);
        free(vals[i]);
    }
    free(reply);
    return 0;
}
