/* Strict RFC 8259 scanning without conversion: see json.h. The scanner is
 * iterative (an explicit stack of container kinds, one bit per level), so
 * hostile nesting cannot overflow the C stack. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"

static int fail(outbox__json_error_t *err, size_t offset, const char *what)
{
    if (err) {
        err->offset = offset;
        err->what = what;
    }
    return -1;
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static size_t skip_ws(const char *s, size_t len, size_t p)
{
    while (p < len && is_ws(s[p]))
        p++;
    return p;
}

static int hex_val(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Length of the well-formed UTF-8 sequence (RFC 3629: no overlongs, no
 * surrogates, at most U+10FFFF) starting at s[p], or 0. */
static size_t utf8_len(const unsigned char *s, size_t len, size_t p)
{
    unsigned c = s[p];
    size_t n;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    if (len - p < n)
        return 0;
    if (s[p + 1] < lo || s[p + 1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[p + i] < 0x80 || s[p + i] > 0xBF)
            return 0;
    return n;
}

int outbox__json_utf8_valid(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t n = utf8_len(u, len, i);
        if (!n)
            return 0;
        i += n;
    }
    return 1;
}

int outbox__json_put_escaped(outbox__buf_t *b, const char *s, size_t len, int lenient)
{
    const unsigned char *u = (const unsigned char *)s;
    if (!lenient && !outbox__json_utf8_valid(s, len))
        return -1;
    static const char hex[] = "0123456789ABCDEF"; /* as jansson: \u001F */
    size_t run = 0;                               /* start of the bytes not yet appended */
    for (size_t i = 0; i < len;) {
        unsigned char c = u[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            i++;
            continue;
        }
        if (c >= 0x80) {
            size_t n = utf8_len(u, len, i);
            if (n) {
                i += n;
                continue;
            }
        }
        outbox__buf_add(b, s + run, i - run);
        char esc[6] = {'\\', (char)c, 0, 0, 0, 0};
        size_t n = 2;
        switch (c) {
        case '"':
        case '\\':
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            if (c >= 0x80) { /* ill-formed UTF-8 (lenient): U+FFFD */
                memcpy(esc, "\\ufffd", 6);
            } else {
                esc[1] = 'u', esc[2] = '0', esc[3] = '0';
                esc[4] = hex[c >> 4], esc[5] = hex[c & 15];
            }
            n = 6;
        }
        outbox__buf_add(b, esc, n);
        run = ++i;
    }
    outbox__buf_add(b, s + run, len - run);
    return 0;
}

/* Scans the string starting at the quote s[*p]; on success *p is just past
 * the closing quote. */
static int scan_string(const char *s, size_t len, size_t *p, outbox__json_error_t *err)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = *p + 1;
    while (i < len) {
        unsigned char c = u[i];
        if (c == '"') {
            *p = i + 1;
            return 0;
        }
        if (c < 0x20)
            return fail(err, i, "control character in string (must be escaped)");
        if (c == '\\') {
            if (i + 1 >= len)
                break;
            switch (s[i + 1]) {
            case '"':
            case '\\':
            case '/':
            case 'b':
            case 'f':
            case 'n':
            case 'r':
            case 't':
                i += 2;
                continue;
            case 'u':
                for (size_t k = 2; k < 6; k++) {
                    if (i + k >= len)
                        return fail(err, len, "unterminated string");
                    if (hex_val(s[i + k]) < 0)
                        return fail(err, i + k, "invalid \\u escape (want 4 hex digits)");
                }
                i += 6;
                continue;
            default:
                return fail(err, i + 1, "invalid escape in string");
            }
        }
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n = utf8_len(u, len, i);
        if (!n)
            return fail(err, i, "invalid UTF-8 in string");
        i += n;
    }
    return fail(err, len, "unterminated string");
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* -? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)? — checked, never converted. */
static int scan_number(const char *s, size_t len, size_t *p, outbox__json_error_t *err)
{
    size_t i = *p;
    if (s[i] == '-')
        i++;
    if (i >= len || !is_digit(s[i]))
        return fail(err, i, "invalid number (digit expected)");
    if (s[i] == '0')
        i++;
    else
        while (i < len && is_digit(s[i]))
            i++;
    if (i < len && s[i] == '.') {
        i++;
        if (i >= len || !is_digit(s[i]))
            return fail(err, i, "invalid number (digit expected after '.')");
        while (i < len && is_digit(s[i]))
            i++;
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i >= len || !is_digit(s[i]))
            return fail(err, i, "invalid number (digit expected in exponent)");
        while (i < len && is_digit(s[i]))
            i++;
    }
    *p = i;
    return 0;
}

