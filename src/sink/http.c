/* HTTP webhook sink (libcurl): http:// and https://.
 *
 * Each event is POSTed to the sink URL, one request per event on one reused
 * handle (keep-alive), in the batch's order:
 *
 *   structured (default)   Content-Type: application/cloudevents+json
 *                          body = the CloudEvents JSON document
 *   content_mode=binary    Content-Type: application/json, body = data,
 *                          attributes as ce-* headers (percent-encoded)
 *   webhook_batch=true     Content-Type: application/cloudevents-batch+json,
 *                          body = JSON array of the batch's documents, one
 *                          request per publish call (always structured)
 *
 * Every request carries Idempotency-Key: <event id> (not in batch mode: the
 * ids inside the array are the keys), traceparent when the event has one
 * and, when webhook_secret is set,
 *   Webhook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
 *
 * Outcome per event: 2xx acknowledges; 408, 429, 5xx, 3xx (redirects are not
 * followed), timeouts and transport errors retry with backoff, honouring
 * Retry-After (seconds or HTTP-date, capped at backoff_max); any other 4xx
 * rejects the event for good (dead letter at once). If the endpoint cannot
 * be reached before any request of the call got an answer, the call returns
 * OUTBOX_ERR_BROKER (nothing is charged; the relay probes with ping()); if
 * it goes away later in the call, the events after the failed one are
 * reported not sent. A failed event does not stop the others: the engine
 * hands a call at most one event per key. The whole call is bounded by the
 * engine's deadline (sink->deadline_ms, at most publish_timeout): events not
 * tried before it ran out are reported not sent (OUTBOX_ERR_TIMEOUT) and
 * retried without an attempt charged. See docs/sinks/http.md. */
#include <curl/curl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/conf.h"
#include "core/log.h"
#include "core/util.h"
#include "sink/sink_common.h"
#include "sink/sink.h"

#define RESP_KEEP 1024 /* bytes of a response body kept for error messages */

typedef struct http_sink_s {
    CURL *curl;            /* reused across requests: keep-alive */
    int binary;            /* content_mode=binary */
    int batch;             /* webhook_batch */
    unsigned char *secret; /* webhook_secret bytes (wiped on close), or NULL */
    size_t secret_len;
    const char *ca_file; /* borrowed from conf */
    int insecure;
    int64_t retry_max_ms;
    outbox__buf_t resp; /* response body of the last request (capped) */
    outbox__buf_t body; /* batch body */
    char curl_err[CURL_ERROR_SIZE];
    char shown_url[512]; /* scheme://host:port only: paths and queries may hold tokens */
} http_sink_t;

static outbox_err_t http_open(outbox_sink_t *sink, char *errstr, size_t errstr_size)
{
    outbox__curl_global_init();
    if (sodium_init() < 0)
        return outbox__err(OUTBOX_ERR_IO, errstr, errstr_size, "libsodium failed to initialise");
    CURLU *u = curl_url();
    if (!u)
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    char shown[512];
    outbox__redact_url(sink->url, shown, sizeof(shown));
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, sink->url, 0);
    char *host = NULL;
    if (!uc)
        uc = curl_url_get(u, CURLUPART_HOST, &host, 0);
    curl_free(host);
    curl_url_cleanup(u);
    if (uc)
        return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                           "HTTP sink URL \"%s\" is not a valid http(s):// URL with a host", shown);

    http_sink_t *h = calloc(1, sizeof(*h));
    if (!h)
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    outbox__url_origin(sink->url, h->shown_url, sizeof(h->shown_url));
    h->binary = !strcmp(outbox__conf_str(sink->conf, "content_mode"), "binary");
    h->batch = outbox__conf_bool(sink->conf, "webhook_batch");
    h->ca_file = outbox__conf_str(sink->conf, "webhook_ca_file");
    h->insecure = outbox__conf_bool(sink->conf, "webhook_insecure_skip_verify");
    h->retry_max_ms = outbox__conf_ms(sink->conf, "backoff_max");
    h->resp.max = RESP_KEEP + 1;
    const char *secret = outbox__conf_str(sink->conf, "webhook_secret");
    if (*secret) {
        h->secret_len = strlen(secret);
        h->secret = malloc(h->secret_len);
        if (!h->secret) {
            free(h);
            return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
        }
        memcpy(h->secret, secret, h->secret_len);
    }
    h->curl = curl_easy_init();
    if (!h->curl) {
        free(h->secret);
        free(h);
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "cannot create a libcurl handle");
    }
    outbox__curl_common_opts(h->curl, h->ca_file, h->insecure);
    curl_easy_setopt(h->curl, CURLOPT_URL, sink->url);
    curl_easy_setopt(h->curl, CURLOPT_POST, 1L);
    curl_easy_setopt(h->curl, CURLOPT_WRITEFUNCTION, outbox__curl_write_buf);
    curl_easy_setopt(h->curl, CURLOPT_WRITEDATA, &h->resp);
    curl_easy_setopt(h->curl, CURLOPT_ERRORBUFFER, h->curl_err);
    if (h->insecure)
        outbox__log(
            OUTBOX_LOG_WARN, "sink", "tls_verify_disabled",
            "webhook_insecure_skip_verify is set: TLS certificates and host names are NOT verified",
            "worker", sink->name, "sink", h->shown_url, NULL);
    if (h->batch && h->binary)
        outbox__log(OUTBOX_LOG_WARN, "sink", "binary_batch",
                    "webhook_batch sends structured CloudEvents; content_mode=binary is ignored",
                    "worker", sink->name, NULL);
    sink->state = h;
    return OUTBOX_OK;
}

