/*
 * The services' HTTP layer on the wire: raw bytes over a real socket to the
 * layer started in this process (the same code every service runs).
 *
 *   - every refusal a client can provoke (431, 414, bad chunked framing,
 *     negative / overflowing / doubled Content-Length, HTTP/0.9, HTTP/2.0,
 *     bare CR, folding, NUL and control bytes, missing Host, unknown
 *     transfer coding, body over the limit, slow head) is one response,
 *     application/problem+json, with its status in the body;
 *   - chunked bodies, Expect: 100-continue, pipelining, HTTP/1.0, HEAD;
 *   - a slowloris of 300 connections does not stop normal requests, and
 *     its connections are answered 408 at http_header_timeout;
 *   - the connection limit answers 503 problem+json;
 *   - bearer-token authentication;
 *   - graceful stop lets a request in flight finish.
 */
#define _GNU_SOURCE /* strcasestr */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "core/util.h"
#include "http/http.h"
#include "testutil.h"

static void echo(outbox_http_req_t *req, outbox_http_resp_t *resp, void *opaque)
{
    (void)opaque;
    outbox__http_reply_raw(resp, 200, "text/plain", req->body, req->body_len);
}

static void hello(outbox_http_req_t *req, outbox_http_resp_t *resp, void *opaque)
{
    (void)opaque;
    const char *q = outbox__http_query(req, "q");
    char body[300];
    snprintf(body, sizeof(body), "{\"path\":\"%s\",\"q\":\"%s\"}", req->path, q ? q : "");
    outbox__http_reply_raw(resp, 200, "application/json", body, strlen(body));
}

static void slow(outbox_http_req_t *req, outbox_http_resp_t *resp, void *opaque)
{
    (void)req;
    (void)opaque;
    usleep(800 * 1000);
    outbox__http_reply_raw(resp, 200, "text/plain", "slow", 4);
}

static const outbox_http_route_t routes[] = {
    {"POST", "/echo", echo, 0},
    {"GET", "/hello/{name}", hello, 0},
    {"GET", "/slow", slow, 0},
    {NULL, NULL, NULL, 0},
};

static outbox_http_t *start(unsigned max_conns, const char *token, int64_t head_ms)
{
    outbox_http_opts_t o = {.name = "wire",
                            .addr = "127.0.0.1",
                            .port = 0,
                            .max_body = 1024,
                            .max_connections = max_conns,
                            .timeout_s = 5,
                            .header_timeout_ms = head_ms,
                            .auth_token = token,
                            .routes = routes};
    char err[256];
    outbox_http_t *h = outbox__http_start(&o, err, sizeof(err));
    CHECK(h, "start: %s", err);
    return h;
}

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    CHECK(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect: %s", strerror(errno));
    struct timeval tv = {.tv_sec = 15};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static void send_raw(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return; /* the server may close early: what it said is read next */
        p += w;
        n -= (size_t)w;
    }
}

/* Reads until the peer closes (or 15 s): everything the server said. */
static size_t read_all(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = recv(fd, buf + n, cap - 1 - n, 0);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    return n;
}

