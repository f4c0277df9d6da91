/* The shared HTTP layer: routing, bodies, problem+json, request log,
 * health/readiness/metrics endpoints, graceful shutdown. See http.h. */
#define _GNU_SOURCE /* accept4, pipe2 */
#include "http/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/util.h"
#include "http/http1.h"

#define MAX_SERIES 256
#define MAX_HISTOS 64
static const double buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                 0.25,  0.5,    1,     2.5,  5,     10};
#define NBUCKETS (sizeof(buckets) / sizeof(buckets[0]))

typedef struct series_s {
    char method[8];
    char route[96];
    unsigned status;
    uint64_t count;
} series_t;

typedef struct histo_s {
    char method[8];
    char route[96];
    uint64_t counts[NBUCKETS];
    uint64_t total;
    double sum;
} histo_t;

/* One client connection. Between requests it waits in the I/O thread's
 * epoll set; while a request is handled a worker owns it. */
typedef struct conn_s {
    struct conn_s *prev, *next; /* h->conns, every open connection */
    struct conn_s *qnext;       /* h->ready queue */
    outbox_http_t *h;
    int fd;
    int owned; /* 1 while a worker has it */
    char *buf; /* received bytes: the head being read, then what follows it */
    size_t len, cap;
    int64_t deadline_ms;      /* while waiting: idle or head deadline */
    int head_started;         /* bytes of a head arrived: head deadline set */
    outbox_http1_rc_t rc;     /* parse result handed to the worker */
    unsigned err_status;      /* with rc == ERROR */
    const char *err_why;      /* with rc == ERROR */
    outbox_http1_head_t head; /* with rc == DONE */
} conn_t;

struct outbox_http_s {
    outbox_http_opts_t opts;
    char name[64];
    char token[256]; /* bearer token, "" when none */
    int lfd;         /* listening socket */
    int ep;          /* epoll set: lfd, wake[0] and waiting connections */
    int wake[2];     /* a byte written: the I/O thread rereads its state */
    pthread_t io;
    int port;
    pthread_mutex_t lock;
    pthread_cond_t work;  /* ready queue not empty, or stopping */
    pthread_cond_t idle;  /* inflight, workers or conns went down */
    _Atomic int stopping; /* set under lock; read without it where a late answer is harmless */
    _Atomic int inflight; /* requests being handled (changed without lock by request_*) */
    int nconns;           /* open connections */
    int workers, idle_workers;
    int nqueued; /* connections in the ready queue */
    conn_t *conns;
    conn_t *ready_head, *ready_tail;
    pthread_mutex_t mlock; /* the metrics below: apart from lock, which every hand-off takes */
    series_t series[MAX_SERIES];
    int nseries;
    histo_t histos[MAX_HISTOS];
    int nhistos;
};

/* One request, from its head to its response. */
typedef struct conn_ctx_s {
    outbox_http_t *h;
    conn_t *c;
    int64_t t0_ms;
    char method[33];
    char path[256];
    char route[96];
    const char *query; /* the target after '?', or NULL */
    char *body;
    size_t body_len, body_cap;
    unsigned status; /* response status; 0 = none */
    char *qvals[8];  /* decoded query values handed out */
    int nqvals;
} conn_ctx_t;
const char *outbox__http_status_text(unsigned s)
{
    switch (s) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return s >= 500 ? "Server Error" : s >= 400 ? "Client Error" : "OK";
    }
}

/* ------------------------------------------------------------------------ */
/* Response helpers                                                          */

void outbox__http_reply_raw(outbox_http_resp_t *resp, unsigned status, const char *content_type,
                            const char *body, size_t len)
{
    free(resp->body);
    resp->body = malloc(len + 1);
    if (!resp->body) {
        resp->status = 500;
        resp->body_len = 0;
        return;
    }
    memcpy(resp->body, body, len);
    resp->body[len] = '\0';
    resp->body_len = len;
    resp->status = status;
    snprintf(resp->content_type, sizeof(resp->content_type), "%s", content_type);
}

void outbox__http_reply_json(outbox_http_resp_t *resp, unsigned status, const json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text) {
        outbox__http_reply_raw(resp, 500, "text/plain", "out of memory\n", 14);
        return;
    }
    outbox__http_reply_raw(resp, status, "application/json", text, strlen(text));
    free(text);
}

void outbox__http_add_header(outbox_http_resp_t *resp, const char *name, const char *value)
{
    if (resp->nheaders >= (int)(sizeof(resp->headers) / sizeof(resp->headers[0])))
        return;
    snprintf(resp->headers[resp->nheaders][0], sizeof(resp->headers[0][0]), "%s", name);
    snprintf(resp->headers[resp->nheaders][1], sizeof(resp->headers[0][1]), "%s", value);
    resp->nheaders++;
}

static void problem_v(const char *path, outbox_http_resp_t *resp, unsigned status, const char *slug,
                      const char *title, const char *fmt, va_list ap)
{
    char detail[1024];
    vsnprintf(detail, sizeof(detail), fmt, ap);
    char type[128];
    if (slug)
        snprintf(type, sizeof(type), "urn:outbox:problem:%s", slug);
    else
        snprintf(type, sizeof(type), "about:blank");
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string(type));
    json_object_set_new(o, "title", json_string(title ? title : outbox__http_status_text(status)));
    json_object_set_new(o, "status", json_integer(status));
    json_object_set_new(o, "detail", json_string(detail));
    if (path)
        json_object_set_new(o, "instance", json_string(path));
    char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!text) {
        outbox__http_reply_raw(resp, 500, "text/plain", "out of memory\n", 14);
        return;
    }
    outbox__http_reply_raw(resp, status, "application/problem+json", text, strlen(text));
    free(text);
}