/* CloudEvents HTTP binding: header values percent-encode space, '"', '%'
 * and everything outside printable ASCII (so no CR/LF can reach a header). */
static void ce_header(struct curl_slist **list, int *bad, const char *name, const char *value)
{
    if (!value || *bad)
        return;
    outbox__buf_t b = {.max = 64 * 1024};
    outbox__buf_adds(&b, name);
    outbox__buf_adds(&b, ": ");
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
        if (*p <= 0x20 || *p >= 0x7f || *p == '"' || *p == '%') {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            outbox__buf_add(&b, e, 3);
        } else {
            outbox__buf_add(&b, p, 1);
        }
    }
    struct curl_slist *l = b.broken ? NULL : curl_slist_append(*list, b.p);
    outbox__buf_free(&b);
    if (!l)
        *bad = 1;
    else
        *list = l;
}

/* A header whose value is used verbatim; skipped unless printable ASCII. */
static void plain_header(struct curl_slist **list, int *bad, const char *name, const char *value)
{
    if (!value || !*value || *bad)
        return;
    for (const unsigned char *p = (const unsigned char *)value; *p; p++)
        if (*p < 0x20 || *p >= 0x7f)
            return;
    char line[512];
    if ((size_t)snprintf(line, sizeof(line), "%s: %s", name, value) >= sizeof(line))
        return;
    struct curl_slist *l = curl_slist_append(*list, line);
    if (!l)
        *bad = 1;
    else
        *list = l;
}

/* "Expect:" with no value: no 100-continue round trip for large bodies. */
static void expect_none(struct curl_slist **list, int *bad)
{
    struct curl_slist *l = *bad ? NULL : curl_slist_append(*list, "Expect:");
    if (!l)
        *bad = 1;
    else
        *list = l;
}

/* Webhook-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>. */
static void sign(http_sink_t *h, struct curl_slist **list, int *bad, const char *body, size_t len)
{
    if (!h->secret || *bad)
        return;
    char ts[24];
    snprintf(ts, sizeof(ts), "%lld", (long long)time(NULL));
    crypto_auth_hmacsha256_state st;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_init(&st, h->secret, h->secret_len);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)ts, strlen(ts));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)".", 1);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)body, len);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_memzero(&st, sizeof(st));
    char hexmac[2 * sizeof(mac) + 1];
    sodium_bin2hex(hexmac, sizeof(hexmac), mac, sizeof(mac));
    char line[160];
    snprintf(line, sizeof(line), "Webhook-Signature: t=%s,v1=%s", ts, hexmac);
    struct curl_slist *l = curl_slist_append(*list, line);
    if (!l)
        *bad = 1;
    else
        *list = l;
}

typedef enum { SENT_ANSWERED, SENT_UNREACHABLE, SENT_FAILED } sent_t;

/*
 * POSTs body with the given headers (the list is consumed) within
 * timeout_ms and classifies the outcome into *res.
 */
