/* A NUL byte inside an Idempotency-Key must not cut the key short: before
 * the fix the server used the part before the NUL, so "k1<NUL>evil" was
 * the key "k1" (a replay or a 422 for somebody else's key). Raw socket
 * requests (curl cannot put a NUL in a header) with a NUL or a control byte
 * anywhere in the value, in the middle of the header section and as its
 * last line, with CR LF and bare LF line ends: every one is 400
 * invalid-idempotency-key and creates nothing. Clean keys sent the same way
 * still work, and "%00" written out is just three characters. */
#include <string.h>

#include "orders_testlib.h"

#define BODY_A                                                                                     \
    "{\"user_id\":\"user-1\",\"items\":[{\"sku\":\"SKU-1\",\"quantity\":1}],\"amount\":100}"
#define BODY_B                                                                                     \
    "{\"user_id\":\"user-2\",\"items\":[{\"sku\":\"SKU-2\",\"quantity\":1}],\"amount\":200}"

/* Builds "POST /orders" with the key header (klen raw bytes) placed before
 * or after the other headers, line ends "\r\n" or "\n". */
static size_t build(char *out, size_t cap, const char *key, size_t klen, int key_last,
                    const char *eol, const char *body)
{
    size_t n = 0;
    char line[512];
#define ADD(s, l)                                                                                  \
    do {                                                                                           \
        CHECK(n + (l) < cap, "request too long");                                                  \
        memcpy(out + n, (s), (l));                                                                 \
        n += (l);                                                                                  \
    } while (0)
#define ADDS(s) ADD((s), strlen(s))
    snprintf(line, sizeof(line), "POST /orders HTTP/1.1%sHost: 127.0.0.1%s", eol, eol);
    ADDS(line);
    if (!key_last) {
        ADDS("Idempotency-Key: ");
        ADD(key, klen);
        ADDS(eol);
    }
    snprintf(line, sizeof(line),
             "Content-Type: application/json%sContent-Length: %zu%sConnection: close%s", eol,
             strlen(body), eol, eol);
    ADDS(line);
    if (key_last) {
        ADDS("Idempotency-Key: ");
        ADD(key, klen);
        ADDS(eol);
    }
    ADDS(eol);
    ADDS(body);
#undef ADDS
#undef ADD
    return n;
}

static long raw_post(int port, const char *key, size_t klen, int key_last, const char *eol,
                     const char *body, http_resp_t *r)
{
    char req[2048];
    size_t n = build(req, sizeof(req), key, klen, key_last, eol, body);
    return http_raw(port, req, n, r);
}

int main(void)
{
    svc_t s;
    svc_start(&s, "orders_header_nul", NULL);
    PGconn *db = tu_connect(s.db);
    char url[128];
    snprintf(url, sizeof(url), "%s/orders", s.url);
    http_resp_t r;

    /* Somebody's order under the key "k1". */
    CHECK(http_do("POST", url, "application/json", "k1", BODY_A, strlen(BODY_A), &r) == 201,
          "k1: %ld %s", r.status, r.body);
    char first[8192];
    snprintf(first, sizeof(first), "%s", r.body);

    static const struct {
        const char *key;
        size_t len;
        const char *what;
    } bad[] = {
        {"k1\0evil", 7, "NUL then more bytes"},
        {"k1\0", 3, "a trailing NUL"},
        {"k1\0\0\0", 5, "trailing NULs"},
        {"\0k1", 3, "a leading NUL"},
        {"k1\x01x", 4, "control byte 0x01"},
        {"k1\x1f", 3, "control byte 0x1f"},
        {"k1\x7fx", 4, "DEL"},
        {"k1\tx", 4, "a tab"},
        {"\"k1\0x\"", 6, "NUL in a quoted key"},
    };
    static const char *const eols[] = {"\r\n", "\n"};
    int cases = 0;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        for (int last = 0; last < 2; last++)
            for (int e = 0; e < 2; e++)
                for (int b = 0; b < 2; b++) {
                    const char *body =
                        b ? BODY_B : BODY_A; /* A: would replay k1; B: would be 422 */
                    long st = raw_post(s.port, bad[i].key, bad[i].len, last, eols[e], body, &r);
                    CHECK(st == 400, "%s (key %s, %s line ends, body %c): got %ld %s", bad[i].what,
                          last ? "last" : "first", e ? "LF" : "CRLF", b ? 'B' : 'A', st, r.body);
                    CHECK(strstr(r.content_type, "application/problem+json"), "%s: content type %s",
                          bad[i].what, r.content_type);
                    /* refused by the HTTP layer (any header: RFC 9110 5.5) or, for a
                     * tab (a legal field byte), by the idempotency layer */
                    CHECK(strstr(r.body, "urn:outbox:problem:invalid-idempotency-key") ||
                              (strstr(r.body, "urn:outbox:problem:bad-request") &&
                               strstr(r.body, "byte")),
                          "%s: %s", bad[i].what, r.body);
                    CHECK(!r.replayed, "%s: replayed k1's answer", bad[i].what);
                    if (bad[i].key[2] == '\0' || bad[i].key[0] == '\0')
                        CHECK(strstr(r.body, "NUL"), "%s: detail should name the NUL byte: %s",
                              bad[i].what, r.body);
                    cases++;
                }
    printf("%d raw requests with NUL/control bytes in Idempotency-Key: all 400 "
           "problem+json\n",
           cases);
    CHECK(tu_query_ll(db, "SELECT count(*) FROM orders") == 1, "an order was created by a bad key");
    CHECK(tu_query_ll(db, "SELECT count(*) FROM outbox_http_idempotency") == 1,
          "a bad key was stored");

    /* The same raw path with clean keys: no false alarms, first or last,
     * CR LF or LF; and k1 itself still replays. */
    for (int last = 0; last < 2; last++)
        for (int e = 0; e < 2; e++) {
            char key[32];
            snprintf(key, sizeof(key), "raw-%d-%d", last, e);
            long st = raw_post(s.port, key, strlen(key), last, eols[e], BODY_B, &r);
            CHECK(st == 201 && !r.replayed, "clean raw key %s: %ld %s", key, st, r.body);
            st = raw_post(s.port, key, strlen(key), last, eols[e], BODY_B, &r);
            CHECK(st == 201 && r.replayed, "clean raw key %s again: %ld replayed=%d", key, st,
                  r.replayed);
        }
    CHECK(raw_post(s.port, "k1", 2, 1, "\r\n", BODY_A, &r) == 201 && r.replayed &&
              !strcmp(r.body, first),
          "k1 raw replay: %ld %s", r.status, r.body);
    CHECK(raw_post(s.port, "\"k1\"", 4, 0, "\r\n", BODY_A, &r) == 201 && r.replayed,
          "quoted k1: %ld", r.status);

    /* "%00" written out is three printable characters: its own key. */
    CHECK(http_do("POST", url, "application/json", "k1%00evil", BODY_B, strlen(BODY_B), &r) ==
                  201 &&
              !r.replayed,
          "k1%%00evil: %ld %s", r.status, r.body);
    CHECK(tu_query_ll(db, "SELECT count(*) FROM orders") == 6, "orders at the end");

    svc_teardown(&s);
    PQfinish(db);
    printf("PASS orders_header_nul\n");
    return 0;
}