static void problem(const char *path, outbox_http_resp_t *resp, unsigned status, const char *slug,
                    const char *title, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void problem(const char *path, outbox_http_resp_t *resp, unsigned status, const char *slug,
                    const char *title, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    problem_v(path, resp, status, slug, title, fmt, ap);
    va_end(ap);
}

void outbox__http_problem(const outbox_http_req_t *req, outbox_http_resp_t *resp, unsigned status,
                          const char *slug, const char *title, const char *detail_fmt, ...)
{
    va_list ap;
    va_start(ap, detail_fmt);
    problem_v(req ? req->path : NULL, resp, status, slug, title, detail_fmt, ap);
    va_end(ap);
}

void outbox__http_problem_member(outbox_http_resp_t *resp, const char *name, const char *value)
{
    if (!resp->body || strcmp(resp->content_type, "application/problem+json") != 0)
        return;
    json_t *o = json_loadb(resp->body, resp->body_len, 0, NULL);
    if (json_is_object(o) && !json_object_set_new(o, name, json_string(value))) {
        char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (text)
            outbox__http_reply_raw(resp, resp->status, "application/problem+json", text,
                                   strlen(text));
        free(text);
    }
    json_decref(o);
}

/* ------------------------------------------------------------------------ */
/* Request helpers                                                           */

const char *outbox__http_param(const outbox_http_req_t *req, const char *name)
{
    for (int i = 0; i < req->nparams; i++)
        if (!strcmp(req->param_names[i], name))
            return req->param_values[i];
    return NULL;
}

const char *outbox__http_query(const outbox_http_req_t *req, const char *name)
{
    conn_ctx_t *ctx = req->internal;
    if (!ctx || !ctx->query)
        return NULL;
    size_t nlen = strlen(name);
    const char *p = ctx->query;
    while (*p) {
        size_t n = strcspn(p, "&");
        const char *eq = memchr(p, '=', n);
        size_t klen = eq ? (size_t)(eq - p) : n;
        char key[128];
        if (klen < sizeof(key) && outbox__http1_unescape(p, klen, key, sizeof(key), 1) >= 0 &&
            strlen(key) == nlen && !memcmp(key, name, nlen)) {
            if (ctx->nqvals >= (int)(sizeof(ctx->qvals) / sizeof(ctx->qvals[0])))
                return NULL;
            const char *v = eq ? eq + 1 : p + n;
            size_t vlen = (size_t)(p + n - v);
            char *out = malloc(vlen + 1);
            if (!out || outbox__http1_unescape(v, vlen, out, vlen + 1, 1) < 0) {
                free(out);
                return NULL;
            }
            ctx->qvals[ctx->nqvals++] = out;
            return out;
        }
        p += n;
        if (*p == '&')
            p++;
    }
    return NULL;
}

const char *outbox__http_header(const outbox_http_req_t *req, const char *name)
{
    const conn_ctx_t *ctx = req->internal;
    return ctx ? outbox__http1_field(&ctx->c->head, name, NULL) : NULL;
}

const char *outbox__http_header_n(const outbox_http_req_t *req, const char *name, size_t *len)
{
    const conn_ctx_t *ctx = req->internal;
    *len = 0;
    return ctx ? outbox__http1_field(&ctx->c->head, name, len) : NULL;
}
/* ------------------------------------------------------------------------ */
/* Metrics                                                                   */

static void record(outbox_http_t *h, const conn_ctx_t *ctx, double seconds)
{
    pthread_mutex_lock(&h->mlock);
    int i;
    for (i = 0; i < h->nseries; i++)
        if (h->series[i].status == ctx->status && !strcmp(h->series[i].method, ctx->method) &&
            !strcmp(h->series[i].route, ctx->route))
            break;
    if (i == h->nseries && h->nseries < MAX_SERIES) {
        series_t *s = &h->series[h->nseries++];
        snprintf(s->method, sizeof(s->method), "%s", ctx->method);
        snprintf(s->route, sizeof(s->route), "%s", ctx->route);
        s->status = ctx->status;
    }
    if (i < h->nseries)
        h->series[i].count++;
    for (i = 0; i < h->nhistos; i++)
        if (!strcmp(h->histos[i].method, ctx->method) && !strcmp(h->histos[i].route, ctx->route))
            break;
    if (i == h->nhistos && h->nhistos < MAX_HISTOS) {
        histo_t *x = &h->histos[h->nhistos++];
        snprintf(x->method, sizeof(x->method), "%s", ctx->method);
        snprintf(x->route, sizeof(x->route), "%s", ctx->route);
    }
    if (i < h->nhistos) {
        histo_t *x = &h->histos[i];
        for (size_t b = 0; b < NBUCKETS; b++)
            if (seconds <= buckets[b])
                x->counts[b]++;
        x->total++;
        x->sum += seconds;
    }
    pthread_mutex_unlock(&h->mlock);
}

static void render_metrics(outbox_http_t *h, outbox__buf_t *b)
{
    pthread_mutex_lock(&h->mlock);
    outbox__buf_printf(
        b, "# HELP outbox_http_requests_total HTTP requests handled, by route and status.\n"
           "# TYPE outbox_http_requests_total counter\n");
    for (int i = 0; i < h->nseries; i++)
        outbox__buf_printf(b,
                           "outbox_http_requests_total{service=\"%s\",method=\"%s\",route=\"%s\","
                           "status=\"%u\"} %llu\n",
                           h->name, h->series[i].method, h->series[i].route, h->series[i].status,
                           (unsigned long long)h->series[i].count);
    outbox__buf_printf(
        b, "# HELP outbox_http_request_duration_seconds Time from request start to response sent.\n"
           "# TYPE outbox_http_request_duration_seconds histogram\n");
    for (int i = 0; i < h->nhistos; i++) {
        const histo_t *x = &h->histos[i];
        for (size_t k = 0; k < NBUCKETS; k++)
            outbox__buf_printf(b,
                               "outbox_http_request_duration_seconds_bucket{service=\"%s\",method="
                               "\"%s\",route=\"%s\",le=\"%g\"} %llu\n",
                               h->name, x->method, x->route, buckets[k],
                               (unsigned long long)x->counts[k]);
        outbox__buf_printf(b,
                           "outbox_http_request_duration_seconds_bucket{service=\"%s\",method=\"%"
                           "s\",route=\"%s\",le=\"+Inf\"} %llu\n",
                           h->name, x->method, x->route, (unsigned long long)x->total);
        outbox__buf_printf(b,
                           "outbox_http_request_duration_seconds_sum{service=\"%s\",method=\"%s\","
                           "route=\"%s\"} %.6f\n",
                           h->name, x->method, x->route, x->sum);
        outbox__buf_printf(b,
                           "outbox_http_request_duration_seconds_count{service=\"%s\",method=\"%"
                           "s\",route=\"%s\"} %llu\n",
                           h->name, x->method, x->route, (unsigned long long)x->total);
    }
    pthread_mutex_unlock(&h->mlock);
    int inflight = h->inflight;
    outbox__buf_printf(b,
                       "# HELP outbox_http_requests_in_flight Requests being handled now.\n"
                       "# TYPE outbox_http_requests_in_flight "
                       "gauge\noutbox_http_requests_in_flight{service=\"%s\"} %d\n",
                       h->name, inflight);
}

/* ------------------------------------------------------------------------ */
/* Routing                                                                   */

/* Path parameters copied out of the pattern and the path. */
typedef struct param_store_s {
    char names[OUTBOX_HTTP_MAX_PARAMS][32];
    char values[OUTBOX_HTTP_MAX_PARAMS][256];
} param_store_t;

/* 1 if path matches pattern segment by segment ("{name}" matches one
 * non-empty segment); then req's params point into ps. */
static int match(const char *pattern, const char *path, outbox_http_req_t *req, param_store_t *ps)
{
    req->nparams = 0;
    const char *p = pattern, *s = path;
    while (*p == '/' && *s == '/') {
        p++;
        s++;
        size_t plen = strcspn(p, "/"), slen = strcspn(s, "/");
        if (plen >= 2 && p[0] == '{' && p[plen - 1] == '}') {
            int i = req->nparams;
            if (slen == 0 || i >= OUTBOX_HTTP_MAX_PARAMS || slen >= sizeof(ps->values[0]))
                return 0;
            snprintf(ps->names[i], sizeof(ps->names[i]), "%.*s", (int)(plen - 2), p + 1);
            snprintf(ps->values[i], sizeof(ps->values[i]), "%.*s", (int)slen, s);
            req->param_names[i] = ps->names[i];
            req->param_values[i] = ps->values[i];
            req->nparams++;
        } else if (plen != slen || strncmp(p, s, plen) != 0) {
            return 0;
        }
        p += plen;
        s += slen;
    }
    return *p == '\0' && *s == '\0';
}

static int is_json_type(const char *ct)
{
    if (!ct)
        return 0;
    while (*ct == ' ')
        ct++;
    size_t n = strcspn(ct, "; ");
    if (n == 16 && !strncasecmp(ct, "application/json", 16))
        return 1;
    /* application/<something>+json */
    return n > 17 && !strncasecmp(ct, "application/", 12) && !strncasecmp(ct + n - 5, "+json", 5);
}

/* 1 when the request carries "Authorization: Bearer <h->token>". The
 * comparison takes the same time wherever the first difference is. */
static int authorized(const outbox_http_t *h, const conn_ctx_t *ctx)
{
    size_t len = 0;
    const char *v = outbox__http1_field(&ctx->c->head, "Authorization", &len);
    if (!v || len < 7 || strncasecmp(v, "Bearer ", 7) != 0)
        return 0;
    v += 7;
    len -= 7;
    while (len && *v == ' ') {
        v++;
        len--;
    }
    size_t tlen = strlen(h->token);
    unsigned char diff = (unsigned char)(len != tlen);
    for (size_t i = 0; i < tlen; i++)
        diff |= (unsigned char)(h->token[i] ^ (i < len ? v[i] : 0));
    return diff == 0;
}

/* Runs the route table (or a built-in endpoint) for a complete request. */
static void dispatch(outbox_http_t *h, conn_ctx_t *ctx, outbox_http_resp_t *resp)
{
    const char *method = ctx->method;
    const char *path = ctx->path;
    int is_get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    int probe = !strcmp(path, "/healthz") || !strcmp(path, "/readyz");
    if (h->token[0] && !probe && !authorized(h, ctx)) {
        snprintf(ctx->route, sizeof(ctx->route), "unauthorized");
        problem(path, resp, 401, "unauthorized", NULL,
                "this API needs the header Authorization: Bearer <token> (http_token)");
        char challenge[96];
        snprintf(challenge, sizeof(challenge), "Bearer realm=\"%s\"", h->name);
        outbox__http_add_header(resp, "WWW-Authenticate", challenge);
        return;
    }
    if (probe || !strcmp(path, "/metrics")) {
        snprintf(ctx->route, sizeof(ctx->route), "%s", path);
        if (!is_get) {
            problem(path, resp, 405, NULL, NULL, "%s supports GET only", path);
            outbox__http_add_header(resp, "Allow", "GET, HEAD");
            return;
        }
        if (!strcmp(path, "/healthz")) {
            outbox__http_reply_raw(resp, 200, "application/json", "{\"status\":\"ok\"}", 15);
        } else if (!strcmp(path, "/readyz")) {
            char why[256] = "";
            if (h->opts.ready && h->opts.ready(h->opts.opaque, why, sizeof(why)) != 0)
                problem(path, resp, 503, "not-ready", "Service Unavailable", "not ready: %s", why);
            else
                outbox__http_reply_raw(resp, 200, "application/json", "{\"status\":\"ready\"}", 18);
        } else {
            outbox__buf_t b = {0};
            if (h->opts.metrics)
                h->opts.metrics(h->opts.opaque, &b);
            render_metrics(h, &b);
            if (b.broken || !b.p)
                outbox__http_reply_raw(resp, 500, "text/plain", "out of memory\n", 14);
            else
                outbox__http_reply_raw(resp, 200, "text/plain; version=0.0.4", b.p, b.len);
            free(b.p);
        }
        return;
    }

    outbox_http_req_t req;
    memset(&req, 0, sizeof(req));
    req.method = method;
    req.path = path;
    req.body = ctx->body ? ctx->body : "";
    req.body_len = ctx->body_len;
    req.internal = ctx;
    param_store_t ps;
    const outbox_http_route_t *found = NULL;
    char allow[64] = "";
    const char *allow_pattern = NULL;
    for (const outbox_http_route_t *r = h->opts.routes; r && r->method; r++) {
        if (!match(r->pattern, path, &req, &ps))
            continue;
        int same =
            !strcmp(r->method, method) || (!strcmp(method, "HEAD") && !strcmp(r->method, "GET"));
        if (same) {
            found = r;
            break;
        }
        if (!allow_pattern)
            allow_pattern = r->pattern;
        size_t n = strlen(allow);
        snprintf(allow + n, sizeof(allow) - n, "%s%s", n ? ", " : "", r->method);
    }
    if (!found) {
        snprintf(ctx->route, sizeof(ctx->route), "%s", allow_pattern ? allow_pattern : "unmatched");
        if (allow[0]) {
            problem(path, resp, 405, "method-not-allowed", NULL,
                    "%s is not allowed on %s; allowed: %s", method, path, allow);
            outbox__http_add_header(resp, "Allow", allow);
        } else {
            problem(path, resp, 404, "not-found", NULL, "no resource at %s", path);
        }
        return;
    }
    snprintf(ctx->route, sizeof(ctx->route), "%s", found->pattern);
    req.route = found->pattern;

    json_t *doc = NULL;
    if (found->json_body) {
        const char *ct = outbox__http1_field(&ctx->c->head, "Content-Type", NULL);
        if (ctx->body_len == 0) {
            problem(path, resp, 400, "body-required", NULL,
                    "%s %s needs a JSON object body (Content-Type: application/json)", method,
                    path);
            return;
        }
        if (!is_json_type(ct)) {
            problem(path, resp, 415, "unsupported-media-type", NULL,
                    "Content-Type must be application/json, got \"%.60s\"", ct ? ct : "(none)");
            return;
        }
        json_error_t jerr;
        doc = json_loadb(ctx->body, ctx->body_len, JSON_REJECT_DUPLICATES, &jerr);
        if (!doc) {
            problem(path, resp, 400, "malformed-json", NULL,
                    "request body is not valid JSON: %s (line %d, column %d)", jerr.text, jerr.line,
                    jerr.column);
            return;
        }
        if (!json_is_object(doc)) {
            json_decref(doc);
            problem(path, resp, 400, "malformed-json", NULL, "request body must be a JSON object");
            return;
        }
        req.json = doc;
    }
    found->handler(&req, resp, h->opts.opaque);
    json_decref(doc);
    if (!resp->status)
        problem(path, resp, 500, "internal", NULL, "the handler produced no response");
}

/* ------------------------------------------------------------------------ */
/* The server. One I/O thread accepts connections and reads request heads   */
/* for all of them (a slow client costs a socket and a buffer, not a       */
/* thread); a pool of workers reads bodies, runs handlers and writes       */
/* responses. Every answer, the layer's own refusals included, is built    */
/* here, so every error a client can receive is problem+json.              */

#define IO_BUF_MIN 4096
#define IO_BUF_MAX (OUTBOX_HTTP1_MAX_HEAD + 1024)
#define MIN_WORKERS 2
#define WORKER_IDLE_EXIT_MS 10000
#define LINGER_MS 1000
/* How long a worker waits on its keep-alive connection for the next request
 * before handing it back to the I/O thread (see wait_next). */
#define KEEP_WAIT_MS 20

static int64_t idle_timeout_ms(const outbox_http_t *h)
{
    return (int64_t)(h->opts.timeout_s ? h->opts.timeout_s : 30) * 1000;
}

static int64_t head_timeout_ms(const outbox_http_t *h)
{
    return h->opts.header_timeout_ms > 0 ? h->opts.header_timeout_ms : 10000;
}

/* Writes all of p; -1 on an error or when deadline_ms passes first. */
static int send_all(int fd, const char *p, size_t n, int64_t deadline_ms)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int64_t left = deadline_ms - outbox__now_ms();
            if (left <= 0)
                return -1;
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            if (poll(&pf, 1, (int)(left > 1000 ? 1000 : left)) < 0 && errno != EINTR)
                return -1;
            continue;
        }
        return -1;
    }
    return 0;
}