static sent_t post(outbox_sink_t *sink, struct curl_slist *hdrs, const char *body, size_t len,
                   int64_t timeout_ms, outbox_pub_result_t *res)
{
    http_sink_t *h = sink->state;
    CURL *c = h->curl;
    outbox__buf_reset(&h->resp);
    h->curl_err[0] = '\0';
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hdrs);
    res->retry_after_ms = 0;
    if (rc != CURLE_OK) {
        int unreachable = outbox__curl_unreachable(c, rc);
        res->err =
            rc == CURLE_OPERATION_TIMEDOUT && !unreachable ? OUTBOX_ERR_TIMEOUT : OUTBOX_ERR_BROKER;
        snprintf(res->errstr, sizeof(res->errstr), "HTTP POST to %s failed: %s", h->shown_url,
                 h->curl_err[0] ? h->curl_err : curl_easy_strerror(rc));
        return unreachable ? SENT_UNREACHABLE : SENT_FAILED;
    }
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 200 && status < 300) {
        res->err = OUTBOX_OK;
        res->errstr[0] = '\0';
        return SENT_ANSWERED;
    }
    char quoted[160];
    outbox__printable(h->resp.p ? h->resp.p : "", h->resp.len, quoted, sizeof(quoted));
    if (status == 408 || status == 429 || status >= 500 || status < 200 ||
        (status >= 300 && status < 400)) {
        res->err = OUTBOX_ERR_BROKER;
        res->retry_after_ms = outbox__curl_retry_after_ms(c, h->retry_max_ms);
        snprintf(res->errstr, sizeof(res->errstr), "HTTP %ld from %s (will retry%s): %s", status,
                 h->shown_url, res->retry_after_ms ? ", Retry-After honoured" : "", quoted);
    } else {
        res->err = OUTBOX_ERR_REJECTED;
        snprintf(res->errstr, sizeof(res->errstr), "HTTP %ld from %s (rejected for good): %s",
                 status, h->shown_url, quoted);
    }
    return SENT_ANSWERED;
}

static void fail_all(outbox_pub_result_t *res, size_t n, outbox_err_t err, const char *msg)
{
    for (size_t i = 0; i < n; i++) {
        res[i].err = err;
        res[i].retry_after_ms = 0;
        res[i].not_sent = 0;
        snprintf(res[i].errstr, sizeof(res[i].errstr), "%s", msg);
    }
}

static outbox_err_t publish_batch(outbox_sink_t *sink, outbox_msg_t *msgs, size_t n,
                                  int64_t deadline, outbox_pub_result_t *res)
{
    http_sink_t *h = sink->state;
    outbox__buf_reset(&h->body);
    outbox__buf_add(&h->body, "[", 1);
    for (size_t i = 0; i < n; i++) {
        if (i)
            outbox__buf_add(&h->body, ",", 1);
        outbox__buf_add(&h->body, msgs[i].envelope, msgs[i].envelope_len);
    }
    outbox__buf_add(&h->body, "]", 1);
    struct curl_slist *hdrs = NULL;
    int bad = h->body.broken;
    plain_header(&hdrs, &bad, "Content-Type", "application/cloudevents-batch+json");
    expect_none(&hdrs, &bad);
    sign(h, &hdrs, &bad, h->body.p, h->body.len);
    if (bad) {
        curl_slist_free_all(hdrs);
        fail_all(res, n, OUTBOX_ERR_BROKER, "out of memory building the webhook batch");
        return OUTBOX_OK;
    }
    outbox_pub_result_t r = {0};
    sent_t s = post(sink, hdrs, h->body.p, h->body.len, deadline - outbox__now_ms(), &r);
    fail_all(res, n, r.err, r.errstr);
    for (size_t i = 0; i < n; i++)
        res[i].retry_after_ms = r.retry_after_ms;
    return s == SENT_UNREACHABLE ? OUTBOX_ERR_BROKER : OUTBOX_OK;
}

/* Builds the headers of one event's request (the list is the caller's);
 * body and len are set to what is POSTed. -1 on ENOMEM. */
static int event_request(http_sink_t *h, const outbox_msg_t *m, struct curl_slist **hdrs,
                         const char **body, size_t *len)
{
    int bad = 0;
    if (h->binary) {
        *body = m->payload ? m->payload : "null";
        *len = strlen(*body);
        plain_header(hdrs, &bad, "Content-Type", "application/json");
        ce_header(hdrs, &bad, "ce-specversion", "1.0");
        ce_header(hdrs, &bad, "ce-id", m->id);
        ce_header(hdrs, &bad, "ce-source", m->source && *m->source ? m->source : "/outbox");
        ce_header(hdrs, &bad, "ce-type", m->type);
        ce_header(hdrs, &bad, "ce-subject", m->key);
        ce_header(hdrs, &bad, "ce-time", m->time);
        ce_header(hdrs, &bad, "ce-partitionkey", m->key);
    } else {
        *body = m->envelope;
        *len = m->envelope_len;
        plain_header(hdrs, &bad, "Content-Type", "application/cloudevents+json");
    }
    plain_header(hdrs, &bad, "Idempotency-Key", m->id);
    plain_header(hdrs, &bad, "traceparent", m->traceparent);
    expect_none(hdrs, &bad);
    sign(h, hdrs, &bad, *body, *len);
    return bad ? -1 : 0;
}

