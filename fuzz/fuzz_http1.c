/* The HTTP/1.1 framing every service request goes through (src/http/http1.c):
 * request line, header section, chunked bodies, percent-decoding. Besides
 * memory safety it checks what the parser promises: a parsed head lies
 * within the input, every field value is free of NUL and control bytes and
 * has the length it claims, and a chunked body decodes to the same bytes
 * whether it arrives at once or in two pieces. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http1.h"

static void check(int ok)
{
    if (!ok)
        abort();
}

/* Decodes in[0..n) split at cut; returns the rc and fills out/out_len. */
static outbox_http1_rc_t decode(const char *in, size_t n, size_t cut, char *out, size_t *out_len)
{
    outbox_http1_chunked_t c;
    memset(&c, 0, sizeof(c));
    const char *why = NULL;
    size_t total = 0, pos = 0;
    outbox_http1_rc_t rc = OUTBOX_HTTP1_MORE;
    size_t ends[2] = {cut, n};
    for (int piece = 0; piece < 2 && rc == OUTBOX_HTTP1_MORE; piece++) {
        size_t used = ends[piece] - pos, got = 0;
        rc = outbox__http1_chunked(&c, in + pos, &used, out + total, &got, &why);
        check(used <= ends[piece] - pos && got <= used);
        if (rc == OUTBOX_HTTP1_ERROR)
            check(why != NULL);
        total += got;
        pos += used;
        if (rc == OUTBOX_HTTP1_MORE)
            check(pos == ends[piece]);
    }
    *out_len = total;
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    outbox_http1_head_t *head = malloc(sizeof(*head));
    unsigned status = 0;
    const char *why = NULL;
    outbox_http1_rc_t rc = outbox__http1_parse_head(buf, size, head, &status, &why);
    if (rc == OUTBOX_HTTP1_ERROR) {
        check(why &&
              (status == 400 || status == 414 || status == 431 || status == 501 || status == 505));
    } else if (rc == OUTBOX_HTTP1_DONE) {
        check(head->head_len <= size && head->head_len <= OUTBOX_HTTP1_MAX_HEAD + 66);
        check(strlen(head->method) > 0 && strlen(head->target) == head->target_len);
        check(head->target_len <= OUTBOX_HTTP1_MAX_TARGET);
        check(head->nfields >= 0 && head->nfields <= OUTBOX_HTTP1_MAX_HEADERS);
        check(head->content_length >= -1 && !(head->chunked && head->content_length >= 0));
        for (int i = 0; i < head->nfields; i++) {
            const outbox_http1_field_t *f = &head->fields[i];
            check(strlen(f->name) == f->name_len && f->name_len > 0);
            check(strlen(f->value) == f->value_len);
            for (size_t k = 0; k < f->value_len; k++) {
                unsigned char ch = (unsigned char)f->value[k];
                check(ch == '\t' || (ch >= 0x20 && ch != 0x7f));
            }
        }
        char path[256];
        long n = outbox__http1_unescape(head->target, head->target_len, path, sizeof(path), 0);
        check(n < (long)sizeof(path));
        if (n >= 0) {
            check(strlen(path) == (size_t)n);
            for (long k = 0; k < n; k++)
                check((unsigned char)path[k] >= 0x20 && path[k] != 0x7f);
        }
        if (head->chunked) {
            const char *body = buf + head->head_len;
            size_t blen = size - head->head_len;
            char *a = malloc(blen + 1), *b = malloc(blen + 1);
            size_t alen = 0, bl = 0;
            size_t cut = blen ? (size_t)data[0] % (blen + 1) : 0;
            outbox_http1_rc_t ra = decode(body, blen, blen, a, &alen);
            outbox_http1_rc_t rb = decode(body, blen, cut, b, &bl);
            check(ra == rb);
            if (ra != OUTBOX_HTTP1_ERROR)
                check(alen == bl && !memcmp(a, b, alen));
            free(a);
            free(b);
        }
    } else {
        check(size <= OUTBOX_HTTP1_MAX_HEAD + 64 + OUTBOX_HTTP1_MAX_TARGET);
    }
    free(head);
    free(buf);
    return 0;
}
