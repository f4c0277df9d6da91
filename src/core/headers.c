/* Event headers as name/value pairs: one rule for every sink (headers.h).
 * The text is checked by the strict scanner (core/json.h), which keeps
 * numbers as written; strings are unescaped by jansson. */
#include "core/headers.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"

static size_t skip_ws(const char *s, size_t len, size_t p)
{
    while (p < len && (s[p] == ' ' || s[p] == '\t' || s[p] == '\n' || s[p] == '\r'))
        p++;
    return p;
}

/* s[p] is the '"' opening a string of valid JSON: the index after its end. */
static size_t string_end(const char *s, size_t len, size_t p)
{
    for (p++; p < len && s[p] != '"'; p++)
        if (s[p] == '\\')
            p++;
    return p < len ? p + 1 : len;
}

/* The index after the valid JSON value starting at s[p]. */
static size_t value_end(const char *s, size_t len, size_t p)
{
    if (s[p] == '"')
        return string_end(s, len, p);
    if (s[p] != '{' && s[p] != '[') {
        while (p < len && !strchr(",}] \t\r\n", s[p]))
            p++; /* number, true, false, null */
        return p;
    }
    int depth = 0;
    while (p < len) {
        if (s[p] == '"') {
            p = string_end(s, len, p);
            continue;
        }
        if (s[p] == '{' || s[p] == '[')
            depth++;
        else if ((s[p] == '}' || s[p] == ']') && --depth == 0)
            return p + 1;
        p++;
    }
    return len;
}

/* Returned for a string no header can carry: valid JSON, but an escape
 * of a lone surrogate (\ud800) has no UTF-8 form. */
static char unrepresentable;

/* The JSON string s[0..n) unescaped (may hold NUL bytes: *out_len says how
 * long). malloc'd, NUL-terminated; NULL on ENOMEM; &unrepresentable when
 * jansson refuses it (a lone surrogate). */
static char *unescape(const char *s, size_t n, size_t *out_len)
{
    json_t *j = json_loadb(s, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (!json_is_string(j)) {
        json_decref(j);
        return &unrepresentable;
    }
    char *r = NULL;
    *out_len = json_string_length(j);
    if ((r = malloc(*out_len + 1))) {
        memcpy(r, json_string_value(j), *out_len);
        r[*out_len] = '\0';
    }
    json_decref(j);
    return r;
}

/* The header value of the JSON value s[0..n): a string unescaped, anything
 * else as compact JSON text. As unescape() returns. */
static char *header_value(const char *s, size_t n, size_t *out_len)
{
    if (s[0] == '"')
        return unescape(s, n, out_len);
    char *r = malloc(n + 1);
    if (r) {
        *out_len = outbox__json_compact(s, n, r);
        r[*out_len] = '\0';
    }
    return r;
}

outbox_err_t outbox__headers_each(const char *headers_json, outbox__header_fn fn, void *opaque)
{
    const char *s = headers_json;
    size_t len = s ? strlen(s) : 0;
    size_t p = skip_ws(s, len, 0);
    if (p == len)
        return OUTBOX_OK;
    if (s[p] != '{' || outbox__json_check(s, len, NULL) != 0)
        return OUTBOX_ERR_INVALID_ARG;
    outbox_err_t rc = OUTBOX_OK;
    for (p = skip_ws(s, len, p + 1); rc == OUTBOX_OK && p < len && s[p] == '"';) {
        size_t name_end = string_end(s, len, p);
        size_t v = skip_ws(s, len, skip_ws(s, len, name_end) + 1); /* past ':' */
        size_t v_end = value_end(s, len, v);
        size_t name_len = 0, value_len = 0;
        char *name = unescape(s + p, name_end - p, &name_len), *value = NULL;
        /* a lone surrogate cannot be sent: the header is skipped (not an
         * out-of-memory error retried for ever; found by fuzz/fuzz_json.c) */
        int skip = name == &unrepresentable;
        if (name && !skip) {
            value = header_value(s + v, v_end - v, &value_len);
            skip = value == &unrepresentable;
        }
        if (!skip && (!name || !value))
            rc = OUTBOX_ERR_NOMEM;
        else if (!skip && strlen(name) == name_len)
            rc = fn(opaque, name, value, value_len);
        if (name != &unrepresentable)
            free(name);
        if (value != &unrepresentable)
            free(value);
        p = skip_ws(s, len, v_end);
        if (p < len && s[p] == ',')
            p = skip_ws(s, len, p + 1);
    }
    return rc;
}