/* Reads one response (head + Content-Length body) without waiting for close. */
static size_t read_one(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    for (;;) {
        char *end = strstr(buf, "\r\n\r\n");
        if (n && end) {
            const char *cl = strcasestr(buf, "\r\nContent-Length:");
            size_t want = (size_t)(end + 4 - buf) + (cl ? strtoul(cl + 17, NULL, 10) : 0);
            if (n >= want)
                return n;
        }
        if (n + 1 >= cap)
            return n;
        ssize_t r = recv(fd, buf + n, cap - 1 - n, 0);
        if (r <= 0)
            return n;
        n += (size_t)r;
        buf[n] = '\0';
    }
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

/* One request that must be refused with status: exactly one response,
 * problem+json, the status in the JSON body too. */
static int nproblems;

static void expect_problem(int port, const char *what, const char *req, size_t len, unsigned status)
{
    nproblems++;
    int fd = dial(port);
    send_raw(fd, req, len);
    static char buf[65536];
    read_all(fd, buf, sizeof(buf));
    close(fd);
    char line[32];
    snprintf(line, sizeof(line), "HTTP/1.1 %u ", status);
    CHECK(!strncmp(buf, line, strlen(line)), "%s: expected %u, got: %.200s", what, status, buf);
    CHECK(count(buf, "\nHTTP/1.") == 0, "%s: %d more status lines (a doubled header block?): %s",
          what, count(buf, "\nHTTP/1."), buf);
    CHECK(strcasestr(buf, "\r\nContent-Type: application/problem+json\r\n"),
          "%s: not problem+json: %.300s", what, buf);
    const char *body = strstr(buf, "\r\n\r\n");
    CHECK(body, "%s: no body", what);
    json_error_t e;
    json_t *doc = json_loads(body + 4, 0, &e);
    CHECK(doc, "%s: body is not JSON (%s): %s", what, e.text, body + 4);
    CHECK(json_integer_value(json_object_get(doc, "status")) == status, "%s: status in body: %s",
          what, body + 4);
    CHECK(json_is_string(json_object_get(doc, "type")) &&
              json_is_string(json_object_get(doc, "detail")),
          "%s: type/detail missing: %s", what, body + 4);
    json_decref(doc);
}

#define P(port, what, lit, st) expect_problem(port, what, lit, sizeof(lit) - 1, st)

static void refusals(int port)
{
    static char big[40000];
    int n;
    /* header section too large: one huge field, then many fields */
    n = snprintf(big, sizeof(big), "GET /hello/a HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(big + n, 'a', 20000);
    n += 20000;
    n += snprintf(big + n, sizeof(big) - (size_t)n, "\r\n\r\n");
    expect_problem(port, "20 KB header", big, (size_t)n, 431);
    n = snprintf(big, sizeof(big), "GET /hello/a HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 150; i++)
        n += snprintf(big + n, sizeof(big) - (size_t)n, "X-H%d: v\r\n", i);
    n += snprintf(big + n, sizeof(big) - (size_t)n, "\r\n");
    expect_problem(port, "150 headers", big, (size_t)n, 431);
    /* URI too long: on the wire, and after decoding */
    n = snprintf(big, sizeof(big), "GET /");
    memset(big + n, 'u', 9000);
    n += 9000;
    n += snprintf(big + n, sizeof(big) - (size_t)n, " HTTP/1.1\r\nHost: x\r\n\r\n");
    expect_problem(port, "9000-byte target", big, (size_t)n, 414);
    expect_problem(port, "9000-byte target, no line end yet", big, 9000, 414);
    n = snprintf(big, sizeof(big), "GET /hello/");
    memset(big + n, 'u', 600);
    n += 600;
    n += snprintf(big + n, sizeof(big) - (size_t)n, " HTTP/1.1\r\nHost: x\r\n\r\n");
    expect_problem(port, "600-byte path", big, (size_t)n, 414);

    /* bodies and their framing */
    P(port, "bad chunk size",
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
      "chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
      400);
    P(port, "chunk size overflow",
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      "FFFFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n",
      400);
    P(port, "chunk longer than its size",
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n",
      400);
    P(port, "chunked body over the limit",
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n", 413);
    P(port, "negative Content-Length",
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\nabc", 400);
    P(port, "overflowing Content-Length",
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\nabc", 400);
    P(port, "Content-Length with letters",
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3x\r\n\r\nabc", 400);
    P(port, "two different Content-Length",
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400);
    P(port, "Content-Length and Transfer-Encoding",
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3\r\nabc\r\n0\r\n\r\n",
      400);
    P(port, "gzip transfer coding",
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501);
    P(port, "body over the limit (Content-Length)",
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc", 413);

    /* the request line */
    P(port, "HTTP/0.9 request line", "GET /hello/a\r\n", 400);
    P(port, "HTTP/2.0", "GET /hello/a HTTP/2.0\r\nHost: x\r\n\r\n", 505);
    P(port, "garbage version", "GET /hello/a HTTQ/1.1\r\nHost: x\r\n\r\n", 400);
    P(port, "no method", " /hello/a HTTP/1.1\r\nHost: x\r\n\r\n", 400);
    P(port, "non-ASCII target", "GET /hello/\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", 400);
    P(port, "percent-encoded NUL in path", "GET /hello/a%00b HTTP/1.1\r\nHost: x\r\n\r\n", 400);
    P(port, "bad percent-escape", "GET /hello/a%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400);
    P(port, "relative target", "GET hello HTTP/1.1\r\nHost: x\r\n\r\n", 400);

    /* the header section */
    P(port, "bare CR", "GET /hello/a HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n", 400);
    P(port, "obsolete folding", "GET /hello/a HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n", 400);
    P(port, "space before colon", "GET /hello/a HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n", 400);
    P(port, "NUL in a value", "GET /hello/a HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n", 400);
    P(port, "control byte in a value", "GET /hello/a HTTP/1.1\r\nHost: x\r\nX-A: a\x01\r\n\r\n",
      400);
    P(port, "DEL in a value", "GET /hello/a HTTP/1.1\r\nHost: x\r\nX-A: a\x7f\r\n\r\n", 400);
    P(port, "no Host in HTTP/1.1", "GET /hello/a HTTP/1.1\r\nX-A: b\r\n\r\n", 400);
    P(port, "two Host fields", "GET /hello/a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400);
    P(port, "no colon", "GET /hello/a HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n", 400);
    printf("refusals: %d malformed requests, each one problem+json response\n", nproblems);
}

static void accepted(int port)
{
    char buf[8192];
    /* chunked body, with an extension and a trailer */
    int fd = dial(port);
    const char *req = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
    send_raw(fd, req, strlen(req));
    read_one(fd, buf, sizeof(buf));
    CHECK(!strncmp(buf, "HTTP/1.1 200 ", 13) && strstr(buf, "\r\n\r\nhello world"), "chunked: %s",
          buf);
    /* pipelined: two requests in one write, two answers in order */
    req = "GET /hello/one?q=a+b%21 HTTP/1.1\r\nHost: x\r\n\r\n"
          "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyz";
    send_raw(fd, req, strlen(req));
    size_t n = read_one(fd, buf, sizeof(buf));
    CHECK(strstr(buf, "{\"path\":\"/hello/one\",\"q\":\"a b!\"}"), "pipelined 1: %s", buf);
    if (!strstr(buf + 20, "HTTP/1.1 200"))
        n += read_one(fd, buf + n, sizeof(buf) - n);
    CHECK(strstr(buf, "\r\n\r\nxyz"), "pipelined 2: %s", buf);
    /* Expect: 100-continue */
    req = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n";
    send_raw(fd, req, strlen(req));
    memset(buf, 0, sizeof(buf));
    n = (size_t)recv(fd, buf, sizeof(buf) - 1, 0);
    CHECK(!strncmp(buf, "HTTP/1.1 100 Continue\r\n\r\n", 25), "100-continue: %s", buf);
    send_raw(fd, "ping", 4);
    memset(buf, 0, sizeof(buf));
    read_one(fd, buf, sizeof(buf));
    CHECK(strstr(buf, "\r\n\r\nping"), "after 100-continue: %s", buf);
    /* HEAD: the headers of GET, no body */
    req = "HEAD /hello/h HTTP/1.1\r\nHost: x\r\n\r\n";
    send_raw(fd, req, strlen(req));
    memset(buf, 0, sizeof(buf));
    recv(fd, buf, sizeof(buf) - 1, 0);
    CHECK(strstr(buf, "Content-Length: 26\r\n") && strstr(buf, "\r\n\r\n")[4] == '\0', "HEAD: %s",
          buf);
    close(fd);
    /* HTTP/1.0: answered, then closed */
    fd = dial(port);
    req = "GET /hello/x HTTP/1.0\r\n\r\n";
    send_raw(fd, req, strlen(req));
    read_all(fd, buf, sizeof(buf));
    CHECK(!strncmp(buf, "HTTP/1.1 200 ", 13) && strcasestr(buf, "Connection: close"), "1.0: %s",
          buf);
    close(fd);
    /* LF-only line ends and leading empty lines are accepted */
    fd = dial(port);
    req = "\r\nGET /hello/lf HTTP/1.1\nHost: x\n\n";
    send_raw(fd, req, strlen(req));
    read_one(fd, buf, sizeof(buf));
    CHECK(strstr(buf, "/hello/lf"), "LF line ends: %s", buf);
    close(fd);
    /* the usual refusals of the router are problem+json too */
    P(port, "404", "GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404);
    P(port, "405", "DELETE /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405);
    printf("accepted: chunked, pipelined, 100-continue, HEAD, HTTP/1.0, bare LF\n");
}

typedef struct load_s {
    int port;
    int ok, fail;
    int64_t worst_ms;
} load_t;

static void *normal_requests(void *arg)
{
    load_t *l = arg;
    for (int i = 0; i < 100; i++) {
        int64_t t0 = outbox__now_ms();
        int fd = dial(l->port);
        const char *req = "GET /hello/n HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        send_raw(fd, req, strlen(req));
        char buf[2048];
        read_all(fd, buf, sizeof(buf));
        close(fd);
        int64_t ms = outbox__now_ms() - t0;
        if (ms > l->worst_ms)
            l->worst_ms = ms;
        if (!strncmp(buf, "HTTP/1.1 200 ", 13))
            l->ok++;
        else
            l->fail++;
        usleep(10 * 1000);
    }
    return NULL;
}

/* 300 connections that send a head one byte at a time, and normal
 * requests meanwhile. */
static void slowloris(void)
{
    outbox_http_t *h = start(1000, NULL, 3000);
    int port = outbox__http_port(h);
    enum { SLOW = 300 };
    static int fds[SLOW];
    const char *head = "POST /echo HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    for (int i = 0; i < SLOW; i++) {
        fds[i] = dial(port);
        send_raw(fds[i], head, strlen(head));
    }
    load_t l = {.port = port};
    pthread_t t;
    pthread_create(&t, NULL, normal_requests, &l);
    /* dribble: one byte per connection every 200 ms until the server
     * answers 408 (header timeout 3 s) */
    int64_t t0 = outbox__now_ms();
    while (outbox__now_ms() - t0 < 2500) {
        for (int i = 0; i < SLOW; i++)
            send_raw(fds[i], "a", 1);
        usleep(200 * 1000);
    }
    pthread_join(t, NULL);
    CHECK(l.fail == 0 && l.ok == 100, "normal requests during the slowloris: %d ok, %d failed",
          l.ok, l.fail);
    int answered = 0;
    for (int i = 0; i < SLOW; i++) {
        char buf[2048];
        read_all(fds[i], buf, sizeof(buf));
        if (!strncmp(buf, "HTTP/1.1 408 ", 13) && strstr(buf, "application/problem+json"))
            answered++;
        close(fds[i]);
    }
    int64_t took = outbox__now_ms() - t0;
    CHECK(answered == SLOW, "%d of %d slow heads answered 408", answered, SLOW);
    printf("slowloris: %d slow connections; 100 normal requests meanwhile all 200 (slowest "
           "%lld ms); every slow one answered 408 and closed after %lld ms\n",
           SLOW, (long long)l.worst_ms, (long long)took);
    outbox__http_stop(h, 1000);
}

static void connection_limit(void)
{
    outbox_http_t *h = start(20, NULL, 10000);
    int port = outbox__http_port(h);
    int fds[20];
    for (int i = 0; i < 20; i++)
        fds[i] = dial(port);
    usleep(300 * 1000); /* the server has accepted them (no byte needed) */
    int fd = dial(port);
    char buf[2048];
    read_all(fd, buf, sizeof(buf));
    close(fd);
    CHECK(!strncmp(buf, "HTTP/1.1 503 ", 13) && strstr(buf, "application/problem+json") &&
              strstr(buf, "too-many-connections"),
          "over the limit: %s", buf);
    for (int i = 0; i < 20; i++)
        close(fds[i]);
    /* room again once they are gone */
    int64_t deadline = outbox__now_ms() + 10000;
    for (;;) {
        fd = dial(port);
        const char *req = "GET /hello/z HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        send_raw(fd, req, strlen(req));
        read_all(fd, buf, sizeof(buf));
        close(fd);
        if (!strncmp(buf, "HTTP/1.1 200 ", 13))
            break;
        CHECK(outbox__now_ms() < deadline, "no room after the connections closed: %s", buf);
        usleep(50 * 1000);
    }
    outbox__http_stop(h, 1000);
    printf("connection limit: the 21st of 20 answered 503 problem+json; room again after\n");
}

static void bearer(void)
{
    outbox_http_t *h = start(100, "s3cr3t-token", 10000);
    int port = outbox__http_port(h);
    P(port, "no token", "GET /hello/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 401);
    P(port, "wrong token",
      "GET /hello/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cr3t-tokem\r\n"
      "Connection: close\r\n\r\n",
      401);
    P(port, "token prefix",
      "GET /hello/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cr3t\r\nConnection: "
      "close\r\n\r\n",
      401);
    P(port, "metrics without token",
      "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 401);
    char buf[4096];
    int fd = dial(port);
    const char *req = "GET /hello/a HTTP/1.1\r\nHost: x\r\nAuthorization: bearer s3cr3t-token\r\n"
                      "Connection: close\r\n\r\n";
    send_raw(fd, req, strlen(req));
    read_all(fd, buf, sizeof(buf));
    close(fd);
    CHECK(!strncmp(buf, "HTTP/1.1 200 ", 13), "right token: %s", buf);
    fd = dial(port);
    req = "GET /hello/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    send_raw(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 54);
    read_all(fd, buf, sizeof(buf));
    close(fd);
    CHECK(!strncmp(buf, "HTTP/1.1 200 ", 13), "healthz needs no token: %s", buf);
    fd = dial(port);
    send_raw(fd, req, strlen(req));
    read_all(fd, buf, sizeof(buf));
    close(fd);
    CHECK(strstr(buf, "WWW-Authenticate: Bearer realm=\"wire\""), "challenge: %s", buf);
    outbox__http_stop(h, 1000);
    printf("bearer token: missing/wrong/prefix 401 with a challenge; right one 200; probes open\n");
}

typedef struct inflight_s {
    int port;
    char buf[2048];
} inflight_t;

static void *slow_request(void *arg)
{
    inflight_t *f = arg;
    int fd = dial(f->port);
    const char *req = "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n";
    send_raw(fd, req, strlen(req));
    read_all(fd, f->buf, sizeof(f->buf));
    close(fd);
    return NULL;
}

static void graceful_stop(void)
{
    outbox_http_t *h = start(100, NULL, 10000);
    inflight_t f = {.port = outbox__http_port(h)};
    int idle = dial(f.port); /* an idle keep-alive connection: closed at stop */
    pthread_t t;
    pthread_create(&t, NULL, slow_request, &f);
    /* wait until the slow request is being handled: in flight are then 2
     * requests, it and the scrape asking */
    int64_t deadline = outbox__now_ms() + 30000;
    for (;;) {
        int fd = dial(f.port);
        const char *req = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        send_raw(fd, req, strlen(req));
        static char buf[65536];
        read_all(fd, buf, sizeof(buf));
        close(fd);
        if (strstr(buf, "outbox_http_requests_in_flight{service=\"wire\"} 2"))
            break;
        CHECK(outbox__now_ms() < deadline, "the slow request never got in flight");
        usleep(20 * 1000);
    }
    outbox__http_stop(h, 5000);
    pthread_join(t, NULL);
    CHECK(!strncmp(f.buf, "HTTP/1.1 200 ", 13) && strstr(f.buf, "Connection: close") &&
              strstr(f.buf, "\r\n\r\nslow"),
          "request in flight at stop: %s", f.buf);
    char b[16];
    CHECK(recv(idle, b, sizeof(b), 0) == 0, "idle connection not closed at stop");
    close(idle);
    printf("graceful stop: the request in flight finished (Connection: close), idle closed\n");
}

int main(void)
{
    outbox_http_t *h = start(100, NULL, 10000);
    int port = outbox__http_port(h);
    refusals(port);
    accepted(port);
    /* a head that never completes: 408 after the header timeout */
    outbox__http_stop(h, 1000);
    h = start(100, NULL, 500);
    port = outbox__http_port(h);
    P(port, "slow head", "GET /hello/a HTTP/1.1\r\nHost: x\r\n", 408);
    outbox__http_stop(h, 1000);
    slowloris();
    connection_limit();
    bearer();
    graceful_stop();
    return 0;
}