/* One bit per open container: 1 = object, 0 = array. */
typedef struct nest_s {
    uint64_t small[8];
    uint64_t *bits;
    size_t cap_words, depth;
} nest_t;

static int nest_push(nest_t *n, int is_object)
{
    size_t w = n->depth / 64;
    if (w >= n->cap_words) {
        size_t cap = n->cap_words * 2;
        uint64_t *b = malloc(cap * sizeof(*b));
        if (!b)
            return -1;
        memcpy(b, n->bits, n->cap_words * sizeof(*b));
        if (n->bits != n->small)
            free(n->bits);
        n->bits = b;
        n->cap_words = cap;
    }
    uint64_t m = (uint64_t)1 << (n->depth % 64);
    if (is_object)
        n->bits[w] |= m;
    else
        n->bits[w] &= ~m;
    n->depth++;
    return 0;
}

static int nest_top_is_object(const nest_t *n)
{
    size_t d = n->depth - 1;
    return (int)((n->bits[d / 64] >> (d % 64)) & 1);
}

/* Scans one value starting at s[*p] (leading whitespace allowed); on success
 * *start is its first byte and *p is just past it. */
static int scan_value(const char *s, size_t len, size_t *p, size_t *start,
                      outbox__json_error_t *err)
{
    static const char *const lits[] = {"true", "false", "null"};
    nest_t n = {.cap_words = 8};
    n.bits = n.small;
    int rc = -1;
    size_t i = skip_ws(s, len, *p);
    *start = i;
    for (;;) {
        /* A value is due at i. */
        i = skip_ws(s, len, i);
        if (i >= len) {
            fail(err, len, "unexpected end of text (value expected)");
            goto out;
        }
        char c = s[i];
        int closed_empty = 0;
        if (c == '{' || c == '[') {
            size_t j = skip_ws(s, len, i + 1);
            if (j < len && s[j] == (c == '{' ? '}' : ']')) {
                i = j + 1;
                closed_empty = 1;
            } else {
                if (nest_push(&n, c == '{')) {
                    fail(err, i, "out of memory (nesting too deep)");
                    goto out;
                }
                i = j;
                if (c == '[')
                    continue; /* first element */
            }
        } else if (c == '"') {
            if (scan_string(s, len, &i, err))
                goto out;
        } else if (c == '-' || is_digit(c)) {
            if (scan_number(s, len, &i, err))
                goto out;
        } else {
            size_t k = 0;
            while (k < 3 && s[i] != lits[k][0])
                k++;
            size_t l = k < 3 ? strlen(lits[k]) : 0;
            if (k == 3 || len - i < l || memcmp(s + i, lits[k], l)) {
                fail(err, i,
                     c == '}' || c == ']' ? "value expected (trailing comma?)"
                                          : "unexpected character");
                goto out;
            }
            i += l;
        }
        /* Just opened a non-empty object: its first key is due. */
        if ((c == '{') && !closed_empty)
            goto key;
        /* A value ended at i: close containers as far as possible. */
        for (;;) {
            if (n.depth == 0) {
                *p = i;
                rc = 0;
                goto out;
            }
            i = skip_ws(s, len, i);
            if (i >= len) {
                fail(err, len, "unexpected end of text (unclosed object or array)");
                goto out;
            }
            int obj = nest_top_is_object(&n);
            if (s[i] == ',') {
                i++;
                break;
            }
            if (s[i] == (obj ? '}' : ']')) {
                n.depth--;
                i++;
                continue;
            }
            fail(err, i, obj ? "',' or '}' expected" : "',' or ']' expected");
            goto out;
        }
        if (!nest_top_is_object(&n))
            continue; /* next array element */
    key:
        i = skip_ws(s, len, i);
        if (i >= len || s[i] != '"') {
            fail(err, i, "member name (string) expected");
            goto out;
        }
        if (scan_string(s, len, &i, err))
            goto out;
        i = skip_ws(s, len, i);
        if (i >= len || s[i] != ':') {
            fail(err, i, "':' expected after member name");
            goto out;
        }
        i++;
    }
out:
    if (n.bits != n.small)
        free(n.bits);
    return rc;
}

