/*
 * src/consumer/kafka.c: what the Kafka consumer reads from a message:
 * its headers (content-type, ce_* in binary mode) and its value.
 *
 * Input: header lines "name: value" (the value runs to the end of the
 * line and may hold any byte but '\n'; a line without ':' is a header
 * with a null value), an empty line, then the value (none at all: a
 * tombstone). The headers are built with librdkafka's own API, as the
 * client hands them over.
 */
#include <string.h>

#include "consumer/consumer_decode.h"
#include "fuzz_common.h"

#define MAX_HEADERS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(8);
    FUZZ_CHECK(hdrs, "out of memory");
    fuzz_lines_t r;
    const char *line;
    size_t len;
    int n = 0;
    fuzz_lines_init(&r, data, size);
    while (fuzz_line(&r, &line, &len) && len > 0 && n++ < MAX_HEADERS) {
        const char *colon = memchr(line, ':', len);
        if (!colon) {
            rd_kafka_header_add(hdrs, line, (ssize_t)len, NULL, 0);
            continue;
        }
        const char *v = colon + 1;
        if (v < line + len && *v == ' ')
            v++;
        rd_kafka_header_add(hdrs, line, colon - line, v, line + len - v);
    }
    size_t vlen;
    const char *value = fuzz_rest(&r, &vlen);
    outbox_consumer_t *c = fuzz_consumer_new();
    int64_t retry_in = 0;
    unsigned before = fuzz_handled;
    outbox_err_t rc = outbox__consumer_kafka_handle(c, "orders", hdrs, vlen ? value : NULL, vlen,
                                                    fuzz_handler, NULL, &retry_in);
    FUZZ_CHECK(fuzz_handled - before <= 1, "handler called %u times", fuzz_handled - before);
    if (rc != OUTBOX_OK)
        FUZZ_CHECK(retry_in >= 1, "retry in %lld ms", (long long)retry_in);
    outbox_consumer_destroy(c);
    rd_kafka_headers_destroy(hdrs);
    return 0;
}
