/* The header rule every sink shares (src/core/headers.h): string values as
 * they are (unescaped), every other JSON value as its compact JSON text with
 * numbers exactly as written; order kept; names with NUL skipped; a text
 * that is not a JSON object gives no header; the callback can stop the walk. */
#include <string.h>

#include "core/headers.h"
#include "testutil.h"

typedef struct seen_s {
    char out[2048];
    size_t n;
    int calls, stop_at;
} seen_t;

/* Appends "name=value;" (a NUL byte in a value shown as \0). */
static outbox_err_t collect(void *opaque, const char *name, const char *value, size_t len)
{
    seen_t *s = opaque;
    s->calls++;
    s->n += (size_t)snprintf(s->out + s->n, sizeof(s->out) - s->n, "%s=", name);
    for (size_t i = 0; i < len && s->n + 3 < sizeof(s->out); i++) {
        if (value[i])
            s->out[s->n++] = value[i];
        else
            s->n += (size_t)snprintf(s->out + s->n, sizeof(s->out) - s->n, "\\0");
    }
    CHECK(value[len] == '\0', "value of %s is not NUL-terminated", name);
    s->n += (size_t)snprintf(s->out + s->n, sizeof(s->out) - s->n, ";");
    return s->stop_at && s->calls == s->stop_at ? OUTBOX_ERR_REJECTED : OUTBOX_OK;
}

static void expect(const char *json, outbox_err_t rc, const char *want)
{
    seen_t s = {0};
    outbox_err_t got = outbox__headers_each(json, collect, &s);
    CHECK(got == rc, "%s: returned %s, want %s", json ? json : "(null)", outbox_err_str(got),
          outbox_err_str(rc));
    CHECK(!strcmp(s.out, want), "%s:\n  got  %s\n  want %s", json ? json : "(null)", s.out, want);
    printf("ok  %-60s -> %s\n", json ? json : "(null)", s.out);
}

int main(void)
{
    expect(NULL, OUTBOX_OK, "");
    expect("", OUTBOX_OK, "");
    expect("  ", OUTBOX_OK, "");
    expect("{}", OUTBOX_OK, "");
    expect("{\"tenant\":\"acme\",\"x-b\":\"two words\"}", OUTBOX_OK, "tenant=acme;x-b=two words;");
    /* escapes in names and values are decoded */
    expect("{\"q\\\"t\":\"a\\\\b\\n\\u00fc\\ud83d\\ude00\"}", OUTBOX_OK,
           "q\"t=a\\b\n\xc3\xbc\xf0\x9f\x98\x80;");
    /* numbers exactly as written, whatever their size or form */
    expect("{\"n\": 3, \"neg\": -0, \"dec\": 1.50, \"exp\": 1E+3,"
           " \"big\": 123456789012345678901234567890, \"tiny\": 4.9e-400}",
           OUTBOX_OK,
           "n=3;neg=-0;dec=1.50;exp=1E+3;big=123456789012345678901234567890;tiny=4.9e-400;");
    /* literals, objects and arrays as compact JSON; spaces inside strings kept */
    expect("{ \"t\" : true , \"f\":false, \"z\":null,"
           " \"o\": { \"a\" : [ 1, 2.0, \"x y\" ], \"b\": {} }, \"e\": [ ] }",
           OUTBOX_OK, "t=true;f=false;z=null;o={\"a\":[1,2.0,\"x y\"],\"b\":{}};e=[];");
    /* a NUL in a value is passed with its length; a NUL in a name is skipped */
    expect("{\"v\":\"a\\u0000b\",\"bad\\u0000name\":\"x\",\"after\":\"y\"}", OUTBOX_OK,
           "v=a\\0b;after=y;");
    /* a lone surrogate (valid JSON, no UTF-8 form) in a name or a string
     * value: that header is skipped, not an out-of-memory error the sinks
     * would retry until the event is dead-lettered (fuzz/fuzz_json.c) */
    expect("{\"a\":\"1\",\"v\":\"x\\udce9\",\"\\ud800\":\"y\",\"b\":\"2\"}", OUTBOX_OK, "a=1;b=2;");
    /* order of the text, duplicates as they come */
    expect("{\"b\":\"1\",\"a\":\"2\",\"b\":\"3\"}", OUTBOX_OK, "b=1;a=2;b=3;");
    /* not an object: no header at all */
    expect("[\"a\"]", OUTBOX_ERR_INVALID_ARG, "");
    expect("\"a\"", OUTBOX_ERR_INVALID_ARG, "");
    expect("{\"a\":\"1\",}", OUTBOX_ERR_INVALID_ARG, "");
    expect("{\"a\":01}", OUTBOX_ERR_INVALID_ARG, "");
    expect("{\"a\":\"1\"} x", OUTBOX_ERR_INVALID_ARG, "");
    /* the callback stops the walk; its verdict is returned */
    seen_t s = {.stop_at = 2};
    CHECK(outbox__headers_each("{\"a\":1,\"b\":2,\"c\":3}", collect, &s) == OUTBOX_ERR_REJECTED &&
              s.calls == 2,
          "stop: rc/calls %d", s.calls);
    printf("PASS sink_headers\n");
    return 0;
}
