/* OpenSearch sink (libcurl + jansson): opensearch+http:// and opensearch+https://.
 *
 *   opensearch+http(s)://[user:password@]host:port/[index-prefix]
 *
 * Each publish call is one POST /_bulk (Content-Type application/x-ndjson).
 * Per event, in the batch's order:
 *
 *   type ends with opensearch_delete_suffix ("Deleted"):
 *     {"delete":{"_index":I,"_id":KEY,"version":SEQ,"version_type":"external"}}
 *   otherwise:
 *     {"index":{"_index":I,"_id":KEY,"version":SEQ,"version_type":"external"}}
 *     <the event's data, compact JSON; must be a JSON object>
 *
 * I = opensearch_index if set, else lower-case(prefix + topic); KEY = the
 * event key (aggregate id); SEQ = the outbox sequence number, which grows
 * with commit order per key, so OpenSearch keeps the newest state: an older
 * event arriving late gets 409 version_conflict_engine_exception, which this
 * sink counts as delivered ("a newer state is already there"); likewise 404
 * for a delete ("already gone").
 *
 * Per-item outcome: 2xx, 409 version conflict, 404 on delete → acknowledged;
 * 429, 5xx, 408 → retried with backoff (only those items); other 4xx
 * (mapping errors, invalid index...) → dead letter at once. Each item's
 * result stands alone: the engine hands a call at most one event per key
 * and applies the per-key rule itself.
 *
 * Whole request: unreachable before an answer, 401 or 407 → OUTBOX_ERR_BROKER
 * for the call (nothing charged; the relay probes with ping(), which GETs /);
 * 408, 429, 5xx, other non-2xx, a timeout or a malformed response → every
 * item is retried. The request is bounded by the engine's deadline
 * (sink->deadline_ms, at most publish_timeout); with no time left, nothing
 * is sent (OUTBOX_ERR_TIMEOUT, not_sent). See docs/sinks/opensearch.md. */
#include <ctype.h>
#include <curl/curl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/conf.h"
#include "core/json.h"
#include "core/log.h"
#include "core/util.h"
#include "sink/sink.h"
#include "sink/sink_common.h"

#define RESP_MAX ((size_t)256 << 20) /* bulk responses above this are an error */

typedef struct os_sink_s {
    CURL *curl;
    char *bulk_url;    /* scheme://host:port/_bulk, no credentials */
    char *root_url;    /* scheme://host:port/ (ping) */
    char prefix[256];  /* index prefix from the URL path */
    const char *index; /* opensearch_index (borrowed from conf), or "" */
    const char *del_suffix;
    size_t del_suffix_len;
    char *user, *password; /* basic auth or NULL; password wiped on close */
    const char *ca_file;
    int insecure;
    int64_t retry_max_ms;
    outbox__buf_t body, resp;
    char curl_err[CURL_ERROR_SIZE];
    char shown_url[512];
} os_sink_t;

static char *get_part(CURLU *u, CURLUPart part, unsigned flags)
{
    char *v = NULL;
    if (curl_url_get(u, part, &v, flags) != CURLUE_OK)
        return NULL;
    char *copy = strdup(v);
    curl_free(v);
    return copy;
}

static void wipe_free(char *s)
{
    if (!s)
        return;
    volatile char *p = s;
    while (*p)
        *p++ = 0;
    free(s);
}

static outbox_err_t parse_url(outbox_sink_t *sink, os_sink_t *o, char *errstr, size_t errstr_size)
{
    const char *url = sink->url;
    const char *plus = strchr(url, '+');
    if (!plus || strncasecmp(url, "opensearch+", 11))
        return outbox__err(
            OUTBOX_ERR_CONFIG, errstr, errstr_size,
            "OpenSearch sink URL must look like opensearch+http://host:9200/[index-prefix]");
    CURLU *u = curl_url();
    if (!u)
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    outbox_err_t err = OUTBOX_OK;
    char *path = NULL, *host = NULL;
    if (curl_url_set(u, CURLUPART_URL, plus + 1, 0) != CURLUE_OK ||
        !(host = get_part(u, CURLUPART_HOST, 0)) ||
        !(path = get_part(u, CURLUPART_PATH, CURLU_URLDECODE))) {
        err =
            outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                        "OpenSearch sink URL \"%s\" is not a valid URL with a host", o->shown_url);
        goto out;
    }
    const char *p = path[0] == '/' ? path + 1 : path;
    size_t plen = strlen(p);
    if (plen && p[plen - 1] == '/')
        plen--;
    if (memchr(p, '/', plen) || plen >= sizeof(o->prefix)) {
        err = outbox__err(
            OUTBOX_ERR_CONFIG, errstr, errstr_size,
            "OpenSearch sink URL path must be one index prefix (e.g. /cars-), got \"%s\"", path);
        goto out;
    }
    for (size_t i = 0; i < plen; i++)
        o->prefix[i] = (char)tolower((unsigned char)p[i]);
    o->prefix[plen] = '\0';
    o->user = get_part(u, CURLUPART_USER, CURLU_URLDECODE);
    o->password = get_part(u, CURLUPART_PASSWORD, CURLU_URLDECODE);
    curl_url_set(u, CURLUPART_USER, NULL, 0);
    curl_url_set(u, CURLUPART_PASSWORD, NULL, 0);
    curl_url_set(u, CURLUPART_QUERY, NULL, 0);
    curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0);
    if (curl_url_set(u, CURLUPART_PATH, "/_bulk", 0) != CURLUE_OK ||
        !(o->bulk_url = get_part(u, CURLUPART_URL, 0)) ||
        curl_url_set(u, CURLUPART_PATH, "/", 0) != CURLUE_OK ||
        !(o->root_url = get_part(u, CURLUPART_URL, 0)))
        err = outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