int outbox__json_check(const char *s, size_t len, outbox__json_error_t *err)
{
    size_t p = 0, start;
    if (scan_value(s, len, &p, &start, err))
        return -1;
    p = skip_ws(s, len, p);
    if (p != len)
        return fail(err, p, "text after the JSON value");
    return 0;
}

/* Appends the UTF-8 encoding of code point cp to out[*n] (out holds 4). */
static void put_utf8(unsigned long cp, unsigned char *out, size_t *n)
{
    if (cp < 0x80) {
        out[(*n)++] = (unsigned char)cp;
    } else if (cp < 0x800) {
        out[(*n)++] = (unsigned char)(0xC0 | (cp >> 6));
        out[(*n)++] = (unsigned char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out[(*n)++] = (unsigned char)(0xE0 | (cp >> 12));
        out[(*n)++] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*n)++] = (unsigned char)(0x80 | (cp & 0x3F));
    } else {
        out[(*n)++] = (unsigned char)(0xF0 | (cp >> 18));
        out[(*n)++] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        out[(*n)++] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*n)++] = (unsigned char)(0x80 | (cp & 0x3F));
    }
}

static unsigned long hex4(const char *s)
{
    unsigned long v = 0;
    for (int k = 0; k < 4; k++)
        v = v * 16 + (unsigned long)hex_val(s[k]);
    return v;
}

/* Decodes the escape at s[i] (a backslash) of a valid string literal whose
 * content ends at end: its UTF-8 bytes into out[0..*n), a surrogate pair as
 * one code point. Returns the index after it, or 0 for a lone surrogate
 * (no UTF-8 text can hold it). */
static size_t unescape_at(const char *s, size_t i, size_t end, unsigned char out[4], size_t *n)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    char e = s[i + 1];
    const char *hit = e != 'u' ? strchr(from, e) : NULL;
    *n = 0;
    if (hit) {
        out[(*n)++] = (unsigned char)to[hit - from];
        return i + 2;
    }
    unsigned long cp = hex4(s + i + 2);
    i += 6;
    if (cp >= 0xD800 && cp <= 0xDBFF && i + 6 <= end && s[i] == '\\' && s[i + 1] == 'u') {
        unsigned long lo = hex4(s + i + 2);
        if (lo >= 0xDC00 && lo <= 0xDFFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            i += 6;
        }
    }
    if (cp >= 0xD800 && cp <= 0xDFFF)
        return 0;
    put_utf8(cp, out, n);
    return i;
}

/* Does the valid string literal s[a..b) (quotes included) unescape to name? */
static int string_equals(const char *s, size_t a, size_t b, const char *name)
{
    size_t i = a + 1, end = b - 1, k = 0, nl = strlen(name);
    while (i < end) {
        unsigned char buf[4];
        size_t n = 0;
        if (s[i] != '\\')
            buf[n++] = (unsigned char)s[i++];
        else if (!(i = unescape_at(s, i, end, buf, &n)))
            return 0; /* a lone surrogate names nothing we look for */
        if (k + n > nl || memcmp(name + k, buf, n))
            return 0;
        k += n;
    }
    return k == nl;
}

/* Is the member name s[a..b) (a valid string literal, quotes included, whose
 * content has a backslash only if escaped) equal to name? */