/* One POST per event, in order, each bounded by what is left of the call's
 * deadline; a failed event does not stop the others. */
static outbox_err_t http_publish(outbox_sink_t *sink, outbox_msg_t *msgs, size_t n,
                                 outbox_pub_result_t *res)
{
    http_sink_t *h = sink->state;
    if (!n)
        return OUTBOX_OK;
    int64_t deadline = outbox__sink_deadline(sink);
    if (h->batch) {
        if (deadline - outbox__now_ms() <= 0) {
            outbox__sink_out_of_time(res, n);
            return OUTBOX_OK;
        }
        return publish_batch(sink, msgs, n, deadline, res);
    }
    int answered = 0;
    for (size_t i = 0; i < n; i++) {
        outbox_msg_t *m = &msgs[i];
        res[i].retry_after_ms = 0;
        res[i].not_sent = 0;
        int64_t left = deadline - outbox__now_ms();
        if (left <= 0) {
            outbox__sink_out_of_time(&res[i], n - i);
            break;
        }
        struct curl_slist *hdrs = NULL;
        const char *body;
        size_t len;
        if (event_request(h, m, &hdrs, &body, &len)) {
            curl_slist_free_all(hdrs);
            res[i].err = OUTBOX_ERR_BROKER;
            snprintf(res[i].errstr, sizeof(res[i].errstr), "out of memory building the request");
            continue;
        }
        sent_t s = post(sink, hdrs, body, len, left, &res[i]);
        if (s == SENT_ANSWERED) {
            answered = 1;
            continue;
        }
        if (s != SENT_UNREACHABLE)
            continue;
        char why[sizeof(res[i].errstr)];
        snprintf(why, sizeof(why), "%s", res[i].errstr);
        if (!answered) {
            /* Nothing of this call was confirmed: the endpoint is down. */
            fail_all(res, n, OUTBOX_ERR_BROKER, why);
            return OUTBOX_ERR_BROKER;
        }
        /* It went away mid-call: the call gives up on the events after this
         * one rather than knock on the door for each (not sent, not charged). */
        for (size_t j = i + 1; j < n; j++) {
            res[j].err = OUTBOX_ERR_BROKER;
            res[j].retry_after_ms = 0;
            res[j].not_sent = 1;
            snprintf(res[j].errstr, sizeof(res[j].errstr), "not sent: %s", why);
        }
        break;
    }
    return OUTBOX_OK;
}

static outbox_err_t http_ping(outbox_sink_t *sink, char *errstr, size_t errstr_size)
{
    http_sink_t *h = sink->state;
    CURL *c = curl_easy_init();
    if (!c)
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "cannot create a libcurl handle");
    char cerr[CURL_ERROR_SIZE] = "";
    outbox__curl_common_opts(c, h->ca_file, h->insecure);
    curl_easy_setopt(c, CURLOPT_URL, sink->url);
    curl_easy_setopt(c, CURLOPT_CONNECT_ONLY, 1L); /* TCP (+ TLS) handshake only */
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)sink->timeout_ms);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)sink->timeout_ms);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK)
        return outbox__err(OUTBOX_ERR_BROKER, errstr, errstr_size, "cannot reach %s: %s",
                           h->shown_url, cerr[0] ? cerr : curl_easy_strerror(rc));
    return OUTBOX_OK;
}

static void http_close(outbox_sink_t *sink)
{
    http_sink_t *h = sink->state;
    if (!h)
        return;
    if (h->curl)
        curl_easy_cleanup(h->curl);
    if (h->secret) {
        sodium_memzero(h->secret, h->secret_len);
        free(h->secret);
    }
    outbox__buf_free(&h->resp);
    outbox__buf_free(&h->body);
    free(h);
    sink->state = NULL;
}

static const char *const http_schemes[] = {"http", "https", NULL};

const outbox_sink_ops_t outbox__sink_http_ops = {
    .name = "http",
    .schemes = http_schemes,
    .open = http_open,
    .publish = http_publish,
    .ping = http_ping,
    .close = http_close,
};
