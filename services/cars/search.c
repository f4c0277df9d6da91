/* GET /cars/search?q=...&limit=N: answers from the search index, never from
 * the primary tables.
 *
 *   PostgreSQL (default): the car_search projection in the search database
 *     (tsvector + GIN), kept by the car-search consumer (projection.c);
 *   OpenSearch (when the sink is opensearch+http(s)://): the index the
 *     relay's OpenSearch bulk sink keeps, queried with _search.
 *
 * Each word of q must match (AND), as a prefix ("toyo" finds Toyota), over
 * vin, make, model and year. Both answer the same shape:
 *   {"query": q, "total": N, "index": "postgres"|"opensearch", "cars": [car, ...]} */
#include <ctype.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cars.h"

#define MAX_WORDS 16
#define MAX_Q 200
#define LIMIT_DEFAULT 20
#define LIMIT_MAX 100

int cars_search_words(const char *q, int fmt_pg, char *out, size_t out_size, char *why,
                      size_t why_size)
{
    int n = 0;
    size_t o = 0;
    out[0] = '\0';
    if (!q || !*q) {
        snprintf(why, why_size,
                 "q is required: the words to look for in vin, make, model and year, e.g. "
                 "/cars/search?q=toyota+corolla");
        return 0;
    }
    if (strlen(q) > MAX_Q) {
        snprintf(why, why_size, "q is longer than %d bytes", MAX_Q);
        return 0;
    }
    json_t *text = json_string(q); /* NULL: not UTF-8 (the query and the answer are text) */
    json_decref(text);
    if (!text) {
        snprintf(why, why_size, "q is not UTF-8 text (percent-encode UTF-8 bytes)");
        return 0;
    }
    for (const unsigned char *p = (const unsigned char *)q; *p && n < MAX_WORDS;) {
        while (*p && !(isalnum(*p) || *p >= 0x80))
            p++;
        if (!*p)
            break;
        const unsigned char *w = p;
        while (*p && (isalnum(*p) || *p >= 0x80))
            p++;
        int l = snprintf(out + o, out_size - o, "%s%.*s%s", n ? (fmt_pg ? " & " : " ") : "",
                         (int)(p - w), (const char *)w, fmt_pg ? ":*" : "*");
        if (l < 0 || (size_t)l >= out_size - o)
            break;
        o += (size_t)l;
        n++;
    }
    if (!n)
        snprintf(why, why_size, "q has no words to look for (letters or digits)");
    return n;
}

static const char search_sql[] =
    "WITH m AS (SELECT car_id, vin, make, model, year, price, version,"
    "                  ts_rank(document, to_tsquery('simple', $1)) AS rank"
    "             FROM car_search WHERE NOT deleted AND document @@ to_tsquery('simple', $1))"
    " SELECT json_build_object('query', $2::text, 'total', (SELECT count(*) FROM m),"
    "   'index', 'postgres', 'cars', COALESCE((SELECT json_agg(json_build_object("
    "       'id', car_id, 'vin', vin, 'make', make, 'model', model, 'year', year,"
    "       'price', price, 'version', version) ORDER BY rank DESC, make, model, car_id)"
    "     FROM (SELECT * FROM m ORDER BY rank DESC, make, model, car_id LIMIT $3::int) t),"
    "   '[]'::json))::text";

static void search_pg(outbox_http_req_t *req, outbox_http_resp_t *resp, cars_app_t *app,
                      const char *q, const char *tsq, int limit)
{
    char err[512], lim[16];
    PGconn *c = outbox__dbpool_get(app->search_pool, 5000, err, sizeof(err));
    if (!c) {
        outbox__log(OUTBOX_LOG_ERROR, "cars", "search_db_down", err, NULL);
        outbox__http_problem(req, resp, 503, "search-unavailable", NULL,
                             "the search database is unreachable; retry later");
        return;
    }
    snprintf(lim, sizeof(lim), "%d", limit);
    const char *p[3] = {tsq, q, lim};
    PGresult *r = PQexecParams(c, search_sql, 3, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        outbox__http_reply_raw(resp, 200, "application/json", PQgetvalue(r, 0, 0),
                               (size_t)PQgetlength(r, 0, 0));
    } else {
        outbox__log(OUTBOX_LOG_ERROR, "cars", "search_failed", PQresultErrorMessage(r), "q", q,
                    NULL);
        int down = PQstatus(c) != CONNECTION_OK;
        outbox__http_problem(req, resp, down ? 503 : 500, down ? "search-unavailable" : "internal",
                             NULL, "the search %s; see the server log",
                             down ? "database is unreachable, retry later" : "query failed");
    }
    PQclear(r);
    outbox__dbpool_put(app->search_pool, c);
}

typedef struct {
    char *p;
    size_t n, cap;
} sbuf_t;

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    sbuf_t *b = ud;
    size_t n = size * nmemb;
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->n + n + 1) * 2;
        if (cap > 16 * 1024 * 1024)
            return 0; /* too big: curl fails the transfer */
        char *q = realloc(b->p, cap);
        if (!q)
            return 0;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n] = '\0';
    return n;
}