/* Reads up to n bytes: > 0 read, 0 end of stream, -1 error, -2 deadline. */
static ssize_t recv_until(int fd, char *p, size_t n, int64_t deadline_ms)
{
    for (;;) {
        ssize_t r = recv(fd, p, n, 0);
        if (r >= 0)
            return r;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        int64_t left = deadline_ms - outbox__now_ms();
        if (left <= 0)
            return -2;
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, (int)(left > 1000 ? 1000 : left)) < 0 && errno != EINTR)
            return -1;
    }
}

/* The status line, headers and (unless head_only) body of resp, sent. */
static int write_response(const outbox_http_t *h, int fd, const outbox_http_resp_t *resp,
                          int head_only, int keep)
{
    outbox__buf_t b = {0};
    outbox__buf_printf(&b, "HTTP/1.1 %u %s\r\n", resp->status,
                       outbox__http_status_text(resp->status));
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    outbox__buf_printf(&b, "Date: %s\r\n", date);
    int nobody = resp->status == 204 || resp->status == 304;
    if (resp->content_type[0] && !nobody)
        outbox__buf_printf(&b, "Content-Type: %s\r\n", resp->content_type);
    if (!nobody)
        outbox__buf_printf(&b, "Content-Length: %zu\r\n", resp->body_len);
    for (int i = 0; i < resp->nheaders; i++)
        if (!strpbrk(resp->headers[i][0], "\r\n:") && !strpbrk(resp->headers[i][1], "\r\n"))
            outbox__buf_printf(&b, "%s: %s\r\n", resp->headers[i][0], resp->headers[i][1]);
    if (!keep)
        outbox__buf_adds(&b, "Connection: close\r\n");
    outbox__buf_adds(&b, "\r\n");
    if (!head_only && !nobody && resp->body_len)
        outbox__buf_add(&b, resp->body, resp->body_len);
    int rc = b.broken ? -1 : send_all(fd, b.p, b.len, outbox__now_ms() + idle_timeout_ms(h));
    outbox__buf_free(&b);
    return rc;
}

