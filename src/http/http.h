/*
 * The small HTTP layer the services share: an HTTP/1.1 server of its own
 * (framing in http1.c) and jansson.
 *
 *   - a route table: method + pattern ("/orders/{id}") + handler;
 *   - request bodies read up to a size limit (413 beyond it), JSON bodies
 *     checked for content type (415) and syntax (400) before the handler;
 *   - errors as application/problem+json (RFC 9457: type, title, status,
 *     detail, instance);
 *   - one log line per request; GET /healthz, GET /readyz, GET /metrics
 *     (Prometheus text: requests by route and status, latency histogram);
 *   - graceful shutdown: stop accepting, let requests in flight finish.
 *
 * One I/O thread reads request heads for every connection (a slow client
 * holds a socket, not a thread) and refuses bad ones itself, with
 * problem+json like every other error; a pool of workers runs the handlers,
 * which may block (database calls). A handler fills the response through
 * the outbox__http_reply_* helpers; when it fills nothing the client gets
 * 500.
 */
#ifndef OUTBOX_HTTP_HTTP_H
#define OUTBOX_HTTP_HTTP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "outbox/outbox.h"

#define OUTBOX_HTTP_MAX_PARAMS 8

typedef struct outbox_http_s outbox_http_t;

/** One request, valid during the handler call. */
typedef struct outbox_http_req_s {
    const char *method; /**< "GET", "POST", ... */
    const char *path;   /**< without the query string */
    const char *route;  /**< the matched pattern, e.g. "/orders/{id}" (metrics label) */
    const char *body;   /**< NUL-terminated; "" when there is none */
    size_t body_len;
    json_t *json; /**< parsed body for routes with json_body set (borrowed) */
    int nparams;
    const char *param_names[OUTBOX_HTTP_MAX_PARAMS];
    const char *param_values[OUTBOX_HTTP_MAX_PARAMS];
    void *internal; /**< the layer's own; do not touch */
} outbox_http_req_t;

/** The response a handler builds. Use the helpers below. */
typedef struct outbox_http_resp_s {
    unsigned status; /**< 0 until a helper sets it */
    char *body;      /**< malloc'd, owned by the layer */
    size_t body_len;
    char content_type[64];
    char headers[6][2][256]; /**< extra headers (name, value) */
    int nheaders;
} outbox_http_resp_t;

typedef void (*outbox_http_handler_fn)(outbox_http_req_t *req, outbox_http_resp_t *resp,
                                       void *opaque);

/** A row of the route table. A table ends with a row whose method is NULL. */
typedef struct outbox_http_route_s {
    const char *method;
    const char *pattern; /**< literal segments and {name} segments */
    outbox_http_handler_fn handler;
    int json_body; /**< 1: require a JSON object body (400/415 otherwise) */
} outbox_http_route_t;

struct outbox__buf_s;
/** Appends Prometheus text to GET /metrics (before the layer's own HTTP series). */
typedef void (*outbox_http_metrics_fn)(void *opaque, struct outbox__buf_s *b);

/** Readiness probe for GET /readyz: return 0 when ready, else fill why. */
typedef int (*outbox_http_ready_fn)(void *opaque, char *why, size_t why_size);

typedef struct outbox_http_opts_s {
    const char *name; /**< service name: log component and metrics label */
    const char *addr; /**< IPv4 listen address, e.g. "0.0.0.0" */
    int port;
    size_t max_body; /**< bytes */
    unsigned max_connections;
    unsigned timeout_s;                /**< idle connection timeout; also bounds a body */
    int64_t header_timeout_ms;         /**< a request head must arrive within this (10 s) */
    const char *auth_token;            /**< when set, every request but /healthz and /readyz needs
                                            "Authorization: Bearer <auth_token>" (401 otherwise); copied */
    const outbox_http_route_t *routes; /**< borrowed; must outlive the server */
    void *opaque;                      /**< passed to handlers and ready */
    outbox_http_ready_fn ready;        /**< may be NULL (always ready) */
    outbox_http_metrics_fn metrics;    /**< may be NULL */
    int quiet; /**< 1: request log lines at debug level (an admin endpoint polled often) */
} outbox_http_opts_t;

/** Starts listening (threads run at once). NULL with errstr on failure. */
outbox_http_t *outbox__http_start(const outbox_http_opts_t *opts, char *errstr, size_t errstr_size);

/** The port actually bound (useful with port 0). */
int outbox__http_port(const outbox_http_t *h);

/** Stops accepting, waits up to timeout_ms for requests in flight, closes
 *  every connection and frees h. NULL is a no-op. */
void outbox__http_stop(outbox_http_t *h, int64_t timeout_ms);

/* ---- request helpers ---- */

/** Value of path parameter name, or NULL. */
const char *outbox__http_param(const outbox_http_req_t *req, const char *name);
/** Value of query-string argument name ("/cars/search?q=red" -> "red"),
 *  percent-decoded, or NULL when absent. Valid during the handler call. */
const char *outbox__http_query(const outbox_http_req_t *req, const char *name);
/** Value of request header name (case-insensitive), or NULL. The C string
 *  ends at the value's first NUL byte: where a cut value would be wrong
 *  (keys, tokens, signatures) use outbox__http_header_n. */
const char *outbox__http_header(const outbox_http_req_t *req, const char *name);
/**
 * Value of request header name (case-insensitive) and its length in *len,
 * NUL and control bytes included, as the client sent it (leading
 * whitespace skipped); NULL and *len = 0 when absent. Callers must check
 * the bytes they accept: a value may hold NUL bytes. Valid during the
 * handler call.
 */
const char *outbox__http_header_n(const outbox_http_req_t *req, const char *name, size_t *len);

/* ---- response helpers (each replaces what was set before) ---- */

/** Replies with the text of body (a JSON document). Does not take body. */
void outbox__http_reply_json(outbox_http_resp_t *resp, unsigned status, const json_t *body);
/** Replies with raw bytes and a content type (copied). */
void outbox__http_reply_raw(outbox_http_resp_t *resp, unsigned status, const char *content_type,
                            const char *body, size_t len);
/**
 * Replies with application/problem+json: {"type": "urn:outbox:problem:<slug>"
 * (or "about:blank" when slug is NULL), "title", "status", "detail",
 * "instance": the request path}. detail is a printf format.
 */
void outbox__http_problem(const outbox_http_req_t *req, outbox_http_resp_t *resp, unsigned status,
                          const char *slug, const char *title, const char *detail_fmt, ...)
    __attribute__((format(printf, 6, 7)));
/** Adds the string member name: value (copied) to the problem+json body
 *  already in resp (an RFC 9457 extension member, e.g. the id a client can
 *  look up). No-op when resp holds no problem document. */
void outbox__http_problem_member(outbox_http_resp_t *resp, const char *name, const char *value);
/** Adds a response header (name and value copied; up to 6, values up to 255 bytes). */
void outbox__http_add_header(outbox_http_resp_t *resp, const char *name, const char *value);

/** The reason phrase for status ("Not Found"). */
const char *outbox__http_status_text(unsigned status);

#endif