static int key_equals(const char *s, size_t a, size_t b, int escaped, const char *name, size_t nlen)
{
    if (!escaped)
        return b - a - 2 == nlen && !memcmp(s + a + 1, name, nlen);
    return string_equals(s, a, b, name);
}

int outbox__json_find_members(const char *s, size_t len, const char *const *names, size_t n,
                              outbox__json_span_t *spans, outbox__json_error_t *err)
{
    size_t i = skip_ws(s, len, 0), start, nlen[16];
    if (n > sizeof(nlen) / sizeof(nlen[0]))
        return fail(err, 0, "too many member names asked for");
    for (size_t k = 0; k < n; k++) {
        spans[k].off = spans[k].len = 0;
        nlen[k] = strlen(names[k]);
    }
    if (i >= len || s[i] != '{') {
        if (outbox__json_check(s, len, err))
            return -1;
        return fail(err, i, "not a JSON object");
    }
    i = skip_ws(s, len, i + 1);
    int found = 0;
    if (i < len && s[i] == '}') {
        i++;
    } else {
        for (;;) {
            i = skip_ws(s, len, i);
            if (i >= len || s[i] != '"')
                return fail(err, i, "member name (string) expected");
            size_t k0 = i;
            if (scan_string(s, len, &i, err))
                return -1;
            size_t k1 = i;
            int escaped = memchr(s + k0 + 1, '\\', k1 - k0 - 2) != NULL;
            i = skip_ws(s, len, i);
            if (i >= len || s[i] != ':')
                return fail(err, i, "':' expected after member name");
            i++;
            if (scan_value(s, len, &i, &start, err))
                return -1;
            for (size_t k = 0; k < n; k++) {
                if (!key_equals(s, k0, k1, escaped, names[k], nlen[k]))
                    continue;
                if (spans[k].len)
                    return fail(err, k0, "duplicate member");
                spans[k].off = start;
                spans[k].len = i - start;
                found++;
                break;
            }
            i = skip_ws(s, len, i);
            if (i < len && s[i] == ',') {
                i++;
                continue;
            }
            if (i < len && s[i] == '}') {
                i++;
                break;
            }
            return fail(err, i < len ? i : len, "',' or '}' expected");
        }
    }
    i = skip_ws(s, len, i);
    if (i != len)
        return fail(err, i, "text after the JSON value");
    return found;
}

int outbox__json_find_member(const char *s, size_t len, const char *name, size_t *off, size_t *vlen,
                             outbox__json_error_t *err)
{
    outbox__json_span_t span;
    int found = outbox__json_find_members(s, len, &name, 1, &span, err);
    if (found == 1) {
        *off = span.off;
        *vlen = span.len;
    }
    return found;
}

int outbox__json_string_dup(const char *lit, size_t len, char **out)
{
    *out = NULL;
    if (len < 2 || lit[0] != '"' || lit[len - 1] != '"')
        return -1;
    char *d = malloc(len - 1), *o = d; /* never longer than the literal */
    if (!d)
        return -2;
    size_t i = 1, end = len - 1;
    while (i < end) {
        const char *bs = memchr(lit + i, '\\', end - i);
        size_t run = bs ? (size_t)(bs - (lit + i)) : end - i;
        memcpy(o, lit + i, run);
        o += run;
        i += run;
        if (i >= end)
            break;
        size_t n = 0;
        i = unescape_at(lit, i, end, (unsigned char *)o, &n);
        if (!i || (n == 1 && *o == '\0')) {
            free(d); /* a lone surrogate or a NUL: not a C string of UTF-8 */
            return -1;
        }
        o += n;
    }
    *o = '\0';
    *out = d;
    return 0;
}

size_t outbox__json_compact(const char *s, size_t len, char *out)
{
    size_t n = 0;
    int in_str = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (in_str) {
            out[n++] = c;
            if (c == '\\' && i + 1 < len)
                out[n++] = s[++i];
            else if (c == '"')
                in_str = 0;
        } else if (!is_ws(c)) {
            out[n++] = c;
            if (c == '"')
                in_str = 1;
        }
    }
    return n;
}
