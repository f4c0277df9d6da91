/*
 * src/core/json.c and src/core/headers.c: the strict scanner that checks
 * event payloads, finds a member's byte span, compacts text without
 * re-encoding it, validates UTF-8, and walks an event's headers.
 *
 * Input: any bytes (one JSON text, or not). jansson is the reference:
 * what it reads (any value, NUL in strings allowed) must be JSON to the
 * scanner too, and the compacted text must read as the same value.
 */
#include <jansson.h>
#include <string.h>

#include "core/headers.h"
#include "core/json.h"
#include "fuzz_common.h"

/* RFC 3629 UTF-8, written independently of json.c. */
static int utf8_ref(const unsigned char *s, size_t len)
{
    for (size_t i = 0; i < len;) {
        unsigned c = s[i];
        size_t n;
        unsigned long cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            n = 2, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            n = 3, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            n = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (i + n > len)
            return 0;
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += n;
    }
    return 1;
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void check_member(const char *s, size_t size, int ok, json_t *j, const char *name)
{
    size_t off = 0, vlen = 0;
    outbox__json_error_t err = {0};
    int r = outbox__json_find_member(s, size, name, &off, &vlen, &err);
    FUZZ_CHECK(r >= -1 && r <= 1, "find_member returned %d", r);
    if (r >= 0)
        FUZZ_CHECK(ok, "find_member accepts what json_check refuses");
    if (r < 0) {
        FUZZ_CHECK(err.what && err.offset <= size, "error without a reason or past the end");
        if (json_is_object(j))
            FUZZ_CHECK(!strcmp(err.what, "duplicate member"),
                       "find_member refuses an object jansson reads: %s at %zu", err.what,
                       err.offset);
        return;
    }
    if (j && !json_is_object(j))
        FUZZ_CHECK(0, "find_member found an object in a %d", json_typeof(j));
    if (r == 0) {
        if (j)
            FUZZ_CHECK(!json_object_get(j, name), "member \"%s\" missed", name);
        return;
    }
    FUZZ_CHECK(off + vlen <= size && vlen > 0, "span %zu+%zu outside %zu", off, vlen, size);
    FUZZ_CHECK(!is_ws(s[off]) && !is_ws(s[off + vlen - 1]), "span has whitespace around it");
    FUZZ_CHECK(outbox__json_check(s + off, vlen, &err) == 0, "span is not JSON: %s", err.what);
    json_t *want = j ? json_object_get(j, name) : NULL;
    json_t *got = json_loadb(s + off, vlen, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (want)
        FUZZ_CHECK(got && json_equal(want, got), "member \"%s\" is not jansson's value", name);
    json_decref(got);
}

typedef struct walk_s {
    json_t *obj; /* the headers as jansson reads them, or NULL */
    size_t calls;
    int mismatch;
} walk_t;

static outbox_err_t on_header(void *opaque, const char *name, const char *value, size_t len)
{
    walk_t *w = opaque;
    w->calls++;
    FUZZ_CHECK(name && value && value[len] == '\0' && strlen(value) <= len, "bad header value");
    json_t *v = w->obj ? json_object_get(w->obj, name) : NULL;
    if (w->obj && !v)
        w->mismatch = 1;
    if (json_is_string(v) &&
        (json_string_length(v) != len || memcmp(json_string_value(v), value, len)))
        w->mismatch = 1;
    return OUTBOX_OK;
}

static void check_headers(const char *s)
{
    json_t *obj = json_loads(s, JSON_ALLOW_NUL, NULL);
    walk_t w = {json_is_object(obj) ? obj : NULL, 0, 0};
    outbox_err_t rc = outbox__headers_each(s, on_header, &w);
    FUZZ_CHECK(rc == OUTBOX_OK || rc == OUTBOX_ERR_INVALID_ARG, "headers_each returned %s",
               outbox_err_str(rc));
    if (w.obj) {
        FUZZ_CHECK(rc == OUTBOX_OK, "headers jansson reads are refused");
        /* duplicates: jansson keeps the last one, the walk visits each */
        if (w.calls == json_object_size(w.obj))
            FUZZ_CHECK(!w.mismatch, "a header differs from jansson's member");
    }
    json_decref(obj);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    outbox__json_error_t err = {0};
    int ok = outbox__json_check(s, size, &err) == 0;
    if (!ok)
        FUZZ_CHECK(err.what && err.offset <= size, "error without a reason or past the end");
    FUZZ_CHECK(outbox__json_utf8_valid(s, size) == utf8_ref(data, size), "UTF-8 verdicts differ");

    /* jansson stops at a NUL byte outside strings as if the text ended there */
    json_t *j =
        memchr(s, '\0', size) ? NULL : json_loadb(s, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (j)
        FUZZ_CHECK(ok, "jansson reads it, json_check refuses it: %s at %zu", err.what, err.offset);
    if (ok) {
        char *c = malloc(size + 1), *c2 = malloc(size + 1);
        FUZZ_CHECK(c && c2, "out of memory");
        size_t n = outbox__json_compact(s, size, c);
        FUZZ_CHECK(n <= size && n > 0, "compacted to %zu of %zu bytes", n, size);
        FUZZ_CHECK(outbox__json_check(c, n, &err) == 0, "compacted text is not JSON: %s at %zu",
                   err.what, err.offset);
        size_t n2 = outbox__json_compact(c, n, c2);
        FUZZ_CHECK(n2 == n && !memcmp(c, c2, n), "compacting is not idempotent");
        if (j) {
            json_t *jc = json_loadb(c, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
            FUZZ_CHECK(jc && json_equal(j, jc), "compacting changed the value");
            json_decref(jc);
        }
        free(c);
        free(c2);
    }

    static const char *const names[] = {"data", "id", "", "a", "\xc3\xa9", NULL};
    for (int i = 0; names[i]; i++)
        check_member(s, size, ok, j, names[i]);
    if (json_is_object(j)) {
        const char *key;
        json_t *v;
        int k = 0;
        json_object_foreach(j, key, v)
        {
            if (k++ == 8)
                break;
            check_member(s, size, ok, j, key);
        }
    }
    json_decref(j);

    char *z = fuzz_str(data, size); /* the headers column is a C string */
    check_headers(z);
    free(z);
    return 0;
}
