/* Helpers the fuzz targets share. */
#include "fuzz_common.h"

#include <string.h>
#include <unistd.h>

#include "core/json.h"

unsigned fuzz_handled;
FILE *fuzz_report;

/* libFuzzer calls this before it handles -close_fd_mask: keep a stream on
 * the real stderr for FUZZ_CHECK. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    int fd = dup(2);
    if (fd >= 0)
        fuzz_report = fdopen(fd, "w");
    return 0;
}

char *fuzz_str(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        abort();
    if (size)
        memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

void fuzz_lines_init(fuzz_lines_t *r, const uint8_t *data, size_t size)
{
    r->p = (const char *)data;
    r->end = r->p + size;
}

int fuzz_line(fuzz_lines_t *r, const char **line, size_t *len)
{
    if (r->p >= r->end)
        return 0;
    const char *nl = memchr(r->p, '\n', (size_t)(r->end - r->p));
    *line = r->p;
    *len = (size_t)((nl ? nl : r->end) - r->p);
    r->p = nl ? nl + 1 : r->end;
    return 1;
}

const char *fuzz_rest(const fuzz_lines_t *r, size_t *len)
{
    *len = (size_t)(r->end - r->p);
    return r->p;
}

outbox_consumer_t *fuzz_consumer_new(void)
{
    static const char *const topics[] = {"orders"};
    char err[512];
    outbox_conf_t *conf = outbox_conf_new();
    FUZZ_CHECK(conf, "out of memory");
    outbox_consumer_t *c = outbox_consumer_new("redis://127.0.0.1:1", "fuzz", "fuzz-1", topics, 1,
                                               conf, err, sizeof(err));
    FUZZ_CHECK(c, "%s", err);
    outbox_conf_destroy(conf);
    return c;
}

outbox_err_t fuzz_handler(const outbox_delivery_t *d, void *opaque)
{
    (void)opaque;
    fuzz_handled++;
    FUZZ_CHECK(d && d->topic, "a delivery without a topic");
    FUZZ_CHECK(outbox_uuid_valid(d->env.id), "id %s is not a UUID", d->env.id);
    FUZZ_CHECK(d->env.type && d->env.source, "type or source missing");
    FUZZ_CHECK(d->env.data, "no data");
    size_t dlen = strlen(d->env.data);
    outbox__json_error_t jerr;
    FUZZ_CHECK(outbox__json_check(d->env.data, dlen, &jerr) == 0, "data is not JSON: %s at %zu",
               jerr.what, jerr.offset);
    FUZZ_CHECK(d->body || !d->body_len, "body length without a body");
    unsigned char last = dlen ? (unsigned char)d->env.data[dlen - 1] : 0;
    switch (last % 16) {
    case 1:
        return OUTBOX_ERR_REJECTED;
    case 2:
        return OUTBOX_ERR_TIMEOUT;
    case 3:
        return OUTBOX_ERR_DB;
    default:
        return OUTBOX_OK;
    }
}
