/* The shared HTTP layer: routing, bodies, problem+json, request log,
 * health/readiness/metrics endpoints, graceful shutdown. See http.h. */
#include "http/http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/util.h"

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

struct outbox_http_s {
    outbox_http_opts_t opts;
    char name[64];
    struct MHD_Daemon *daemon;
    int port;
    pthread_mutex_t lock;
    pthread_cond_t idle;
    int inflight;
    series_t series[MAX_SERIES];
    int nseries;
    histo_t histos[MAX_HISTOS];
    int nhistos;
};

/* Per-request state, from the first access-handler call to completion. */
typedef struct conn_ctx_s {
    outbox_http_t *h;
    int64_t t0_ms;
    char method[8];
    char path[256];
    char route[96];
    char *body;
    size_t body_len, body_cap;
    int too_large;
    unsigned status; /* queued response status; 0 = none */
    struct MHD_Connection *conn;
    const char *raw_method;  /* libmicrohttpd's own pointers into the request's */
    const char *raw_version; /* header section (see header_true_len) */
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
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
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
    if (resp->nheaders >= 4)
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
    const conn_ctx_t *ctx = req->internal;
    return MHD_lookup_connection_value(ctx->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *outbox__http_header(const outbox_http_req_t *req, const char *name)
{
    const conn_ctx_t *ctx = req->internal;
    return MHD_lookup_connection_value(ctx->conn, MHD_HEADER_KIND, name);
}

#if MHD_VERSION < 0x01000000
/*
 * libmicrohttpd before 1.0 parses the header section in place and ends a
 * field value at its first NUL byte, for the _n functions too: for
 * "Idempotency-Key: abc<NUL>def" both MHD_lookup_connection_value_n and the
 * _n iterator report "abc", length 3. The bytes it cut off are still where
 * the client put them: between the end of the reported value and the start
 * of the next line, where otherwise there are only the line terminator's
 * bytes (CR LF or LF, each overwritten with NUL by the parser). This finds
 * the value's true extent from that gap:
 *
 *   - a non-NUL byte in the gap is part of the value: the value runs to the
 *     last such byte;
 *   - more NUL bytes than the terminator has are NULs at the value's end.
 *
 * The terminator's length (2 or 1) is the request line's. The gap after
 * the last header runs to the end of the header section (request start +
 * MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE) and also holds the empty line's
 * terminator. Trailing NULs of a request that mixes CR LF and bare LF can
 * still hide in a terminator; any NUL followed by other bytes is found.
 * When the pointers are not laid out as expected, the value is reported one
 * byte longer (its terminating NUL) so that callers refuse it rather than
 * trust a value that may have been cut.
 */
typedef struct header_scan_s {
    const char *name;
    size_t name_len;
    const char *first_key; /* the first header's name */
    const char *value;     /* the match */
    size_t len;
    int found;
    const char *next_key; /* the name of the header after the match */
} header_scan_t;

static enum MHD_Result header_scan_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                      size_t key_size, const char *value, size_t value_size)
{
    header_scan_t *s = cls;
    (void)kind;
    if (!s->first_key)
        s->first_key = key;
    if (s->found) {
        s->next_key = key;
        return MHD_NO; /* done */
    }
    if (key_size == s->name_len && !strncasecmp(key, s->name, key_size)) {
        s->found = 1;
        s->value = value;
        s->len = value_size;
    }
    return MHD_YES;
}

static size_t header_true_len(const conn_ctx_t *ctx, const header_scan_t *s)
{
    const size_t suspect = s->len + 1; /* value[len] is its terminating NUL */
    if (!ctx->raw_method || !ctx->raw_version || !s->first_key)
        return suspect;
    const char *ver_end = ctx->raw_version + strlen(ctx->raw_version);
    ptrdiff_t term = s->first_key - ver_end;
    if (term != 1 && term != 2)
        return suspect;
    const char *vend = s->value + s->len, *end;
    ptrdiff_t budget;
    if (s->next_key) {
        end = s->next_key;
        budget = term;
    } else {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(ctx->conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
        if (!ci || !ci->header_size)
            return suspect;
        end = ctx->raw_method + ci->header_size;
        budget = 2 * term;
    }
    if (s->value <= ctx->raw_method || end < vend || end - vend > 8192)
        return suspect;
    const char *last = NULL;
    for (const char *p = vend; p < end; p++)
        if (*p)
            last = p;
    if (last)
        return (size_t)(last - s->value) + 1;
    if (end - vend > budget)
        return s->len + (size_t)(end - vend - budget);
    return s->len;
}
#endif

const char *outbox__http_header_n(const outbox_http_req_t *req, const char *name, size_t *len)
{
    const conn_ctx_t *ctx = req->internal;
    *len = 0;
#if MHD_VERSION < 0x01000000
    header_scan_t s = {.name = name, .name_len = strlen(name)};
    MHD_get_connection_values_n(ctx->conn, MHD_HEADER_KIND, header_scan_cb, &s);
    if (!s.found)
        return NULL;
    *len = header_true_len(ctx, &s);
    return s.value;
#else
    const char *v = NULL;
    size_t n = 0;
    if (MHD_lookup_connection_value_n(ctx->conn, MHD_HEADER_KIND, name, strlen(name), &v, &n) !=
        MHD_YES)
        return NULL;
    *len = n;
    return v;
#endif
}

/* ------------------------------------------------------------------------ */
/* Metrics                                                                   */

static void record(outbox_http_t *h, const conn_ctx_t *ctx, double seconds)
{
    pthread_mutex_lock(&h->lock);
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
    pthread_mutex_unlock(&h->lock);
}

static void render_metrics(outbox_http_t *h, outbox__buf_t *b)
{
    pthread_mutex_lock(&h->lock);
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
    outbox__buf_printf(b,
                       "# HELP outbox_http_requests_in_flight Requests being handled now.\n"
                       "# TYPE outbox_http_requests_in_flight "
                       "gauge\noutbox_http_requests_in_flight{service=\"%s\"} %d\n",
                       h->name, h->inflight);
    pthread_mutex_unlock(&h->lock);
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

/* Runs the route table (or a built-in endpoint) for a complete request. */
static void dispatch(outbox_http_t *h, conn_ctx_t *ctx, struct MHD_Connection *conn,
                     outbox_http_resp_t *resp)
{
    const char *method = ctx->method;
    const char *path = ctx->path;
    int is_get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    if (!strcmp(path, "/healthz") || !strcmp(path, "/readyz") || !strcmp(path, "/metrics")) {
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
        const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
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
/* libmicrohttpd callbacks                                                   */

static enum MHD_Result queue(conn_ctx_t *ctx, struct MHD_Connection *conn, outbox_http_resp_t *resp)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        resp->body_len, resp->body ? resp->body : (char *)"",
        resp->body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(resp->body);
        return MHD_NO;
    }
    resp->body = NULL; /* MHD owns it now */
    if (resp->content_type[0])
        MHD_add_response_header(r, "Content-Type", resp->content_type);
    for (int i = 0; i < resp->nheaders; i++)
        MHD_add_response_header(r, resp->headers[i][0], resp->headers[i][1]);
    ctx->status = resp->status;
    enum MHD_Result ret = MHD_queue_response(conn, resp->status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    outbox_http_t *h = cls;
    conn_ctx_t *ctx = *con_cls;
    if (!ctx) {
        ctx = calloc(1, sizeof(*ctx));
        if (!ctx)
            return MHD_NO;
        ctx->h = h;
        ctx->t0_ms = outbox__now_ms();
        snprintf(ctx->method, sizeof(ctx->method), "%s", method);
        snprintf(ctx->path, sizeof(ctx->path), "%s", url);
        snprintf(ctx->route, sizeof(ctx->route), "unmatched");
        ctx->conn = conn;
        ctx->raw_method = method;
        ctx->raw_version = version;
        *con_cls = ctx;
        pthread_mutex_lock(&h->lock);
        h->inflight++;
        pthread_mutex_unlock(&h->lock);
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > h->opts.max_body) {
            outbox_http_resp_t resp;
            memset(&resp, 0, sizeof(resp));
            problem(url, &resp, 413, "body-too-large", NULL,
                    "request body of %s bytes exceeds the limit of %zu bytes", cl,
                    h->opts.max_body);
            return queue(ctx, conn, &resp);
        }
        if (strlen(url) >= sizeof(ctx->path)) {
            outbox_http_resp_t resp;
            memset(&resp, 0, sizeof(resp));
            problem(NULL, &resp, 414, "uri-too-long", "URI Too Long",
                    "request path longer than %zu bytes", sizeof(ctx->path) - 1);
            return queue(ctx, conn, &resp);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (!ctx->status && !ctx->too_large) {
            if (ctx->body_len + *upload_size > h->opts.max_body) {
                ctx->too_large = 1;
                free(ctx->body);
                ctx->body = NULL;
                ctx->body_len = ctx->body_cap = 0;
            } else {
                if (ctx->body_len + *upload_size + 1 > ctx->body_cap) {
                    size_t cap = ctx->body_cap ? ctx->body_cap : 1024;
                    while (cap < ctx->body_len + *upload_size + 1)
                        cap *= 2;
                    char *nb = realloc(ctx->body, cap);
                    if (!nb)
                        return MHD_NO;
                    ctx->body = nb;
                    ctx->body_cap = cap;
                }
                memcpy(ctx->body + ctx->body_len, upload, *upload_size);
                ctx->body_len += *upload_size;
                ctx->body[ctx->body_len] = '\0';
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (ctx->status)
        return MHD_YES; /* already answered (413 on Content-Length) */
    outbox_http_resp_t resp;
    memset(&resp, 0, sizeof(resp));
    if (ctx->too_large)
        problem(ctx->path, &resp, 413, "body-too-large", NULL,
                "request body exceeds the limit of %zu bytes", h->opts.max_body);
    else
        dispatch(h, ctx, conn, &resp);
    return queue(ctx, conn, &resp);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    outbox_http_t *h = cls;
    conn_ctx_t *ctx = *con_cls;
    if (!ctx)
        return;
    *con_cls = NULL;
    double secs = (double)(outbox__now_ms() - ctx->t0_ms) / 1000.0;
    if (ctx->status)
        record(h, ctx, secs);
    char st[16], dur[32], in[24];
    snprintf(st, sizeof(st), "%u", ctx->status);
    snprintf(dur, sizeof(dur), "%.1f", secs * 1000.0);
    snprintf(in, sizeof(in), "%zu", ctx->body_len);
    char msg[400];
    snprintf(msg, sizeof(msg), "%s %s %u%s", ctx->method, ctx->path, ctx->status,
             toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection closed early)");
    int quiet = !strcmp(ctx->route, "/healthz") || !strcmp(ctx->route, "/readyz") ||
                !strcmp(ctx->route, "/metrics");
    outbox__log(quiet                ? OUTBOX_LOG_DEBUG
                : ctx->status >= 500 ? OUTBOX_LOG_WARN
                                     : OUTBOX_LOG_INFO,
                h->name, "request", msg, "method", ctx->method, "path", ctx->path, "route",
                ctx->route, "status", st, "duration_ms", dur, "bytes_in", in, NULL);
    free(ctx->body);
    free(ctx);
    pthread_mutex_lock(&h->lock);
    if (--h->inflight == 0)
        pthread_cond_broadcast(&h->idle);
    pthread_mutex_unlock(&h->lock);
}

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    outbox_http_t *h = cls;
    char buf[512];
    vsnprintf(buf, sizeof(buf), fmt, ap);
    outbox__log(OUTBOX_LOG_WARN, h->name, "http_server", outbox__rtrim(buf), NULL);
}

/* ------------------------------------------------------------------------ */

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
    snprintf(h->name, sizeof(h->name), "%s", opts->name ? opts->name : "http");
    if (!h->opts.max_body)
        h->opts.max_body = 65536;
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->idle, NULL);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    h->daemon = MHD_start_daemon(
        flags, (uint16_t)opts->port, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER,
        mhd_logger, h, MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
        MHD_OPTION_CONNECTION_LIMIT, opts->max_connections ? opts->max_connections : 512u,
        MHD_OPTION_CONNECTION_TIMEOUT, opts->timeout_s ? opts->timeout_s : 30u, MHD_OPTION_END);
    if (!h->daemon) {
        outbox__err(OUTBOX_ERR_IO, errstr, errstr_size,
                    "cannot listen on %s:%d (port in use? set PORT)", addr, opts->port);
        pthread_cond_destroy(&h->idle);
        pthread_mutex_destroy(&h->lock);
        free(h);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info && info->port ? info->port : opts->port;
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
    MHD_socket lsock = MHD_quiesce_daemon(h->daemon);
    int64_t deadline = outbox__now_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
    pthread_mutex_lock(&h->lock);
    while (h->inflight > 0 && outbox__now_ms() < deadline) {
        pthread_mutex_unlock(&h->lock);
        usleep(20 * 1000);
        pthread_mutex_lock(&h->lock);
    }
    int left = h->inflight;
    pthread_mutex_unlock(&h->lock);
    if (left > 0) {
        char n[16];
        snprintf(n, sizeof(n), "%d", left);
        outbox__log(OUTBOX_LOG_WARN, h->name, "shutdown_timeout",
                    "requests still in flight at shutdown: closing", "requests", n, NULL);
    }
    MHD_stop_daemon(h->daemon);
    if (lsock != MHD_INVALID_SOCKET)
        close(lsock);
    pthread_cond_destroy(&h->idle);
    pthread_mutex_destroy(&h->lock);
    free(h);
}
