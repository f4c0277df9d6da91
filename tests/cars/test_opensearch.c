/* cars-service in OpenSearch mode (sink opensearch+http://) against a local
 * stand-in of the two OpenSearch calls it relies on — NOT a live OpenSearch:
 *
 *   POST /_bulk     index/delete actions with external versions (kept per
 *                   document, tombstones for deletes, 409 for an older one);
 *   POST /cars/_search  simple_query_string of prefix words, AND, over vin,
 *                   make, model, year; hits.total.value and _source.
 *
 * Checks: the relay writes index "cars", _id = the car id, version_type
 * external, CarDeleted as a delete; GET /cars/search asks OpenSearch (index
 * "opensearch" in the answer) and follows register, price change, delete;
 * the PostgreSQL projection is not set up in this mode. */
#include <ctype.h>
#include <jansson.h>
#include <pthread.h>
#include <strings.h>

#include "../sinks/sink_test.h"
#include "cars_testlib.h"

#define MAX_DOCS 64

typedef struct {
    char id[64];
    long long version;
    int exists;
    json_t *source;
} doc_t;

static doc_t docs[MAX_DOCS];
static int ndocs, bulk_requests, searches, violations;
static char last_query[512], first_violation[512];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static void violation(const char *what, const char *line)
{
    if (!violations++)
        snprintf(first_violation, sizeof(first_violation), "%s: %.300s", what, line);
}

static doc_t *doc_get(const char *id)
{
    for (int i = 0; i < ndocs; i++)
        if (!strcmp(docs[i].id, id))
            return &docs[i];
    CHECK(ndocs < MAX_DOCS, "stand-in full");
    snprintf(docs[ndocs].id, sizeof(docs[ndocs].id), "%s", id);
    return &docs[ndocs++];
}

static json_t *item(const char *action, const char *id, int status, long long version)
{
    if (status == 409)
        return json_pack("{s:{s:s,s:s,s:i,s:{s:s,s:s}}}", action, "_index", "cars", "_id", id,
                         "status", 409, "error", "type", "version_conflict_engine_exception",
                         "reason", "version conflict");
    return json_pack("{s:{s:s,s:s,s:I,s:i}}", action, "_index", "cars", "_id", id, "_version",
                     (json_int_t)version, "status", status);
}

static void handle_bulk(st_req_t *q)
{
    bulk_requests++;
    json_t *items = json_array();
    char *body = strndup(q->body, q->body_len);
    for (char *line = body; line && *line;) {
        char *nl = strchr(line, '\n');
        if (!nl)
            break;
        *nl = '\0';
        json_t *a = json_loads(line, 0, NULL);
        void *it = json_object_iter(a);
        const char *action = it ? json_object_iter_key(it) : "";
        json_t *meta = it ? json_object_iter_value(it) : NULL;
        const char *index = json_string_value(json_object_get(meta, "_index"));
        const char *id = json_string_value(json_object_get(meta, "_id"));
        const char *vt = json_string_value(json_object_get(meta, "version_type"));
        long long ver = json_integer_value(json_object_get(meta, "version"));
        line = nl + 1;
        json_t *src = NULL;
        if (!strcmp(action, "index")) {
            char *nl2 = strchr(line, '\n');
            if (!nl2) {
                violation("index action without a source line", line);
                json_decref(a);
                break;
            }
            *nl2 = '\0';
            src = json_loads(line, 0, NULL);
            line = nl2 + 1;
        } else if (strcmp(action, "delete") != 0) {
            violation("not an index/delete action", line);
        }
        if (!index || strcmp(index, "cars") || !id || !outbox_uuid_valid(id) || !vt ||
            strcmp(vt, "external") || ver < 1)
            violation("want _index cars, _id a car id, version_type external", "");
        doc_t *d = doc_get(id ? id : "?");
        if (d->version >= ver) {
            json_array_append_new(items, item(action, d->id, 409, ver));
        } else if (!strcmp(action, "delete")) {
            int existed = d->exists;
            d->version = ver;
            d->exists = 0;
            json_decref(d->source);
            d->source = NULL;
            json_array_append_new(items, item(action, d->id, existed ? 200 : 404, ver));
        } else {
            int existed = d->exists;
            d->version = ver;
            d->exists = 1;
            json_decref(d->source);
            d->source = json_incref(src);
            json_array_append_new(items, item(action, d->id, existed ? 200 : 201, ver));
        }
        json_decref(src);
        json_decref(a);
    }
    free(body);
    json_t *resp = json_pack("{s:i,s:b,s:o}", "took", 1, "errors", 0, "items", items);
    char *t = json_dumps(resp, JSON_COMPACT);
    st_buf_add(&q->resp, t, strlen(t));
    free(t);
    json_decref(resp);
}