out:
    free(path);
    free(host);
    curl_url_cleanup(u);
    return err;
}

static void os_free(os_sink_t *o)
{
    if (o->curl)
        curl_easy_cleanup(o->curl);
    free(o->bulk_url);
    free(o->root_url);
    free(o->user);
    wipe_free(o->password);
    outbox__buf_free(&o->body);
    outbox__buf_free(&o->resp);
    free(o);
}

static void set_auth(os_sink_t *o, CURL *c)
{
    if (!o->user || !*o->user)
        return;
    curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    curl_easy_setopt(c, CURLOPT_USERNAME, o->user);
    curl_easy_setopt(c, CURLOPT_PASSWORD, o->password ? o->password : "");
}

static outbox_err_t os_open(outbox_sink_t *sink, char *errstr, size_t errstr_size)
{
    outbox__curl_global_init();
    os_sink_t *o = calloc(1, sizeof(*o));
    if (!o)
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    outbox__redact_url(sink->url, o->shown_url, sizeof(o->shown_url));
    outbox_err_t err = parse_url(sink, o, errstr, errstr_size);
    if (!err)
        outbox__url_origin(o->root_url, o->shown_url, sizeof(o->shown_url));
    if (err) {
        os_free(o);
        return err;
    }
    const outbox_conf_t *conf = sink->conf;
    if (!o->user || !*o->user) {
        const char *user = outbox__conf_str(conf, "opensearch_username");
        if (*user) {
            free(o->user);
            wipe_free(o->password);
            o->user = strdup(user);
            o->password = strdup(outbox__conf_str(conf, "opensearch_password"));
            if (!o->user || !o->password) {
                os_free(o);
                return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
            }
        }
    }
    o->index = outbox__conf_str(conf, "opensearch_index");
    o->del_suffix = outbox__conf_str(conf, "opensearch_delete_suffix");
    o->del_suffix_len = strlen(o->del_suffix);
    o->ca_file = outbox__conf_str(conf, "opensearch_ca_file");
    o->insecure = outbox__conf_bool(conf, "opensearch_insecure_skip_verify");
    o->retry_max_ms = outbox__conf_ms(conf, "backoff_max");
    o->resp.max = RESP_MAX;
    if (!(o->curl = curl_easy_init())) {
        os_free(o);
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "cannot create a libcurl handle");
    }
    outbox__curl_common_opts(o->curl, o->ca_file, o->insecure);
    set_auth(o, o->curl);
    curl_easy_setopt(o->curl, CURLOPT_URL, o->bulk_url);
    curl_easy_setopt(o->curl, CURLOPT_POST, 1L);
    curl_easy_setopt(o->curl, CURLOPT_WRITEFUNCTION, outbox__curl_write_buf);
    curl_easy_setopt(o->curl, CURLOPT_WRITEDATA, &o->resp);
    curl_easy_setopt(o->curl, CURLOPT_ERRORBUFFER, o->curl_err);
    if (o->insecure)
        outbox__log(OUTBOX_LOG_WARN, "sink", "tls_verify_disabled",
                    "opensearch_insecure_skip_verify is set: TLS certificates and host names are "
                    "NOT verified",
                    "worker", sink->name, "sink", o->shown_url, NULL);
    sink->state = o;
    return OUTBOX_OK;
}