/* The request log line and the metrics of a finished request. */
static void finish_log(outbox_http_t *h, conn_ctx_t *ctx, int sent)
{
    double secs = (double)(outbox__now_ms() - ctx->t0_ms) / 1000.0;
    if (ctx->status)
        record(h, ctx, secs);
    char st[16], dur[32], in[24];
    snprintf(st, sizeof(st), "%u", ctx->status);
    snprintf(dur, sizeof(dur), "%.1f", secs * 1000.0);
    snprintf(in, sizeof(in), "%zu", ctx->body_len);
    char msg[400];
    snprintf(msg, sizeof(msg), "%s %s %u%s", ctx->method, ctx->path, ctx->status,
             sent ? "" : " (connection closed early)");
    int quiet = h->opts.quiet || !strcmp(ctx->route, "/healthz") ||
                !strcmp(ctx->route, "/readyz") || !strcmp(ctx->route, "/metrics");
    outbox__log(quiet                ? OUTBOX_LOG_DEBUG
                : ctx->status >= 500 ? OUTBOX_LOG_WARN
                                     : OUTBOX_LOG_INFO,
                h->name, "request", msg, "method", ctx->method, "path", ctx->path, "route",
                ctx->route, "status", st, "duration_ms", dur, "bytes_in", in, NULL);
}

/* Reads the rest of the stream for a moment before closing, so that the
 * client reads the answer rather than a reset (a body it was still sending
 * when it was refused). */
static void linger_close(int fd)
{
    shutdown(fd, SHUT_WR);
    char sink[4096];
    size_t total = 0;
    int64_t deadline = outbox__now_ms() + LINGER_MS;
    while (total < 256 * 1024) {
        ssize_t r = recv_until(fd, sink, sizeof(sink), deadline);
        if (r <= 0)
            break;
        total += (size_t)r;
    }
}

