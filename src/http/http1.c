/* HTTP/1.1 request framing: request line, header section, chunked bodies.
 * See http1.h for what is refused and why. */
#include "http/http1.h"

#include <string.h>
#include <strings.h>

static int is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* A field-value byte: HTAB, SP, VCHAR or obs-text (RFC 9110 5.5). */
static int is_field_byte(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

typedef struct line_s {
    size_t start; /* first byte */
    size_t end;   /* one past the last byte, line terminator excluded */
    size_t next;  /* first byte of the next line */
} line_t;

/* Finds the line starting at pos. 1 found, 0 incomplete, -1 a CR not
 * followed by LF inside it. */
static int next_line(const char *buf, size_t len, size_t pos, line_t *l)
{
    const char *nl = memchr(buf + pos, '\n', len - pos);
    size_t stop = nl ? (size_t)(nl - buf) : len;
    const char *cr = memchr(buf + pos, '\r', stop - pos);
    if (cr && (size_t)(cr - buf) + 1 < stop)
        return -1; /* a CR in the middle of the line */
    if (cr && !nl && (size_t)(cr - buf) + 1 < len)
        return -1;
    if (!nl)
        return 0;
    l->start = pos;
    l->end = cr ? (size_t)(cr - buf) : stop;
    l->next = stop + 1;
    return 1;
}

#define FAIL(st, w)                                                                                \
    do {                                                                                           \
        *status = (st);                                                                            \
        *why = (w);                                                                                \
        return OUTBOX_HTTP1_ERROR;                                                                 \
    } while (0)

/* Checks the request line buf[l->start..l->end). With head set, fills the
 * method, target and version and writes the NUL terminators. */
static outbox_http1_rc_t request_line(char *buf, const line_t *l, outbox_http1_head_t *head,
                                      unsigned *status, const char **why)
{
    size_t p = l->start, e = l->end;
    size_t m = p;
    while (m < e && is_tchar((unsigned char)buf[m]))
        m++;
    if (m == p)
        FAIL(400, "the request line does not start with a method");
    if (m == e || buf[m] != ' ')
        FAIL(400, "the request line is not METHOD SP request-target SP HTTP-version");
    if (m - p > 32)
        FAIL(400, "the method is longer than 32 bytes");
    size_t t = m + 1, te = t;
    while (te < e && buf[te] != ' ') {
        unsigned char c = (unsigned char)buf[te];
        if (c <= 0x20 || c >= 0x7f)
            FAIL(400, "the request-target holds a control, space or non-ASCII byte");
        te++;
    }
    if (te - t > OUTBOX_HTTP1_MAX_TARGET)
        FAIL(414, "the request-target is longer than 8000 bytes");
    if (te == t)
        FAIL(400, "the request line has no request-target");
    if (te == e)
        FAIL(400, "the request line has no HTTP version (HTTP/0.9 is not supported)");
    size_t v = te + 1;
    if (e - v != 8 || memcmp(buf + v, "HTTP/", 5) != 0 || buf[v + 5] < '0' || buf[v + 5] > '9' ||
        buf[v + 6] != '.' || buf[v + 7] < '0' || buf[v + 7] > '9')
        FAIL(400, "the HTTP version is not HTTP/1.0 or HTTP/1.1");
    if (buf[v + 5] != '1')
        FAIL(505, "only HTTP/1.0 and HTTP/1.1 are supported");
    if (head) {
        head->minor = buf[v + 7] - '0';
        buf[m] = '\0';
        buf[te] = '\0';
        head->method = buf + p;
        head->target = buf + t;
        head->target_len = te - t;
    }
    return OUTBOX_HTTP1_DONE;
}

/* Checks a field line (header or trailer); with f set, fills it and writes
 * the NUL terminators. */
static outbox_http1_rc_t field_line(char *buf, const line_t *l, outbox_http1_field_t *f,
                                    unsigned *status, const char **why)
{
    size_t p = l->start, e = l->end;
    if (buf[p] == ' ' || buf[p] == '\t')
        FAIL(400, "obsolete line folding in the header section");
    size_t n = p;
    while (n < e && is_tchar((unsigned char)buf[n]))
        n++;
    if (n == e || buf[n] != ':') {
        if (n < e && (buf[n] == ' ' || buf[n] == '\t'))
            FAIL(400, "whitespace between a header field name and its colon");
        FAIL(400, "a header line is not a field name, a colon and a value");
    }
    if (n == p)
        FAIL(400, "a header field has an empty name");
    size_t v = n + 1;
    while (v < e && (buf[v] == ' ' || buf[v] == '\t'))
        v++;
    size_t ve = e;
    while (ve > v && (buf[ve - 1] == ' ' || buf[ve - 1] == '\t'))
        ve--;
    for (size_t i = v; i < ve; i++)
        if (!is_field_byte((unsigned char)buf[i])) {
            if (buf[i] == '\0')
                FAIL(400, "a header field value holds a NUL byte");
            FAIL(400, "a header field value holds a control byte");
        }
    if (f) {
        buf[n] = '\0';
        buf[ve] = '\0'; /* ve <= e: trailing whitespace, CR or LF */
        f->name = buf + p;
        f->name_len = n - p;
        f->value = buf + v;
        f->value_len = ve - v;
    }
    return OUTBOX_HTTP1_DONE;
}

/* One pass over the head; with head NULL nothing is written (checks only). */
static outbox_http1_rc_t scan(char *buf, size_t len, outbox_http1_head_t *head, unsigned *status,
                              const char **why)
{
    size_t pos = 0;
    /* empty lines before the request line */
    while (pos < len && (buf[pos] == '\r' || buf[pos] == '\n')) {
        if (buf[pos] == '\r' && pos + 1 < len && buf[pos + 1] != '\n')
            FAIL(400, "a bare CR before the request line");
        pos++;
        if (pos > 64)
            FAIL(400, "too many empty lines before the request line");
    }
    size_t start = pos;
    line_t l;
    int r = next_line(buf, len, pos, &l);
    if (r < 0)
        FAIL(400, "a bare CR in the request line");
    if (r == 0) {
        /* incomplete request line: refuse early once it cannot fit */
        if (len - start > OUTBOX_HTTP1_MAX_TARGET + 48) {
            const char *sp = memchr(buf + start, ' ', 33 < len - start ? 33 : len - start);
            if (sp && !memchr(sp + 1, ' ', len - (size_t)(sp + 1 - buf)))
                FAIL(414, "the request-target is longer than 8000 bytes");
            FAIL(400, "the request line is too long");
        }
        return OUTBOX_HTTP1_MORE;
    }
    if (l.end - l.start > OUTBOX_HTTP1_MAX_TARGET + 48) {
        outbox_http1_rc_t rc = request_line(buf, &l, NULL, status, why);
        if (rc == OUTBOX_HTTP1_ERROR)
            return rc;
        FAIL(400, "the request line is too long");
    }
    if (request_line(buf, &l, head, status, why) == OUTBOX_HTTP1_ERROR)
        return OUTBOX_HTTP1_ERROR;
    pos = l.next;
    int nfields = 0;
    for (;;) {
        r = next_line(buf, len, pos, &l);
        if (r < 0)
            FAIL(400, "a bare CR in the header section");
        if (r == 0) {
            if (len - start > OUTBOX_HTTP1_MAX_HEAD)
                FAIL(431, "the request head is larger than 16 KiB");
            return OUTBOX_HTTP1_MORE;
        }
        if (l.next - start > OUTBOX_HTTP1_MAX_HEAD)
            FAIL(431, "the request head is larger than 16 KiB");
        if (l.end == l.start)
            break; /* the empty line ending the head */
        if (nfields >= OUTBOX_HTTP1_MAX_HEADERS)
            FAIL(431, "more than 100 header fields");
        if (field_line(buf, &l, head ? &head->fields[nfields] : NULL, status, why) ==
            OUTBOX_HTTP1_ERROR)
            return OUTBOX_HTTP1_ERROR;
        nfields++;
        pos = l.next;
    }
    if (head) {
        head->nfields = nfields;
        head->head_len = l.next;
    }
    return OUTBOX_HTTP1_DONE;
}

const char *outbox__http1_field(const outbox_http1_head_t *head, const char *name, size_t *len)
{
    for (int i = 0; i < head->nfields; i++)
        if (!strcasecmp(head->fields[i].name, name)) {
            if (len)
                *len = head->fields[i].value_len;
            return head->fields[i].value;
        }
    if (len)
        *len = 0;
    return NULL;
}

/* Calls fn for each comma-separated element of every field called name
 * (elements trimmed, empty ones skipped); stops at fn's first nonzero. */
typedef int (*element_fn)(const char *el, size_t n, void *arg);
static int each_element(const outbox_http1_head_t *head, const char *name, element_fn fn, void *arg)
{
    for (int i = 0; i < head->nfields; i++) {
        if (strcasecmp(head->fields[i].name, name) != 0)
            continue;
        const char *v = head->fields[i].value, *end = v + head->fields[i].value_len;
        while (v < end) {
            const char *c = memchr(v, ',', (size_t)(end - v));
            const char *e = c ? c : end;
            const char *a = v, *b = e;
            while (a < b && (*a == ' ' || *a == '\t'))
                a++;
            while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
                b--;
            if (b > a) {
                int rc = fn(a, (size_t)(b - a), arg);
                if (rc)
                    return rc;
            }
            v = c ? c + 1 : end;
        }
    }
    return 0;
}

typedef struct cl_s {
    int64_t value;
    int seen;
} cl_t;

static int cl_element(const char *el, size_t n, void *arg)
{
    cl_t *cl = arg;
    if (n > 18)
        return 1; /* larger than any body we could take, or an overflow */
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (el[i] < '0' || el[i] > '9')
            return 1;
        v = v * 10 + (el[i] - '0');
    }
    if (cl->seen && cl->value != v)
        return 2;
    cl->seen = 1;
    cl->value = v;
    return 0;
}