/* OpenSearch index-name rules: lower case, not "", "." or "..", no leading
 * '_', '-' or '+', none of \ / * ? " < > | , # : or space, <= 255 bytes. */
static int index_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (!n || n > 255 || !strcmp(s, ".") || !strcmp(s, "..") || strchr("_-+", s[0]))
        return 0;
    for (const char *p = s; *p; p++)
        if (strchr("\\/*?\"<>|,#: ", *p) || (unsigned char)*p < 0x20 || isupper((unsigned char)*p))
            return 0;
    return 1;
}

static int is_delete(const os_sink_t *o, const char *type)
{
    size_t n = strlen(type);
    return o->del_suffix_len && n >= o->del_suffix_len &&
           !strcmp(type + n - o->del_suffix_len, o->del_suffix);
}

static void set_res(outbox_pub_result_t *r, outbox_err_t err, int64_t retry_after_ms,
                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void set_res(outbox_pub_result_t *r, outbox_err_t err, int64_t retry_after_ms,
                    const char *fmt, ...)
{
    r->err = err;
    r->retry_after_ms = retry_after_ms;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->errstr, sizeof(r->errstr), fmt, ap);
    va_end(ap);
}

/*
 * Appends the action (and source) lines of m to o->body. Returns OUTBOX_OK,
 * or OUTBOX_ERR_REJECTED with the reason in *res when the event can never
 * be indexed (bad index name or id, data not an object).
 */
static outbox_err_t add_item(os_sink_t *o, const outbox_msg_t *m, outbox_pub_result_t *res)
{
    char index[512];
    if (*o->index) {
        snprintf(index, sizeof(index), "%s", o->index);
    } else {
        size_t j = (size_t)snprintf(index, sizeof(index), "%s", o->prefix);
        for (const char *p = m->topic; *p && j + 1 < sizeof(index); p++)
            index[j++] = (char)tolower((unsigned char)*p);
        index[j] = '\0';
    }
    if (!index_name_ok(index)) {
        set_res(res, OUTBOX_ERR_REJECTED, 0, "\"%.200s\" is not a valid OpenSearch index name",
                index);
        return OUTBOX_ERR_REJECTED;
    }
    size_t klen = strlen(m->key);
    if (!klen || klen > 512) {
        set_res(res, OUTBOX_ERR_REJECTED, 0,
                "event key is empty or longer than 512 bytes (OpenSearch _id limit)");
        return OUTBOX_ERR_REJECTED;
    }
    int del = is_delete(o, m->type);
    /* The document is the event's data as the producer wrote it (never
     * parsed into doubles and re-encoded), only its whitespace dropped: one
     * NDJSON line (a raw newline can only sit outside strings). */
    const char *doc = m->payload ? m->payload : "null";
    size_t doc_len = m->payload_len ? m->payload_len : strlen(doc);
    if (!del) {
        size_t i = strspn(doc, " \t\r\n");
        if (outbox__json_check(doc, doc_len, NULL) || i >= doc_len || doc[i] != '{') {
            set_res(res, OUTBOX_ERR_REJECTED, 0,
                    "event data is not a JSON object; an OpenSearch document must be one");
            return OUTBOX_ERR_REJECTED;
        }
    }
    /* json_pack refuses strings that are not UTF-8: that event can never be
     * written, so reject it rather than fail the whole request. */
    json_t *action =
        json_pack("{s:{s:s, s:s, s:I, s:s}}", del ? "delete" : "index", "_index", index, "_id",
                  m->key, "version", (json_int_t)m->seq, "version_type", "external");
    char *line = action ? json_dumps(action, JSON_COMPACT) : NULL;
    json_decref(action);
    if (!line) {
        set_res(res, OUTBOX_ERR_REJECTED, 0,
                "cannot encode the bulk action (index or key not valid UTF-8?)");
        return OUTBOX_ERR_REJECTED;
    }
    outbox__buf_adds(&o->body, line);
    outbox__buf_add(&o->body, "\n", 1);
    free(line);
    if (!del) {
        char *src = malloc(doc_len ? doc_len : 1);
        if (src) {
            outbox__buf_add(&o->body, src, outbox__json_compact(doc, doc_len, src));
            outbox__buf_add(&o->body, "\n", 1);
            free(src);
        } else {
            o->body.broken = 1;
        }
    }
    return OUTBOX_OK;
}