static void conn_free(outbox_http_t *h, conn_t *c, int linger)
{
    pthread_mutex_lock(&h->lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    h->nconns--;
    pthread_cond_broadcast(&h->idle);
    pthread_mutex_unlock(&h->lock);
    if (linger)
        linger_close(c->fd);
    close(c->fd);
    free(c->buf);
    free(c);
}

/* An answer made by the layer itself (no handler ran): a problem+json
 * document, then the connection is closed. */
static void refuse(outbox_http_t *h, conn_t *c, conn_ctx_t *ctx, unsigned status, const char *slug,
                   const char *detail, int blocking)
{
    outbox_http_resp_t resp;
    memset(&resp, 0, sizeof(resp));
    problem(ctx && ctx->path[0] != '-' ? ctx->path : NULL, &resp, status, slug, NULL, "%s", detail);
    conn_ctx_t local;
    if (!ctx) {
        memset(&local, 0, sizeof(local));
        ctx = &local;
        ctx->t0_ms = outbox__now_ms();
        snprintf(ctx->method, sizeof(ctx->method), "-");
        snprintf(ctx->path, sizeof(ctx->path), "-");
    }
    snprintf(ctx->route, sizeof(ctx->route), "refused");
    ctx->status = status;
    int sent;
    if (blocking) {
        sent = write_response(h, c->fd, &resp, 0, 0) == 0;
    } else { /* the I/O thread: one try, never wait */
        outbox__buf_t b = {0};
        outbox__buf_printf(&b,
                           "HTTP/1.1 %u %s\r\nContent-Type: application/problem+json\r\n"
                           "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                           status, outbox__http_status_text(status), resp.body_len);
        outbox__buf_add(&b, resp.body, resp.body_len);
        sent = !b.broken && send(c->fd, b.p, b.len, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)b.len;
        outbox__buf_free(&b);
    }
    free(resp.body);
    finish_log(h, ctx, sent);
}

/* The request path (percent-decoded) and query of the target; 0 or the
 * status to refuse with. */
static unsigned split_target(conn_ctx_t *ctx, const char *t, const char **why)
{
    if (!strncasecmp(t, "http://", 7) || !strncasecmp(t, "https://", 8)) {
        const char *auth = strstr(t, "//") + 2;
        const char *slash = strchr(auth, '/');
        t = slash ? slash : "/";
    }
    if (t[0] != '/') {
        *why = "the request-target must be a path starting with /";
        return 400;
    }
    const char *q = strchr(t, '?');
    size_t plen = q ? (size_t)(q - t) : strlen(t);
    ctx->query = q ? q + 1 : NULL;
    if (outbox__http1_unescape(t, plen, ctx->path, sizeof(ctx->path), 0) < 0) {
        snprintf(ctx->path, sizeof(ctx->path), "-");
        if (plen >= sizeof(ctx->path)) {
            *why = "the request path is longer than 255 bytes";
            return 414;
        }
        *why = "the request path holds a malformed percent-escape or a control byte";
        return 400;
    }
    return 0;
}

/* Grows ctx->body to hold need more bytes (and a NUL). */
static int body_reserve(conn_ctx_t *ctx, size_t need)
{
    if (ctx->body_len + need + 1 <= ctx->body_cap)
        return 0;
    size_t cap = ctx->body_cap ? ctx->body_cap : 1024;
    while (cap < ctx->body_len + need + 1)
        cap *= 2;
    char *nb = realloc(ctx->body, cap);
    if (!nb)
        return -1;
    ctx->body = nb;
    ctx->body_cap = cap;
    return 0;
}

typedef struct body_result_s {
    unsigned status; /* 0 = body read; else refuse with it */
    const char *slug, *why;
    int gone;      /* the client went away: no answer */
    size_t after;  /* first byte of c->buf after the request */
    char *extra;   /* bytes after the request read past c->buf (malloc'd) */
    size_t nextra; /* their length */
} body_result_t;

static void read_body(outbox_http_t *h, conn_t *c, conn_ctx_t *ctx, body_result_t *br)
{
    const outbox_http1_head_t *hd = &c->head;
    size_t after = hd->head_len;
    br->after = after;
    int64_t deadline = outbox__now_ms() + idle_timeout_ms(h);
    if (hd->content_length > (int64_t)h->opts.max_body) {
        br->status = 413;
        br->slug = "body-too-large";
        br->why = "the request body is larger than the limit (http_max_body)";
        return;
    }
    if ((hd->content_length > 0 || hd->chunked) && hd->expect_continue &&
        send_all(c->fd, "HTTP/1.1 100 Continue\r\n\r\n", 25, deadline) < 0) {
        br->gone = 1;
        return;
    }
    if (hd->content_length > 0) {
        size_t cl = (size_t)hd->content_length;
        if (body_reserve(ctx, cl) < 0) {
            br->status = 500;
            br->slug = "internal";
            br->why = "out of memory";
            return;
        }
        size_t take = c->len - after < cl ? c->len - after : cl;
        memcpy(ctx->body, c->buf + after, take);
        ctx->body_len = take;
        br->after = after + take;
        while (ctx->body_len < cl) {
            ssize_t r = recv_until(c->fd, ctx->body + ctx->body_len, cl - ctx->body_len, deadline);
            if (r == -2) {
                br->status = 408;
                br->slug = "request-timeout";
                br->why = "the request body did not arrive in time (http_timeout)";
                return;
            }
            if (r <= 0) {
                br->gone = 1;
                return;
            }
            ctx->body_len += (size_t)r;
        }
        ctx->body[ctx->body_len] = '\0';
        return;
    }
    if (!hd->chunked)
        return;
    outbox_http1_chunked_t ch;
    memset(&ch, 0, sizeof(ch));
    const char *in = c->buf + after;
    size_t avail = c->len - after;
    char *raw = NULL;
    const size_t rawcap = 16384;
    for (;;) {
        if (body_reserve(ctx, avail) < 0) {
            br->status = 500;
            br->slug = "internal";
            br->why = "out of memory";
            break;
        }
        size_t used = avail, out = 0;
        const char *why = NULL;
        outbox_http1_rc_t rc =
            outbox__http1_chunked(&ch, in, &used, ctx->body + ctx->body_len, &out, &why);
        ctx->body_len += out;
        if (ctx->body)
            ctx->body[ctx->body_len] = '\0';
        if (rc == OUTBOX_HTTP1_ERROR) {
            br->status = 400;
            br->slug = "bad-chunked-body";
            br->why = why;
            break;
        }
        /* ch.remaining: what the chunk being read still declares */
        if (ctx->body_len > h->opts.max_body || ch.remaining > h->opts.max_body - ctx->body_len) {
            br->status = 413;
            br->slug = "body-too-large";
            br->why = "the request body is larger than the limit (http_max_body)";
            break;
        }
        if (rc == OUTBOX_HTTP1_DONE) {
            if (!raw) {
                br->after = after + used;
            } else {
                br->after = c->len; /* all of c->buf was consumed */
                br->nextra = avail - used;
                if (br->nextra) {
                    br->extra = malloc(br->nextra);
                    if (br->extra)
                        memcpy(br->extra, in + used, br->nextra);
                    else
                        br->nextra = 0;
                }
            }
            break;
        }
        if (!raw && !(raw = malloc(rawcap))) {
            br->status = 500;
            br->slug = "internal";
            br->why = "out of memory";
            break;
        }
        ssize_t r = recv_until(c->fd, raw, rawcap, deadline);
        if (r == -2) {
            br->status = 408;
            br->slug = "request-timeout";
            br->why = "the request body did not arrive in time (http_timeout)";
            break;
        }
        if (r <= 0) {
            br->gone = 1;
            break;
        }
        in = raw;
        avail = (size_t)r;
    }
    free(raw);
}

/* Handles the request whose head is in c->head. Returns 1 when the
 * connection can carry another request (its bytes are then at the start of
 * c->buf), 0 when it must be closed (done here, with conn_free). */
static int handle(outbox_http_t *h, conn_t *c)
{
    conn_ctx_t ctx;
    memset(&ctx, 0, sizeof(ctx));
    ctx.h = h;
    ctx.c = c;
    ctx.t0_ms = outbox__now_ms();
    const outbox_http1_head_t *hd = &c->head;
    snprintf(ctx.method, sizeof(ctx.method), "%s", hd->method);
    snprintf(ctx.route, sizeof(ctx.route), "unmatched");
    const char *why = NULL;
    unsigned st = split_target(&ctx, hd->target, &why);
    if (st) {
        refuse(h, c, &ctx, st, st == 414 ? "uri-too-long" : "bad-request", why, 1);
        conn_free(h, c, 1);
        return 0;
    }
    body_result_t br;
    memset(&br, 0, sizeof(br));
    read_body(h, c, &ctx, &br);
    if (br.gone || br.status) {
        if (br.status)
            refuse(h, c, &ctx, br.status, br.slug, br.why, 1);
        else
            finish_log(h, &ctx, 0);
        free(ctx.body);
        free(br.extra);
        conn_free(h, c, br.status != 0);
        return 0;
    }
    outbox_http_resp_t resp;
    memset(&resp, 0, sizeof(resp));
    dispatch(h, &ctx, &resp);
    ctx.status = resp.status;
    int keep = hd->keep_alive && !h->stopping;
    int sent = write_response(h, c->fd, &resp, !strcmp(ctx.method, "HEAD"), keep) == 0;
    finish_log(h, &ctx, sent);
    free(resp.body);
    free(ctx.body);
    for (int i = 0; i < ctx.nqvals; i++)
        free(ctx.qvals[i]);
    if (!keep || !sent) {
        free(br.extra);
        conn_free(h, c, 0);
        return 0;
    }
    /* what follows the request becomes the start of the buffer */
    memmove(c->buf, c->buf + br.after, c->len - br.after);
    c->len -= br.after;
    if (br.nextra) {
        if (c->len + br.nextra > c->cap) {
            char *nb = realloc(c->buf, c->len + br.nextra);
            if (!nb) {
                free(br.extra);
                conn_free(h, c, 0);
                return 0;
            }
            c->buf = nb;
            c->cap = c->len + br.nextra;
        }
        memcpy(c->buf + c->len, br.extra, br.nextra);
        c->len += br.nextra;
    }
    free(br.extra);
    return 1;
}

/* Parses the head in c->buf. Returns MORE, or DONE/ERROR with the result
 * kept in c for the worker. */
static outbox_http1_rc_t parse(conn_t *c)
{
    unsigned st = 0;
    const char *why = NULL;
    outbox_http1_rc_t rc = outbox__http1_parse_head(c->buf, c->len, &c->head, &st, &why);
    if (rc == OUTBOX_HTTP1_MORE && c->len >= IO_BUF_MAX) {
        rc = OUTBOX_HTTP1_ERROR; /* cannot happen: the parser refuses first */
        st = 431;
        why = "the request head is larger than 16 KiB";
    }
    c->rc = rc;
    c->err_status = st;
    c->err_why = why;
    return rc;
}

static const char *slug_for(unsigned status)
{
    switch (status) {
    case 408:
        return "request-timeout";
    case 414:
        return "uri-too-long";
    case 431:
        return "header-fields-too-large";
    case 501:
        return "not-implemented";
    case 505:
        return "http-version-not-supported";
    default:
        return "bad-request";
    }
}

static void *worker_main(void *arg);

/* Hands c (its head parsed, or refused) to a worker. I/O thread or worker. */
static void hand_off(outbox_http_t *h, conn_t *c)
{
    pthread_mutex_lock(&h->lock);
    c->owned = 1;
    c->qnext = NULL;
    if (h->ready_tail)
        h->ready_tail->qnext = c;
    else
        h->ready_head = c;
    h->ready_tail = c;
    h->nqueued++;
    h->inflight++;
    if (h->nqueued > h->idle_workers && h->workers < (int)h->opts.max_connections + MIN_WORKERS) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &attr, worker_main, h) == 0)
            h->workers++;
        pthread_attr_destroy(&attr);
    }
    pthread_cond_signal(&h->work);
    pthread_mutex_unlock(&h->lock);
}