/* 1 if some word of the text of v starts with prefix (case-insensitive). */
static int field_has(json_t *v, const char *prefix)
{
    char text[128];
    if (json_is_string(v))
        snprintf(text, sizeof(text), "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(text, sizeof(text), "%lld", (long long)json_integer_value(v));
    else
        return 0;
    size_t n = strlen(prefix);
    for (char *w = text; *w;) {
        while (*w && !isalnum((unsigned char)*w))
            w++;
        if (*w && !strncasecmp(w, prefix, n))
            return 1;
        while (*w && isalnum((unsigned char)*w))
            w++;
    }
    return 0;
}

static void handle_search(st_req_t *q)
{
    searches++;
    json_t *req = json_loads(q->body, 0, NULL);
    json_t *sqs = json_object_get(json_object_get(req, "query"), "simple_query_string");
    const char *query = json_string_value(json_object_get(sqs, "query"));
    const char *op = json_string_value(json_object_get(sqs, "default_operator"));
    int size = (int)json_integer_value(json_object_get(req, "size"));
    if (!query || !op || strcasecmp(op, "and") || size < 1)
        violation("want simple_query_string with default_operator and, and a size", q->body);
    snprintf(last_query, sizeof(last_query), "%s", query ? query : "");
    json_t *hits = json_array();
    int total = 0;
    for (int i = 0; i < ndocs; i++) {
        if (!docs[i].exists)
            continue;
        int all = 1;
        char words[512];
        snprintf(words, sizeof(words), "%s", query ? query : "");
        /* each "prefix*" word must match one of the fields */
        char *save = NULL;
        for (char *w = strtok_r(words, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
            size_t l = strlen(w);
            if (l && w[l - 1] == '*')
                w[l - 1] = '\0';
            static const char *const f[] = {"vin", "make", "model", "year"};
            int one = 0;
            for (int k = 0; k < 4; k++)
                one |= field_has(json_object_get(docs[i].source, f[k]), w);
            all &= one;
        }
        if (all) {
            total++;
            if ((int)json_array_size(hits) < size)
                json_array_append_new(hits, json_pack("{s:s,s:s,s:f,s:O}", "_index", "cars", "_id",
                                                      docs[i].id, "_score", 1.0, "_source",
                                                      docs[i].source));
        }
    }
    json_decref(req);
    json_t *resp = json_pack("{s:i,s:b,s:{s:{s:i,s:s},s:o}}", "took", 1, "timed_out", 0, "hits",
                             "total", "value", total, "relation", "eq", "hits", hits);
    char *t = json_dumps(resp, JSON_COMPACT);
    st_buf_add(&q->resp, t, strlen(t));
    free(t);
    json_decref(resp);
}

static void handle(st_req_t *q, void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    if (!strcmp(q->method, "POST") && !strcmp(q->url, "/_bulk"))
        handle_bulk(q);
    else if (!strcmp(q->method, "POST") && !strcmp(q->url, "/cars/_search"))
        handle_search(q);
    else if (!strcmp(q->method, "GET") && !strcmp(q->url, "/"))
        st_buf_add(&q->resp, "{\"version\":{\"number\":\"2.11.0\"}}", 31);
    else {
        q->status = 404;
        violation("unexpected request", q->url);
    }
    pthread_mutex_unlock(&mu);
}

static long long search_price(const cars_svc_t *s, const char *q, http_resp_t *r)
{
    long long n = cars_search_total(s, q, r);
    if (n < 1)
        return n;
    json_t *o = json_loads(r->body, 0, NULL);
    long long p =
        json_integer_value(json_object_get(json_array_get(json_object_get(o, "cars"), 0), "price"));
    json_decref(o);
    return p;
}

int main(void)
{
    st_server_t os = {0};
    st_server_start(&os, handle, NULL);
    char sink[128];
    snprintf(sink, sizeof(sink), "OUTBOX_SINK=opensearch+http://127.0.0.1:%d/", os.port);
    char *env[] = {sink, NULL};
    cars_svc_t s;
    cars_start(&s, "cars_opensearch", env);
    CHECK(wait_count(s.log, "search index: OpenSearch", 1, 5000) == 1, "mode line missing (%s)",
          s.log);
    http_resp_t r;
    char id[37], vin[18], url[160];

    /* Before anything is indexed. */
    CHECK(cars_search_total(&s, "volvo", &r) == 0 && strstr(r.body, "opensearch"),
          "empty search: %ld %s", r.status, r.body);

    cars_vin("YV1RS592", 1, vin);
    CHECK(cars_register(&s, cars_body(vin, "Volvo", "S60", 2012, 1100000), id, &r) == 201,
          "register: %ld %s", r.status, r.body);
    long long end = tu_now_ms() + 10000;
    while (search_price(&s, "volvo s6", &r) != 1100000 && tu_now_ms() < end)
        tu_sleep_ms(50);
    CHECK(search_price(&s, "volvo s6", &r) == 1100000, "not found in OpenSearch: %s", r.body);
    CHECK(strstr(r.body, "\"index\":\"opensearch\"") && strstr(r.body, id), "answer: %s", r.body);
    pthread_mutex_lock(&mu);
    CHECK(!strcmp(last_query, "volvo* s6*"), "query sent: %s", last_query);
    pthread_mutex_unlock(&mu);

    snprintf(url, sizeof(url), "%s/cars/%s", s.url, id);
    const char *upd = "{\"price\":999000}";
    CHECK(http_do("PUT", url, "application/json", NULL, upd, strlen(upd), &r) == 200, "PUT: %s",
          r.body);
    end = tu_now_ms() + 10000;
    while (search_price(&s, "volvo", &r) != 999000 && tu_now_ms() < end)
        tu_sleep_ms(50);
    CHECK(search_price(&s, "volvo", &r) == 999000, "price change not in OpenSearch: %s", r.body);

    CHECK(http_do("DELETE", url, NULL, NULL, NULL, 0, &r) == 200, "DELETE: %s", r.body);
    end = tu_now_ms() + 10000;
    while (cars_search_total(&s, "volvo", &r) != 0 && tu_now_ms() < end)
        tu_sleep_ms(50);
    CHECK(cars_search_total(&s, "volvo", &r) == 0, "deleted car still found: %s", r.body);

    pthread_mutex_lock(&mu);
    doc_t *d = doc_get(id);
    CHECK(!d->exists && d->version >= 3, "stand-in: document exists=%d version=%lld", d->exists,
          d->version);
    CHECK(violations == 0, "%d protocol violations, first: %s", violations, first_violation);
    printf("%d bulk requests, %d searches\n", bulk_requests, searches);
    pthread_mutex_unlock(&mu);

    /* The PostgreSQL projection is not used in this mode. */
    PGconn *sdb = tu_connect(s.search_db);
    CHECK(tu_query_ll(sdb, "SELECT count(*) FROM pg_tables WHERE tablename = 'car_search'") == 0,
          "the search database was set up although OpenSearch keeps the index");
    PQfinish(sdb);

    cars_teardown(&s);
    st_server_stop(&os);
    printf("PASS cars_opensearch\n");
    return 0;
}