typedef struct te_s {
    int n;
    int chunked_last;
} te_t;

static int te_element(const char *el, size_t n, void *arg)
{
    te_t *te = arg;
    te->n++;
    te->chunked_last = n == 7 && !strncasecmp(el, "chunked", 7);
    return 0;
}

typedef struct conn_s {
    int close, keep_alive;
} conn_t;

static int conn_element(const char *el, size_t n, void *arg)
{
    conn_t *c = arg;
    if (n == 5 && !strncasecmp(el, "close", 5))
        c->close = 1;
    else if (n == 10 && !strncasecmp(el, "keep-alive", 10))
        c->keep_alive = 1;
    return 0;
}

static int count_fields(const outbox_http1_head_t *head, const char *name)
{
    int n = 0;
    for (int i = 0; i < head->nfields; i++)
        n += !strcasecmp(head->fields[i].name, name);
    return n;
}

outbox_http1_rc_t outbox__http1_parse_head(char *buf, size_t len, outbox_http1_head_t *head,
                                           unsigned *status, const char **why)
{
    outbox_http1_rc_t rc = scan(buf, len, NULL, status, why);
    if (rc != OUTBOX_HTTP1_DONE)
        return rc;
    memset(head, 0, sizeof(*head));
    rc = scan(buf, len, head, status, why);
    if (rc != OUTBOX_HTTP1_DONE)
        return rc; /* not reached: the first pass saw the same bytes */

    cl_t cl = {0};
    int bad = each_element(head, "Content-Length", cl_element, &cl);
    if (bad == 1)
        FAIL(400, "Content-Length is not a number of bytes");
    if (bad == 2)
        FAIL(400, "Content-Length is given twice with different values");
    if (count_fields(head, "Content-Length") && !cl.seen)
        FAIL(400, "Content-Length is empty");
    head->content_length = cl.seen ? cl.value : -1;

    if (count_fields(head, "Transfer-Encoding")) {
        if (head->minor == 0)
            FAIL(400, "Transfer-Encoding in an HTTP/1.0 request");
        if (cl.seen)
            FAIL(400, "both Content-Length and Transfer-Encoding");
        te_t te = {0};
        each_element(head, "Transfer-Encoding", te_element, &te);
        if (te.n == 0)
            FAIL(400, "Transfer-Encoding is empty");
        if (te.n != 1 || !te.chunked_last)
            FAIL(501, "the only transfer coding accepted is chunked");
        head->chunked = 1;
    }
    int hosts = count_fields(head, "Host");
    if (hosts > 1)
        FAIL(400, "more than one Host field");
    if (head->minor >= 1 && hosts == 0)
        FAIL(400, "an HTTP/1.1 request without Host");

    conn_t c = {0};
    each_element(head, "Connection", conn_element, &c);
    head->keep_alive = c.close ? 0 : head->minor >= 1 ? 1 : c.keep_alive;
    const char *expect = outbox__http1_field(head, "Expect", NULL);
    head->expect_continue = expect && !strcasecmp(expect, "100-continue");
    return OUTBOX_HTTP1_DONE;
}