/* Gives c back to the I/O thread to wait for its next request (or closes it
 * when the server is stopping). */
static void give_back(outbox_http_t *h, conn_t *c)
{
    pthread_mutex_lock(&h->lock);
    if (h->stopping) {
        pthread_mutex_unlock(&h->lock);
        conn_free(h, c, 0);
        return;
    }
    c->owned = 0;
    c->head_started = c->len > 0;
    c->deadline_ms = outbox__now_ms() + (c->len ? head_timeout_ms(h) : idle_timeout_ms(h));
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
    int rc = epoll_ctl(h->ep, EPOLL_CTL_ADD, c->fd, &ev);
    pthread_mutex_unlock(&h->lock);
    if (rc < 0)
        conn_free(h, c, 0);
}

/* Ends a request: one fewer in flight, what outbox__http_stop waits for
 * once it has set stopping. No lock unless it is stopping: inflight and
 * stopping are sequentially consistent atomics, so either the stop reads
 * the new count after setting stopping, or this reads stopping set and
 * wakes it (under the lock, so the wake-up cannot fall between its check
 * and its wait). */
static void request_done(outbox_http_t *h)
{
    h->inflight--;
    if (h->stopping) {
        pthread_mutex_lock(&h->lock);
        pthread_cond_broadcast(&h->idle);
        pthread_mutex_unlock(&h->lock);
    }
}

/* Starts the next request of a connection this worker holds: 0 if the
 * server is stopping (the request is not served). Counted before stopping
 * is read (see request_done): a stop that missed the count is seen here. */
static int request_again(outbox_http_t *h)
{
    h->inflight++;
    if (!h->stopping)
        return 1;
    request_done(h);
    return 0;
}

/* After an answer on a keep-alive connection the worker waits for the next
 * request itself, up to KEEP_WAIT_MS: a busy client sends it at once, and
 * a request read here needs no trip through the I/O thread (its wake-up, a
 * hand-off under the lock, two epoll changes). Returns 1 with the next head
 * parsed (or refused) in c, 0 to hand c back to the I/O thread (nothing
 * came in time, part of a head came, the buffer is full, the server is
 * stopping), -1 when the client closed it or it failed (c is freed). */
