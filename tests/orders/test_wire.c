/* orders-service on the wire: the bad inputs an outside run sent (large and
 * many headers, a long URL, bad chunk sizes, negative and overflowing
 * Content-Length, an HTTP/0.9 line, a NUL in a header) each get one
 * problem+json answer and write nothing; with OUTBOX_HTTP_TOKEN the API
 * wants the bearer token (the probes do not). */
#include <string.h>

#include "orders_testlib.h"

static void expect(int port, const char *what, const char *req, size_t len, long status)
{
    http_resp_t r;
    long st = http_raw(port, req, len, &r);
    CHECK(st == status, "%s: expected %ld, got %ld %s", what, status, st, r.body);
    CHECK(strstr(r.content_type, "application/problem+json"), "%s: content type \"%s\"", what,
          r.content_type);
    CHECK(!strstr(r.body, "HTTP/1."), "%s: a second response inside the body: %s", what, r.body);
}

#define E(port, what, lit, st) expect(port, what, lit, sizeof(lit) - 1, st)

int main(void)
{
    svc_t s;
    svc_start(&s, "orders_wire", NULL);
    PGconn *db = tu_connect(s.db);
    static char big[40000];
    int n = snprintf(big, sizeof(big), "POST /orders HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(big + n, 'a', 30000);
    n += 30000;
    n += snprintf(big + n, sizeof(big) - (size_t)n, "\r\nConnection: close\r\n\r\n");
    expect(s.port, "30 KB header", big, (size_t)n, 431);
    n = snprintf(big, sizeof(big), "POST /orders HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 200; i++)
        n += snprintf(big + n, sizeof(big) - (size_t)n, "X-%d: v\r\n", i);
    n += snprintf(big + n, sizeof(big) - (size_t)n, "Connection: close\r\n\r\n");
    expect(s.port, "200 headers", big, (size_t)n, 431);
    n = snprintf(big, sizeof(big), "GET /orders/");
    memset(big + n, 'u', 10000);
    n += 10000;
    n += snprintf(big + n, sizeof(big) - (size_t)n,
                  " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    expect(s.port, "10 KB URL", big, (size_t)n, 414);
    E(s.port, "bad chunk size",
      "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: "
      "chunked\r\nConnection: close\r\n\r\n-5\r\n{}\r\n0\r\n\r\n",
      400);
    E(s.port, "negative Content-Length",
      "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
      "-5\r\nConnection: close\r\n\r\n{}",
      400);
    E(s.port, "overflowing Content-Length",
      "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
      "18446744073709551617\r\nConnection: close\r\n\r\n{}",
      400);
    E(s.port, "HTTP/0.9", "GET /orders\r\n", 400);
    E(s.port, "NUL in a header",
      "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Trace: a\0b\r\n"
      "Content-Length: 2\r\nConnection: close\r\n\r\n{}",
      400);
    CHECK(tu_query_ll(db, "SELECT count(*) FROM orders") == 0, "a refused request wrote an order");
    /* a chunked order is an order like any other */
    const char *chunked =
        "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nIdempotency-Key: "
        "wire-1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        "1d\r\n{\"user_id\":\"u1\",\"amount\":100,\r\n"
        "27\r\n\"items\":[{\"sku\":\"SKU-1\",\"quantity\":1}]}\r\n0\r\n\r\n";
    http_resp_t r;
    long st = http_raw(s.port, chunked, strlen(chunked), &r);
    CHECK(st == 201, "chunked order: %ld %s", st, r.body);
    svc_stop(&s);
    printf("bad inputs: 8 refused with one problem+json answer each, nothing written; a chunked "
           "order accepted\n");

    /* bearer token */
    char *env[] = {"OUTBOX_HTTP_TOKEN=orders-wire-token", NULL};
    svc_spawn(&s, env);
    char url[128];
    snprintf(url, sizeof(url), "%s/orders", s.url);
    const char *body =
        "{\"user_id\":\"u2\",\"amount\":100,\"items\":[{\"sku\":\"SKU-1\",\"quantity\":1}]}";
    st = http_do("POST", url, "application/json", "wire-2", body, strlen(body), &r);
    CHECK(st == 401 && strstr(r.content_type, "problem+json"), "no token: %ld %s", st, r.body);
    const char *authed =
        "POST /orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer orders-wire-token\r\n"
        "Content-Type: application/json\r\nIdempotency-Key: wire-3\r\nContent-Length: 68\r\n"
        "Connection: close\r\n\r\n"
        "{\"user_id\":\"u3\",\"amount\":100,\"items\":[{\"sku\":\"SKU-1\",\"quantity\":1}]}";
    st = http_raw(s.port, authed, strlen(authed), &r);
    CHECK(st == 201, "with the token: %ld %s", st, r.body);
    char hz[128];
    snprintf(hz, sizeof(hz), "%s/healthz", s.url);
    CHECK(http_do("GET", hz, NULL, NULL, NULL, 0, &r) == 200, "healthz without a token: %ld",
          r.status);
    CHECK(tu_query_ll(db, "SELECT count(*) FROM orders") == 2, "orders: want the chunked and the "
                                                               "authorized one");
    CHECK(count_in_file(s.log, "orders-wire-token") == 0, "the token is in the log");
    svc_teardown(&s);
    PQfinish(db);
    printf("bearer token: 401 without, 201 with, probes open, token never logged\n");
    return 0;
}