/* Classifies one item of the bulk response into *r. */
static void item_result(json_t *item, outbox_pub_result_t *r)
{
    const char *action = NULL;
    json_t *v = NULL;
    if (json_is_object(item) && json_object_size(item) == 1) {
        void *it = json_object_iter(item);
        action = json_object_iter_key(it);
        v = json_object_iter_value(it);
    }
    json_t *st = json_object_get(v, "status");
    if (!action || !json_is_integer(st)) {
        set_res(r, OUTBOX_ERR_BROKER, 0, "malformed item in the OpenSearch bulk response");
        return;
    }
    long status = (long)json_integer_value(st);
    json_t *error = json_object_get(v, "error");
    const char *etype = json_string_value(json_object_get(error, "type"));
    const char *reason = json_string_value(json_object_get(error, "reason"));
    if (!etype && json_is_string(error))
        etype = json_string_value(error);
    if (status >= 200 && status < 300)
        set_res(r, OUTBOX_OK, 0, "%s", "");
    else if (status == 409 && etype && !strcmp(etype, "version_conflict_engine_exception"))
        set_res(r, OUTBOX_OK, 0, "%s", ""); /* a newer (or this) version is already there */
    else if (status == 404 && !strcmp(action, "delete"))
        set_res(r, OUTBOX_OK, 0, "%s", ""); /* already gone */
    else if (status == 408 || status == 429 || status >= 500)
        set_res(r, OUTBOX_ERR_BROKER, 0, "OpenSearch %s item: %ld %s: %.120s", action, status,
                etype ? etype : "error", reason ? reason : "");
    else
        set_res(r, OUTBOX_ERR_REJECTED, 0, "OpenSearch %s item rejected: %ld %s: %.120s", action,
                status, etype ? etype : "error", reason ? reason : "");
}

/* One bulk request being made: bulk item j is msgs[item_msg[j]]. */
typedef struct bulk_s {
    outbox_pub_result_t *res;
    size_t *item_msg;
    size_t nitems;
} bulk_t;

/* Sets the result of every item of the request. */
static void items_fail(bulk_t *b, outbox_err_t err, int64_t retry_after_ms, const char *why)
{
    for (size_t j = 0; j < b->nitems; j++)
        set_res(&b->res[b->item_msg[j]], err, retry_after_ms, "%s", why);
}

/* POSTs o->body within timeout_ms. CURLE_OK with *status set, or the
 * libcurl error (o->curl_err says more). */
static CURLcode post_bulk(os_sink_t *o, int64_t timeout_ms, long *status)
{
    *status = 0;
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/x-ndjson");
    struct curl_slist *h2 = hdrs ? curl_slist_append(hdrs, "Expect:") : NULL;
    if (!h2) {
        curl_slist_free_all(hdrs);
        snprintf(o->curl_err, sizeof(o->curl_err), "out of memory");
        return CURLE_OUT_OF_MEMORY;
    }
    CURL *c = o->curl;
    outbox__buf_reset(&o->resp);
    o->curl_err[0] = '\0';
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h2);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, o->body.p);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body.len);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
    CURLcode cc = curl_easy_perform(c);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(h2);
    if (cc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    return cc;
}

/* Reads the outcome of the request into the items' results. Returns
 * OUTBOX_ERR_BROKER when the whole call failed (unreachable, credentials
 * refused: every result set), OUTBOX_OK otherwise. */
static outbox_err_t read_bulk(os_sink_t *o, bulk_t *b, size_t n, CURLcode cc, long status)
{
    char quoted[160], why[512];
    outbox__printable(o->resp.p ? o->resp.p : "", o->resp.len, quoted, sizeof(quoted));
    const char *cerr = o->curl_err[0] ? o->curl_err : curl_easy_strerror(cc);
    if (cc != CURLE_OK && outbox__curl_unreachable(o->curl, cc)) {
        for (size_t i = 0; i < n; i++)
            set_res(&b->res[i], OUTBOX_ERR_BROKER, 0, "OpenSearch at %s unreachable: %s",
                    o->shown_url, cerr);
        return OUTBOX_ERR_BROKER;
    }
    if (status == 401 || status == 407) {
        /* Credentials are wrong: no event is at fault; wait for ping. */
        for (size_t i = 0; i < n; i++)
            set_res(&b->res[i], OUTBOX_ERR_BROKER, 0,
                    "OpenSearch at %s refused the credentials (HTTP %ld): %s", o->shown_url, status,
                    quoted);
        return OUTBOX_ERR_BROKER;
    }
    /* The request as a whole failed: retry every item sent. A whole request
     * is never a verdict on one event, so nothing is rejected. */
    if (cc != CURLE_OK) {
        snprintf(why, sizeof(why), "OpenSearch bulk request failed: %s", cerr);
        items_fail(b, cc == CURLE_OPERATION_TIMEDOUT ? OUTBOX_ERR_TIMEOUT : OUTBOX_ERR_BROKER, 0,
                   why);
        return OUTBOX_OK;
    }
    if (status < 200 || status >= 300) {
        snprintf(why, sizeof(why), "OpenSearch bulk request: HTTP %ld: %s", status, quoted);
        items_fail(b, OUTBOX_ERR_BROKER, outbox__curl_retry_after_ms(o->curl, o->retry_max_ms),
                   why);
        return OUTBOX_OK;
    }
    json_error_t jerr;
    json_t *doc =
        o->resp.broken ? NULL : json_loadb(o->resp.p ? o->resp.p : "", o->resp.len, 0, &jerr);
    json_t *items = json_object_get(doc, "items");
    if (!json_is_array(items) || json_array_size(items) != b->nitems) {
        snprintf(why, sizeof(why), "malformed OpenSearch bulk response (%zu items expected): %s",
                 b->nitems, quoted);
        items_fail(b, OUTBOX_ERR_BROKER, 0, why);
    } else {
        for (size_t j = 0; j < b->nitems; j++)
            item_result(json_array_get(items, j), &b->res[b->item_msg[j]]);
    }
    json_decref(doc);
    return OUTBOX_OK;
}

