/* core/json.c: the strict scanner that lets payloads travel unconverted.
 * Validity per RFC 8259 (numbers of any size, \u0000, UTF-8), error
 * offsets, deep nesting without recursion, member lookup and compaction. */
#include <string.h>

#include "core/json.h"
#include "testutil.h"

static int valid(const char *s)
{
    return outbox__json_check(s, strlen(s), NULL) == 0;
}

int main(void)
{
    static const char *const good[] = {
        "0",
        "-0",
        "-0.0",
        "0.1",
        "19.99",
        "1e400",
        "1E-400",
        "-1.5e+10",
        "123456789012345678901234567890",
        "true",
        "false",
        "null",
        "\"\"",
        "\"a\\u0000b\"",
        "\"\\ud800\"",
        "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
        "\"\xf0\x9f\x98\x80\"",
        "[]",
        "{}",
        " [ 1 , [ ] , { } ] ",
        "{\"a\":{\"a\":{\"a\":[null]}}}",
        "\t\r\n 1 \t\r\n",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        CHECK(valid(good[i]), "valid JSON refused: %s", good[i]);

    static const struct {
        const char *text;
        size_t offset;
    } bad[] = {
        {"", 0},
        {" ", 1},
        {"+1", 0},
        {".5", 0},
        {"1.e5", 2},
        {"0x10", 1},
        {"00", 1},
        {"1e", 2},
        {"Infinity", 0},
        {"nul", 0},
        {"truex", 4},
        {"[1,]", 3},
        {"[,1]", 1},
        {"{\"a\"}", 4},
        {"{\"a\":}", 5},
        {"{1:2}", 1},
        {"{\"a\":1 \"b\":2}", 7},
        {"[1}", 2},
        {"{\"a\":1]", 6},
        {"\"abc", 4},
        {"\"\\u12\"", 5},
        {"\"\\a\"", 2},
        {"\"\x01\"", 1},
        {"\"\xed\xa0\x80\"", 1},
        {"\"\xf4\x90\x80\x80\"", 1},
        {"\"\xe2\x82\"", 1},
        {"\xef\xbb\xbf{}", 0},
        {"] ", 0},
        {"[1]]", 3},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        outbox__json_error_t e = {0};
        CHECK(outbox__json_check(bad[i].text, strlen(bad[i].text), &e) == -1,
              "invalid JSON accepted: %s", bad[i].text);
        CHECK(e.what && e.offset == bad[i].offset, "%s: error '%s' at %zu, want at %zu",
              bad[i].text, e.what ? e.what : "(none)", e.offset, bad[i].offset);
    }
    /* A NUL byte ends nothing: the length does. */
    CHECK(outbox__json_check("[1]\0", 4, NULL) == -1, "NUL byte after the value accepted");
    CHECK(outbox__json_check("\"a\0b\"", 5, NULL) == -1, "raw NUL byte in a string accepted");

    /* Deep nesting: no recursion, no limit but memory. */
    size_t depth = 100000;
    char *deep = malloc(2 * depth + 1);
    memset(deep, '[', depth);
    memset(deep + depth, ']', depth);
    CHECK(outbox__json_check(deep, 2 * depth, NULL) == 0, "100000 nested arrays refused");
    outbox__json_error_t e;
    CHECK(outbox__json_check(deep, 2 * depth - 1, &e) == -1 && e.offset == 2 * depth - 1,
          "unclosed nesting accepted or misplaced (%zu)", e.offset);
    free(deep);

    /* Member lookup in the top-level object. */
    const char *doc = "{ \"x\" : {\"data\":1}, \"d\\u0061ta\" : [ 0.1 , 1e400 ] , \"y\":\"data\" }";
    size_t off = 0, vlen = 0;
    CHECK(outbox__json_find_member(doc, strlen(doc), "data", &off, &vlen, NULL) == 1,
          "data not found");
    CHECK(vlen == strlen("[ 0.1 , 1e400 ]") && !strncmp(doc + off, "[ 0.1 , 1e400 ]", vlen),
          "span %.*s", (int)vlen, doc + off);
    CHECK(outbox__json_find_member(doc, strlen(doc), "z", &off, &vlen, NULL) == 0,
          "absent member found");
    CHECK(outbox__json_find_member("{}", 2, "data", &off, &vlen, NULL) == 0, "member of {} found");
    const char *dup = "{\"data\":1,\"data\":2}";
    CHECK(outbox__json_find_member(dup, strlen(dup), "data", &off, &vlen, &e) == -1 &&
              e.offset == 10,
          "duplicate member accepted");
    CHECK(outbox__json_find_member("[1]", 3, "data", &off, &vlen, &e) == -1 &&
              !strcmp(e.what, "not a JSON object"),
          "array taken for an object");
    const char *trail = "{\"data\":1} {}";
    CHECK(outbox__json_find_member(trail, strlen(trail), "data", &off, &vlen, &e) == -1 &&
              e.offset == 11,
          "text after the object accepted");
    const char *badval = "{\"data\":[1,]}";
    CHECK(outbox__json_find_member(badval, strlen(badval), "data", &off, &vlen, &e) == -1 &&
              e.offset == 11,
          "invalid member value accepted");
    const char *snow = "{\"\\u2603\":true,\"\\ud83d\\ude00\":false}";
    CHECK(outbox__json_find_member(snow, strlen(snow), "\xe2\x98\x83", &off, &vlen, NULL) == 1 &&
              vlen == 4,
          "escaped BMP name not matched");
    CHECK(outbox__json_find_member(snow, strlen(snow), "\xf0\x9f\x98\x80", &off, &vlen, NULL) ==
                  1 &&
              vlen == 5,
          "escaped surrogate-pair name not matched");

    /* Several members in one pass, and string literals unescaped. */
    const char *many = "{\"type\":\"T\\u00e9\\n\",\"i\\u0064\":\"x\\ud83d\\ude00\\\"\",\"n\":1,"
                       "\"data\":{\"type\":2}}";
    const char *names[] = {"id", "type", "data", "absent"};
    outbox__json_span_t sp[4];
    CHECK(outbox__json_find_members(many, strlen(many), names, 4, sp, NULL) == 3 && !sp[3].len &&
              sp[2].len == strlen("{\"type\":2}"),
          "members not found in one pass");
    char *str = NULL;
    CHECK(outbox__json_string_dup(many + sp[1].off, sp[1].len, &str) == 0 &&
              !strcmp(str, "T\xc3\xa9\n"),
          "type unescaped to %s", str ? str : "(null)");
    free(str);
    CHECK(outbox__json_string_dup(many + sp[0].off, sp[0].len, &str) == 0 &&
              !strcmp(str, "x\xf0\x9f\x98\x80\""),
          "id unescaped to %s", str ? str : "(null)");
    free(str);
    static const char *const unfit[] = {"\"a\\u0000b\"", "\"\\ud83d\"", "\"\\ude00x\"", "1"};
    for (size_t i = 0; i < sizeof(unfit) / sizeof(unfit[0]); i++) {
        CHECK(outbox__json_string_dup(unfit[i], strlen(unfit[i]), &str) == -1 && !str,
              "%s taken for a C string", unfit[i]);
    }
    const char *dup2 = "{\"id\":\"a\",\"type\":\"b\",\"\\u0069d\":\"c\"}";
    CHECK(outbox__json_find_members(dup2, strlen(dup2), names, 2, sp, &e) == -1 &&
              !strcmp(e.what, "duplicate member"),
          "duplicate id (escaped name) accepted");

    /* Escaping writes what jansson writes (the orders service's texts are
     * compared with jansson's byte for byte in fuzz/fuzz_orders.c). */
    outbox__buf_t eb = {0};
    outbox__json_put_escaped(&eb, "a\"\\\x01\x1f\x7f/\xc3\xa9\t", 10, 0);
    CHECK(eb.p && !strcmp(eb.p, "a\\\"\\\\\\u0001\\u001F\x7f/\xc3\xa9\\t"), "escaped: %s",
          eb.p ? eb.p : "(null)");
    outbox__buf_free(&eb);

    /* Compaction drops whitespace outside strings only. */
    const char *loose = " { \"a b\" : [ 1 ,\n\t2 ] , \"c\\\" d\" : \" x \\\\\" } \r\n";
    char out[128];
    size_t n = outbox__json_compact(loose, strlen(loose), out);
    const char *want = "{\"a b\":[1,2],\"c\\\" d\":\" x \\\\\"}";
    CHECK(n == strlen(want) && !memcmp(out, want, n), "compact: %.*s", (int)n, out);

    CHECK(outbox__json_utf8_valid("caf\xc3\xa9", 5) && !outbox__json_utf8_valid("\xc3", 1) &&
              !outbox__json_utf8_valid("\xc0\x80", 2),
          "UTF-8 check");
    printf("PASS unit_json\n");
    return 0;
}