static int wait_next(outbox_http_t *h, conn_t *c)
{
    int64_t until = outbox__now_ms() + KEEP_WAIT_MS;
    for (;;) {
        int64_t left = until - outbox__now_ms();
        if (h->stopping || left <= 0 || c->len == c->cap)
            return 0;
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int r = poll(&p, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return 0;
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            continue;
        if (n <= 0) {
            conn_free(h, c, 0);
            return -1;
        }
        c->len += (size_t)n;
        if (!memchr(c->buf, '\n', c->len) || parse(c) == OUTBOX_HTTP1_MORE)
            return 0; /* part of a head: the I/O thread waits for the rest, with its deadline */
        return 1;
    }
}

static void serve(outbox_http_t *h, conn_t *c)
{
    for (;;) {
        int keep = 0;
        if (c->rc == OUTBOX_HTTP1_ERROR) {
            refuse(h, c, NULL, c->err_status, slug_for(c->err_status), c->err_why, 1);
            conn_free(h, c, 1);
        } else {
            keep = handle(h, c);
        }
        request_done(h);
        if (!keep)
            return;
        /* a pipelined request may already be here, or come at once */
        int next = c->len && memchr(c->buf, '\n', c->len) && parse(c) != OUTBOX_HTTP1_MORE;
        if (!next)
            next = wait_next(h, c);
        if (next < 0)
            return;
        if (next && request_again(h))
            continue;
        give_back(h, c);
        return;
    }
}

static void *worker_main(void *arg)
{
    outbox_http_t *h = arg;
    outbox__thread_name("http-worker");
    pthread_mutex_lock(&h->lock);
    for (;;) {
        while (!h->ready_head && !h->stopping) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += WORKER_IDLE_EXIT_MS / 1000;
            h->idle_workers++;
            int rc = pthread_cond_timedwait(&h->work, &h->lock, &ts);
            h->idle_workers--;
            if (rc == ETIMEDOUT && !h->ready_head && h->workers > MIN_WORKERS)
                goto out;
        }
        conn_t *c = h->ready_head;
        if (!c)
            break; /* stopping, nothing queued */
        h->ready_head = c->qnext;
        h->nqueued--;
        if (!h->ready_head)
            h->ready_tail = NULL;
        pthread_mutex_unlock(&h->lock);
        serve(h, c);
        pthread_mutex_lock(&h->lock);
    }
out:
    h->workers--;
    pthread_cond_broadcast(&h->idle);
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

/* ---- the I/O thread ---- */

static void accept_all(outbox_http_t *h)
{
    for (;;) {
        int fd = accept4(h->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EMFILE || errno == ENFILE) {
                static int64_t last;
                if (outbox__now_ms() - last > 1000) {
                    last = outbox__now_ms();
                    outbox__log(OUTBOX_LOG_WARN, h->name, "http_accept",
                                "out of file descriptors: new connections wait", NULL);
                }
            }
            return; /* EAGAIN, or try again at the next wake-up */
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        pthread_mutex_lock(&h->lock);
        int full = h->nconns >= (int)h->opts.max_connections;
        pthread_mutex_unlock(&h->lock);
        conn_t *c = full ? NULL : calloc(1, sizeof(*c));
        if (c)
            c->buf = malloc(IO_BUF_MIN);
        if (!c || !c->buf) {
            static const char body[] =
                "{\"type\":\"urn:outbox:problem:too-many-connections\",\"title\":\"Service "
                "Unavailable\",\"status\":503,\"detail\":\"too many open connections "
                "(http_max_connections); retry\"}";
            char busy[512];
            int n = snprintf(busy, sizeof(busy),
                             "HTTP/1.1 503 Service Unavailable\r\nContent-Type: "
                             "application/problem+json\r\nContent-Length: %zu\r\nRetry-After: "
                             "1\r\nConnection: close\r\n\r\n%s",
                             sizeof(body) - 1, body);
            ssize_t w = send(fd, busy, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)w;
            close(fd);
            if (c)
                free(c);
            static int64_t last;
            if (outbox__now_ms() - last > 1000) {
                last = outbox__now_ms();
                outbox__log(OUTBOX_LOG_WARN, h->name, "http_connection_limit",
                            "connection refused with 503: http_max_connections reached", NULL);
            }
            continue;
        }
        c->h = h;
        c->fd = fd;
        c->cap = IO_BUF_MIN;
        c->deadline_ms = outbox__now_ms() + idle_timeout_ms(h);
        pthread_mutex_lock(&h->lock);
        c->next = h->conns;
        if (h->conns)
            h->conns->prev = c;
        h->conns = c;
        h->nconns++;
        pthread_mutex_unlock(&h->lock);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
        if (epoll_ctl(h->ep, EPOLL_CTL_ADD, fd, &ev) < 0)
            conn_free(h, c, 0);
    }
}

/* Bytes arrived on a waiting connection. */
static void readable(outbox_http_t *h, conn_t *c)
{
    if (c->len == c->cap) {
        size_t cap = c->cap * 2 > IO_BUF_MAX ? IO_BUF_MAX : c->cap * 2;
        char *nb = cap > c->cap ? realloc(c->buf, cap) : NULL;
        if (!nb) {
            epoll_ctl(h->ep, EPOLL_CTL_DEL, c->fd, NULL);
            conn_free(h, c, 0);
            return;
        }
        c->buf = nb;
        c->cap = cap;
    }
    ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (r <= 0) {
        epoll_ctl(h->ep, EPOLL_CTL_DEL, c->fd, NULL);
        conn_free(h, c, 0);
        return;
    }
    size_t old = c->len;
    c->len += (size_t)r;
    if (!c->head_started) {
        c->head_started = 1;
        c->deadline_ms = outbox__now_ms() + head_timeout_ms(h);
    }
    if (!memchr(c->buf + old, '\n', (size_t)r) && c->len <= OUTBOX_HTTP1_MAX_TARGET + 48 &&
        c->len < c->cap)
        return; /* no new line: nothing more to check yet */
    if (parse(c) == OUTBOX_HTTP1_MORE)
        return;
    epoll_ctl(h->ep, EPOLL_CTL_DEL, c->fd, NULL);
    hand_off(h, c);
}

/* Closes waiting connections past their deadline: an idle one quietly, one
 * in the middle of a head with 408. */
static void sweep(outbox_http_t *h, int64_t now)
{
    conn_t *expired = NULL;
    pthread_mutex_lock(&h->lock);
    for (conn_t *c = h->conns; c; c = c->next)
        if (!c->owned && c->deadline_ms <= now) {
            c->owned = 1; /* taken out of the waiting set, by this thread */
            c->qnext = expired;
            expired = c;
        }
    pthread_mutex_unlock(&h->lock);
    while (expired) {
        conn_t *c = expired;
        expired = c->qnext;
        epoll_ctl(h->ep, EPOLL_CTL_DEL, c->fd, NULL);
        if (c->head_started)
            refuse(h, c, NULL, 408, "request-timeout",
                   "the request head did not arrive in time (http_header_timeout)", 0);
        conn_free(h, c, 0);
    }
}

static void *io_main(void *arg)
{
    outbox_http_t *h = arg;
    outbox__thread_name("http-io");
    struct epoll_event evs[64];
    int64_t next_sweep = outbox__now_ms() + 250;
    for (;;) {
        int n = epoll_wait(h->ep, evs, 64, 250);
        pthread_mutex_lock(&h->lock);
        int stopping = h->stopping;
        pthread_mutex_unlock(&h->lock);
        if (stopping)
            break;
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &h->lfd)
                accept_all(h);
            else if (p != &h->wake)
                readable(h, p);
        }
        int64_t now = outbox__now_ms();
        if (now >= next_sweep) {
            sweep(h, now);
            next_sweep = now + 250;
        }
    }
    /* stopping: no new connections; waiting ones are closed */
    epoll_ctl(h->ep, EPOLL_CTL_DEL, h->lfd, NULL);
    close(h->lfd);
    h->lfd = -1;
    for (;;) {
        conn_t *victim = NULL;
        pthread_mutex_lock(&h->lock);
        for (conn_t *c = h->conns; c; c = c->next)
            if (!c->owned) {
                c->owned = 1;
                victim = c;
                break;
            }
        pthread_mutex_unlock(&h->lock);
        if (!victim)
            break;
        epoll_ctl(h->ep, EPOLL_CTL_DEL, victim->fd, NULL);
        conn_free(h, victim, 0);
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */

static void start_fail(outbox_http_t *h)
{
    if (h->lfd >= 0)
        close(h->lfd);
    if (h->ep >= 0)
        close(h->ep);
    if (h->wake[0] >= 0)
        close(h->wake[0]);
    if (h->wake[1] >= 0)
        close(h->wake[1]);
    pthread_cond_destroy(&h->work);
    pthread_cond_destroy(&h->idle);
    pthread_mutex_destroy(&h->lock);
    pthread_mutex_destroy(&h->mlock);
    free(h);
}

outbox_http_t *outbox__http_start(const outbox_http_opts_t *opts, char *errstr, size_t errstr_size)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)opts->port);
    const char *addr = opts->addr && *opts->addr ? opts->addr : "0.0.0.0";
    if (!strcmp(addr, "localhost"))
        addr = "127.0.0.1";
    if (opts->port < 0 || opts->port > 65535 || inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
        outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                    "cannot listen on %s:%d: need an IPv4 address and a port",
                    opts->addr ? opts->addr : "", opts->port);
        return NULL;
    }
    outbox_http_t *h = calloc(1, sizeof(*h));
    if (!h) {
        outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
        return NULL;
    }
    h->opts = *opts;
    h->opts.auth_token = NULL; /* copied below; the caller's string may go */
    h->lfd = h->ep = h->wake[0] = h->wake[1] = -1;
    snprintf(h->name, sizeof(h->name), "%s", opts->name ? opts->name : "http");
    if (opts->auth_token && *opts->auth_token) {
        if (strlen(opts->auth_token) >= sizeof(h->token)) {
            outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                        "http_token is longer than %zu bytes", sizeof(h->token) - 1);
            free(h);
            return NULL;
        }
        snprintf(h->token, sizeof(h->token), "%s", opts->auth_token);
    }
    if (!h->opts.max_body)
        h->opts.max_body = 65536;
    if (!h->opts.max_connections)
        h->opts.max_connections = 512;
    pthread_mutex_init(&h->lock, NULL);
    pthread_mutex_init(&h->mlock, NULL);
    pthread_cond_init(&h->work, NULL);
    pthread_cond_init(&h->idle, NULL);
    int one = 1;
    h->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (h->lfd < 0 || setsockopt(h->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(h->lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(h->lfd, 1024) < 0) {
        outbox__err(OUTBOX_ERR_IO, errstr, errstr_size, "cannot listen on %s:%d: %s", addr,
                    opts->port, strerror(errno));
        start_fail(h);
        return NULL;
    }
    socklen_t sl = sizeof(sa);
    getsockname(h->lfd, (struct sockaddr *)&sa, &sl);
    h->port = ntohs(sa.sin_port);
    h->ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &h->lfd};
    struct epoll_event wev = {.events = EPOLLIN, .data.ptr = &h->wake};
    if (h->ep < 0 || pipe2(h->wake, O_CLOEXEC | O_NONBLOCK) < 0 ||
        epoll_ctl(h->ep, EPOLL_CTL_ADD, h->lfd, &lev) < 0 ||
        epoll_ctl(h->ep, EPOLL_CTL_ADD, h->wake[0], &wev) < 0) {
        outbox__err(OUTBOX_ERR_IO, errstr, errstr_size, "cannot start the HTTP server: %s",
                    strerror(errno));
        start_fail(h);
        return NULL;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_mutex_lock(&h->lock);
    for (int i = 0; i < MIN_WORKERS; i++) {
        pthread_t t;
        if (pthread_create(&t, &attr, worker_main, h) == 0)
            h->workers++;
    }
    pthread_mutex_unlock(&h->lock);
    pthread_attr_destroy(&attr);
    if (h->workers == 0 || pthread_create(&h->io, NULL, io_main, h) != 0) {
        outbox__err(OUTBOX_ERR_IO, errstr, errstr_size, "cannot start the HTTP server's threads");
        pthread_mutex_lock(&h->lock);
        h->stopping = 1;
        pthread_cond_broadcast(&h->work);
        while (h->workers > 0)
            pthread_cond_wait(&h->idle, &h->lock);
        pthread_mutex_unlock(&h->lock);
        start_fail(h);
        return NULL;
    }
    return h;
}

int outbox__http_port(const outbox_http_t *h)
{
    return h ? h->port : 0;
}

void outbox__http_stop(outbox_http_t *h, int64_t timeout_ms)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->lock);
    h->stopping = 1;
    pthread_cond_broadcast(&h->work);
    pthread_mutex_unlock(&h->lock);
    ssize_t w = write(h->wake[1], "x", 1);
    (void)w;
    pthread_join(h->io, NULL); /* listening socket and waiting connections closed */
    int64_t deadline = outbox__now_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
    pthread_mutex_lock(&h->lock);
    while (h->inflight > 0) {
        int64_t left = deadline - outbox__now_ms();
        if (left <= 0)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += left / 1000;
        ts.tv_nsec += (left % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&h->idle, &h->lock, &ts);
    }
    int left = h->inflight;
    if (left > 0)
        for (conn_t *c = h->conns; c; c = c->next)
            shutdown(c->fd, SHUT_RDWR); /* unblocks reads and writes */
    pthread_mutex_unlock(&h->lock);
    if (left > 0) {
        char n[16];
        snprintf(n, sizeof(n), "%d", left);
        outbox__log(OUTBOX_LOG_WARN, h->name, "shutdown_timeout",
                    "requests still in flight at shutdown: closing", "requests", n, NULL);
    }
    pthread_mutex_lock(&h->lock);
    while (h->workers > 0 || h->nconns > 0)
        pthread_cond_wait(&h->idle, &h->lock);
    pthread_mutex_unlock(&h->lock);
    h->lfd = -1;
    start_fail(h); /* closes what is left and frees h */
}