/* ------------------------------------------------------------------------ */
/* chunked                                                                   */

enum {
    C_SIZE = 0,  /* chunk-size hex digits */
    C_EXT,       /* after the size: BWS, chunk extensions, up to the line end */
    C_SIZE_LF,   /* the size line's CR was seen */
    C_DATA,      /* chunk data */
    C_DATA_END,  /* CR LF after the data */
    C_DATA_LF,   /* the data's CR was seen */
    C_TRAILER0,  /* start of a trailer line (or of the final empty line) */
    C_TRAILER,   /* inside a trailer field line */
    C_TRAILER_LF /* a trailer line's CR was seen */
};

#define MAX_CHUNK_LINE 1024
#define MAX_TRAILER 8192

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#undef FAIL
#define FAIL(w)                                                                                    \
    do {                                                                                           \
        *why = (w);                                                                                \
        *in_len = i;                                                                               \
        *out_len = o;                                                                              \
        return OUTBOX_HTTP1_ERROR;                                                                 \
    } while (0)

outbox_http1_rc_t outbox__http1_chunked(outbox_http1_chunked_t *c, const char *in, size_t *in_len,
                                        char *out, size_t *out_len, const char **why)
{
    size_t n = *in_len, i = 0, o = 0;
    while (i < n) {
        unsigned char ch = (unsigned char)in[i];
        switch (c->state) {
        case C_SIZE: {
            int h = hexval(ch);
            if (h >= 0) {
                if (c->digits >= 15)
                    FAIL("a chunk size has more than 15 hex digits");
                c->remaining = c->remaining * 16 + (uint64_t)h;
                c->digits++;
                i++;
                break;
            }
            if (!c->digits)
                FAIL("a chunk does not start with its size in hex");
            c->state = C_EXT;
            c->line_len = 0;
            break; /* the same byte again, in C_EXT */
        }
        case C_EXT:
            if (ch == '\r') {
                c->state = C_SIZE_LF;
            } else if (ch == '\n') {
                goto size_line_done;
            } else if (!is_field_byte(ch) || ++c->line_len > MAX_CHUNK_LINE) {
                FAIL("a chunk extension is malformed or too long");
            } else if (c->line_len == 1 && ch != ';' && ch != ' ' && ch != '\t') {
                FAIL("a chunk size is followed by something other than an extension");
            }
            i++;
            break;
        case C_SIZE_LF:
            if (ch != '\n')
                FAIL("a chunk size line ends in a bare CR");
        size_line_done:
            i++;
            c->digits = 0;
            if (c->remaining == 0) {
                c->state = C_TRAILER0;
                c->trailer_len = 0;
            } else {
                c->state = C_DATA;
            }
            break;
        case C_DATA: {
            size_t take = n - i;
            if ((uint64_t)take > c->remaining)
                take = (size_t)c->remaining;
            memmove(out + o, in + i, take);
            o += take;
            i += take;
            c->remaining -= take;
            if (c->remaining == 0)
                c->state = C_DATA_END;
            break;
        }
        case C_DATA_END:
            if (ch == '\r') {
                c->state = C_DATA_LF;
                i++;
            } else if (ch == '\n') {
                c->state = C_SIZE;
                i++;
            } else {
                FAIL("chunk data is longer than its size");
            }
            break;
        case C_DATA_LF:
            if (ch != '\n')
                FAIL("chunk data ends in a bare CR");
            c->state = C_SIZE;
            i++;
            break;
        case C_TRAILER0:
            if (ch == '\r') {
                c->state = C_TRAILER_LF;
                c->line_len = 0;
                i++;
                break;
            }
            if (ch == '\n') {
                i++;
                *in_len = i;
                *out_len = o;
                return OUTBOX_HTTP1_DONE;
            }
            c->state = C_TRAILER;
            c->line_len = 0;
            c->digits = 0; /* in a trailer line: 1 once its colon was seen */
            /* fallthrough */
        case C_TRAILER:
            if (ch == '\r' || ch == '\n') {
                if (!c->digits)
                    FAIL("a trailer field has no colon");
                c->state = ch == '\n' ? C_TRAILER0 : C_TRAILER_LF;
                i++;
                break;
            }
            if (!c->digits) { /* the field name */
                if (ch == ':' && c->line_len > 0)
                    c->digits = 1;
                else if (!is_tchar(ch))
                    FAIL("a trailer field name is malformed");
            } else if (!is_field_byte(ch)) {
                FAIL("a trailer field value holds a control byte");
            }
            c->line_len++;
            if (++c->trailer_len > MAX_TRAILER)
                FAIL("the trailer section is larger than 8 KiB");
            i++;
            break;
        case C_TRAILER_LF:
            if (ch != '\n')
                FAIL("a trailer line ends in a bare CR");
            i++;
            if (c->line_len == 0) {
                *in_len = i;
                *out_len = o;
                return OUTBOX_HTTP1_DONE;
            }
            c->state = C_TRAILER0;
            break;
        default:
            FAIL("chunked decoder in an unknown state");
        }
    }
    *in_len = i;
    *out_len = o;
    return OUTBOX_HTTP1_MORE;
}

long outbox__http1_unescape(const char *src, size_t len, char *dst, size_t dst_size, int plus_space)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)src[i];
        if (ch == '%') {
            if (i + 2 >= len)
                return -1;
            int a = hexval((unsigned char)src[i + 1]), b = hexval((unsigned char)src[i + 2]);
            if (a < 0 || b < 0)
                return -1;
            ch = (unsigned char)(a * 16 + b);
            i += 2;
        } else if (ch == '+' && plus_space) {
            ch = ' ';
        }
        if (ch < 0x20 || ch == 0x7f)
            return -1;
        if (o + 1 >= dst_size)
            return -1;
        dst[o++] = (char)ch;
    }
    if (o >= dst_size)
        return -1;
    dst[o] = '\0';
    return (long)o;
}