static outbox_err_t os_publish(outbox_sink_t *sink, outbox_msg_t *msgs, size_t n,
                               outbox_pub_result_t *res)
{
    os_sink_t *o = sink->state;
    if (!n)
        return OUTBOX_OK;
    int64_t left = outbox__sink_deadline(sink) - outbox__now_ms();
    if (left <= 0) {
        outbox__sink_out_of_time(res, n);
        return OUTBOX_OK;
    }
    bulk_t b = {.res = res, .item_msg = calloc(n, sizeof(size_t))};
    if (!b.item_msg) {
        for (size_t i = 0; i < n; i++)
            set_res(&res[i], OUTBOX_ERR_BROKER, 0, "out of memory");
        return OUTBOX_OK;
    }
    outbox__buf_reset(&o->body);
    for (size_t i = 0; i < n; i++) {
        res[i].not_sent = 0;
        if (add_item(o, &msgs[i], &res[i]) == OUTBOX_OK) /* else rejected, result set */
            b.item_msg[b.nitems++] = i;
    }
    outbox_err_t rc = OUTBOX_OK;
    if (o->body.broken) {
        items_fail(&b, OUTBOX_ERR_BROKER, 0, "out of memory building the bulk request");
    } else if (b.nitems) {
        long status;
        CURLcode cc = post_bulk(o, left, &status);
        rc = read_bulk(o, &b, n, cc, status);
    }
    free(b.item_msg);
    return rc;
}

static outbox_err_t os_ping(outbox_sink_t *sink, char *errstr, size_t errstr_size)
{
    os_sink_t *o = sink->state;
    CURL *c = curl_easy_init();
    if (!c)
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "cannot create a libcurl handle");
    outbox__buf_t body = {.max = 4096};
    char cerr[CURL_ERROR_SIZE] = "";
    outbox__curl_common_opts(c, o->ca_file, o->insecure);
    set_auth(o, c);
    curl_easy_setopt(c, CURLOPT_URL, o->root_url);
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, outbox__curl_write_buf);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)sink->timeout_ms);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)sink->timeout_ms);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    CURLcode cc = curl_easy_perform(c);
    long status = 0;
    if (cc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    outbox__buf_free(&body);
    if (cc != CURLE_OK)
        return outbox__err(OUTBOX_ERR_BROKER, errstr, errstr_size,
                           "cannot reach OpenSearch at %s: %s", o->shown_url,
                           cerr[0] ? cerr : curl_easy_strerror(cc));
    /* 401/407: bad credentials; 5xx: the cluster is not serving. A 403 only
     * means this user may not read cluster info, which _bulk does not need. */
    if (status == 401 || status == 407 || status >= 500)
        return outbox__err(OUTBOX_ERR_BROKER, errstr, errstr_size,
                           "OpenSearch at %s answered GET / with HTTP %ld", o->shown_url, status);
    return OUTBOX_OK;
}

static void os_close(outbox_sink_t *sink)
{
    if (sink->state)
        os_free(sink->state);
    sink->state = NULL;
}

static const char *const os_schemes[] = {"opensearch+http", "opensearch+https", NULL};

const outbox_sink_ops_t outbox__sink_opensearch_ops = {
    .name = "opensearch",
    .schemes = os_schemes,
    .open = os_open,
    .publish = os_publish,
    .ping = os_ping,
    .close = os_close,
};