static void search_os(outbox_http_req_t *req, outbox_http_resp_t *resp, cars_app_t *app,
                      const char *q, const char *osq, int limit)
{
    json_t *body =
        json_pack("{s:i,s:b,s:{s:{s:s,s:[s,s,s,s],s:s,s:b}}}", "size", limit, "track_total_hits", 1,
                  "query", "simple_query_string", "query", osq, "fields", "vin", "make", "model",
                  "year", "default_operator", "and", "lenient", 1);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    char url[1400];
    snprintf(url, sizeof(url), "%s/%s/_search", app->os_url, app->os_index);
    sbuf_t b = {0};
    CURL *e = text ? curl_easy_init() : NULL;
    long status = 0;
    CURLcode cc = CURLE_OUT_OF_MEMORY;
    if (e) {
        struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
        const outbox_conf_t *conf = app->conf;
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, text);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 10000L);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        if (outbox_kit_conf_str(conf, "opensearch_username")[0]) {
            curl_easy_setopt(e, CURLOPT_USERNAME, outbox_kit_conf_str(conf, "opensearch_username"));
            curl_easy_setopt(e, CURLOPT_PASSWORD, outbox_kit_conf_str(conf, "opensearch_password"));
        }
        if (outbox_kit_conf_str(conf, "opensearch_ca_file")[0])
            curl_easy_setopt(e, CURLOPT_CAINFO, outbox_kit_conf_str(conf, "opensearch_ca_file"));
        if (outbox_kit_conf_bool(conf, "opensearch_insecure_skip_verify")) {
            curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
            curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
        }
        cc = curl_easy_perform(e);
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_cleanup(e);
        curl_slist_free_all(h);
    }
    free(text);
    json_t *doc = cc == CURLE_OK && b.p ? json_loads(b.p, 0, NULL) : NULL;
    json_t *hits = json_object_get(json_object_get(doc, "hits"), "hits");
    if (status == 404) {
        /* no document was ever indexed: the index does not exist yet */
        json_t *out =
            json_pack("{s:s,s:i,s:s,s:[]}", "query", q, "total", 0, "index", "opensearch", "cars");
        outbox__http_reply_json(resp, 200, out);
        json_decref(out);
    } else if (status != 200 || !json_is_array(hits)) {
        outbox__log(OUTBOX_LOG_ERROR, "cars", "search_failed",
                    cc != CURLE_OK ? curl_easy_strerror(cc) : "unexpected OpenSearch answer",
                    "index", app->os_index, "body", b.p ? b.p : "", NULL);
        outbox__http_problem(req, resp, 503, "search-unavailable", NULL,
                             "the OpenSearch index \"%s\" did not answer the search (%s); retry "
                             "later",
                             app->os_index,
                             cc != CURLE_OK ? curl_easy_strerror(cc) : "see the server log");
    } else {
        json_t *cars = json_array();
        size_t i;
        json_t *hit;
        json_array_foreach(hits, i, hit)
        {
            json_t *src = json_object_get(hit, "_source");
            if (json_is_object(src)) {
                json_t *car = json_deep_copy(src);
                json_object_del(car, "schema_version");
                json_object_del(car, "created_at");
                json_object_del(car, "updated_at");
                json_array_append_new(cars, car);
            }
        }
        json_t *total =
            json_object_get(json_object_get(json_object_get(doc, "hits"), "total"), "value");
        json_t *out =
            json_pack("{s:s,s:I,s:s,s:o}", "query", q, "total",
                      (json_int_t)json_integer_value(total), "index", "opensearch", "cars", cars);
        outbox__http_reply_json(resp, 200, out);
        json_decref(out);
    }
    json_decref(doc);
    free(b.p);
}

void cars_search(outbox_http_req_t *req, outbox_http_resp_t *resp, void *opaque)
{
    cars_app_t *app = opaque;
    const char *q = outbox__http_query(req, "q");
    const char *l = outbox__http_query(req, "limit");
    char expr[MAX_Q * 3 + 64], why[256];
    if (cars_search_words(q, app->os_url[0] == '\0', expr, sizeof(expr), why, sizeof(why)) == 0) {
        outbox__http_problem(req, resp, 400, "validation-error", NULL, "%s", why);
        return;
    }
    int limit = LIMIT_DEFAULT;
    if (l) {
        char *end;
        long v = strtol(l, &end, 10);
        if (!*l || *end || v < 1 || v > LIMIT_MAX) {
            outbox__http_problem(req, resp, 400, "validation-error", NULL,
                                 "limit must be an integer from 1 to %d", LIMIT_MAX);
            return;
        }
        limit = (int)v;
    }
    if (app->os_url[0])
        search_os(req, resp, app, q, expr, limit);
    else
        search_pg(req, resp, app, q, expr, limit);
}
