/* OpenSearch sink against a strict local _bulk stand-in (libmicrohttpd).
 *
 * NOT a live OpenSearch: the stand-in implements the part of the _bulk
 * contract the sink relies on, strictly: POST /_bulk, Content-Type
 * application/x-ndjson, body = action line then source line (index) or
 * action line alone (delete), each action exactly {_index,_id,version,
 * version_type:"external"}; documents kept with their external versions
 * (tombstones for deletes); realistic per-item results: 201 created,
 * 200 updated/deleted, 404 not_found, 409 version_conflict_engine_exception
 * when the stored version is >= the provided one, plus scripted per-item
 * 429/500/400 and a whole-request 503.
 *
 * Through the relay: index/delete/re-create of several keys with updates;
 * afterwards every document equals the newest event of its key, only failed
 * items were ever sent again (per-item delivery log), the 400 item is a dead
 * letter. Then, with the sink called directly: older events replayed never
 * overwrite (409 counted as delivered), non-object data is rejected without
 * being sent, 401 and an unreachable endpoint fail the whole call. */
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>

#include "core/message.h"
#include "core/util.h"
#include "sink/sink.h"
#include "sink_test.h"

#define MAX_EVS 64
#define MAX_DOCS 64
#define INDEX "t-cars"

enum { OUT_FAILED = 0, OUT_OK = 1, OUT_WHOLE = 3 };

typedef struct ev_s {
    char id[OUTBOX_UUID_STRLEN + 1];
    char key[32], type[32], payload[256];
    long long seq;
    int script[4], nscript; /* per-item status per appearance (0 = normal) */
    int appearances;
    int tried; /* appearances outside a whole-request failure: index into script */
    int outcome[16];
} ev_t;

typedef struct doc_s {
    char id[64];
    long long version;
    int exists;
    char source[256];
} doc_t;

static ev_t evs[MAX_EVS];
static int nevs;
static doc_t docs[MAX_DOCS];
static int ndocs;
static int whole_fail, auth_fail, requests, items_total, violations;
static char first_violation[512];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static void violation(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void violation(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (!violations++)
        snprintf(first_violation, sizeof(first_violation), "%s", buf);
    fprintf(stderr, "stand-in: VIOLATION: %s\n", buf);
}

static ev_t *by_seq(long long seq)
{
    for (int i = 0; i < nevs; i++)
        if (evs[i].seq == seq)
            return &evs[i];
    return NULL;
}

static doc_t *doc_get(const char *id, int create)
{
    for (int i = 0; i < ndocs; i++)
        if (!strcmp(docs[i].id, id))
            return &docs[i];
    if (!create || ndocs == MAX_DOCS)
        return NULL;
    doc_t *d = &docs[ndocs++];
    memset(d, 0, sizeof(*d));
    snprintf(d->id, sizeof(d->id), "%s", id);
    return d;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

static json_t *item_error(const char *action, const char *index, const char *id, int status,
                          const char *type, const char *reason)
{
    return json_pack("{s:{s:s, s:s, s:i, s:{s:s, s:s, s:s, s:s, s:s}}}", action, "_index", index,
                     "_id", id, "status", status, "error", "type", type, "reason", reason,
                     "index_uuid", "aBcDeFgHiJkLmNoPqRsTuV", "shard", "0", "index", index);
}

static json_t *item_ok(const char *action, const char *index, const char *id, long long version,
                       int status, const char *result, int seq_no)
{
    return json_pack("{s:{s:s, s:s, s:I, s:s, s:{s:i, s:i, s:i}, s:i, s:i, s:i}}", action, "_index",
                     index, "_id", id, "_version", (json_int_t)version, "result", result, "_shards",
                     "total", 2, "successful", 1, "failed", 0, "_seq_no", seq_no, "_primary_term",
                     1, "status", status);
}

/* Applies one action with external versioning; returns the response item. */
static json_t *apply(const char *action, const char *index, const char *id, long long version,
                     json_t *src, int *ok)
{
    static int seq_no;
    doc_t *d = doc_get(id, 1);
    CHECK(d, "stand-in document table full");
    char reason[256];
    if (d->version >= version) {
        snprintf(reason, sizeof(reason),
                 "[%s]: version conflict, current version [%lld] is higher or equal to the one "
                 "provided [%lld]",
                 id, d->version, version);
        *ok = 1; /* the sink must count this as delivered */
        return item_error(action, index, id, 409, "version_conflict_engine_exception", reason);
    }
    *ok = 1;
    if (!strcmp(action, "delete")) {
        int existed = d->exists;
        d->version = version; /* tombstone keeps the version */
        d->exists = 0;
        d->source[0] = '\0';
        return item_ok(action, index, id, version, existed ? 200 : 404,
                       existed ? "deleted" : "not_found", seq_no++);
    }
    int existed = d->exists;
    char *s = json_dumps(src, JSON_COMPACT | JSON_SORT_KEYS);
    snprintf(d->source, sizeof(d->source), "%s", s ? s : "");
    free(s);
    d->version = version;
    d->exists = 1;
    return item_ok(action, index, id, version, existed ? 200 : 201, existed ? "updated" : "created",
                   seq_no++);
}

static void handle_bulk(st_req_t *q)
{
    const char *ct = st_header(q, "Content-Type");
    if (!ct || strcmp(ct, "application/x-ndjson"))
        violation("Content-Type %s (want application/x-ndjson)", ct ? ct : "(none)");
    if (!q->body_len || q->body[q->body_len - 1] != '\n')
        violation("bulk body must end with a newline");
    requests++;
    if (auth_fail) {
        auth_fail--;
        q->status = 401;
        st_buf_add(&q->resp, "{\"error\":\"unauthorized\"}", 24);
        return;
    }
    int whole = whole_fail > 0;
    whole_fail -= whole;
    json_t *items = json_array();
    int errors = 0;
    char *body = strndup(q->body, q->body_len);
    char *line = body;
    /* Split on '\n' by hand: strtok would hide empty lines. */
    while (line && *line) {
        char *nl = strchr(line, '\n');
        if (!nl) {
            violation("last line has no newline");
            break;
        }
        *nl = '\0';
        char *next = nl + 1;
        json_t *a = json_loads(line, 0, NULL);
        const char *action = NULL;
        json_t *meta = NULL;
        if (json_is_object(a) && json_object_size(a) == 1) {
            void *it = json_object_iter(a);
            action = json_object_iter_key(it);
            meta = json_object_iter_value(it);
        }
        if (!action || (strcmp(action, "index") && strcmp(action, "delete"))) {
            violation("not an index/delete action line: %.200s", line);
            json_decref(a);
            break;
        }
        const char *index = json_string_value(json_object_get(meta, "_index"));
        const char *id = json_string_value(json_object_get(meta, "_id"));
        json_t *ver = json_object_get(meta, "version");
        const char *vt = json_string_value(json_object_get(meta, "version_type"));
        if (!index || !id || !json_is_integer(ver) || json_integer_value(ver) < 1 || !vt ||
            strcmp(vt, "external") || json_object_size(meta) != 4) {
            violation(
                "action meta must be exactly {_index,_id,version,version_type:external}: %.200s",
                line);
            json_decref(a);
            break;
        }
        long long version = (long long)json_integer_value(ver);
        json_t *src = NULL;
        if (!strcmp(action, "index")) {
            char *nl2 = strchr(next, '\n');
            if (!*next || !nl2) {
                violation("index action without a source line");
                json_decref(a);
                break;
            }
            *nl2 = '\0';
            src = json_loads(next, 0, NULL);
            if (!json_is_object(src))
                violation("source line is not a JSON object: %.200s", next);
            next = nl2 + 1;
        }
        ev_t *ev = by_seq(version);
        if (!ev) {
            violation("version %lld is no event's outbox seq", version);
        } else {
            if (strcmp(id, ev->key) || strcmp(index, INDEX))
                violation("seq %lld: _index/_id %s/%s, want %s/%s", version, index, id, INDEX,
                          ev->key);
            if ((strcmp(action, "delete") == 0) != ends_with(ev->type, "Deleted"))
                violation("seq %lld: type %s sent as %s", version, ev->type, action);
            if (src) {
                json_t *want = json_loads(ev->payload, 0, NULL);
                if (!json_equal(src, want))
                    violation("seq %lld: source differs from the event data", version);
                json_decref(want);
            }
        }
        items_total++;
        int n = ev ? ev->appearances++ : 0;
        int t = ev && !whole ? ev->tried++ : 0;
        int scripted = ev && !whole && t < ev->nscript ? ev->script[t] : 0;
        int outcome;
        json_t *item;
        if (whole) {
            item = NULL;
            outcome = OUT_WHOLE;
        } else if (scripted == 429) {
            item = item_error(action, index, id, 429, "es_rejected_execution_exception",
                              "rejected execution of coordinating operation");
            outcome = OUT_FAILED;
        } else if (scripted == 500) {
            item = item_error(action, index, id, 500, "exception", "shard failure (scripted)");
            outcome = OUT_FAILED;
        } else if (scripted == 400) {
            item = item_error(action, index, id, 400, "mapper_parsing_exception",
                              "failed to parse field [price] of type [long] (scripted)");
            outcome = OUT_FAILED;
        } else {
            int ok = 0;
            item = apply(action, index, id, version, src, &ok);
            outcome = OUT_OK;
        }
        if (ev && n < 16)
            ev->outcome[n] = outcome;
        if (item) {
            void *it = json_object_iter(item);
            int st = (int)json_integer_value(json_object_get(json_object_iter_value(it), "status"));
            errors |= st >= 300;
            json_array_append_new(items, item);
        }
        json_decref(src);
        json_decref(a);
        line = next;
    }
    free(body);
    if (whole) {
        q->status = 503;
        st_buf_add(
            &q->resp,
            "{\"error\":{\"type\":\"cluster_block_exception\",\"reason\":\"blocked by: "
            "[SERVICE_UNAVAILABLE]\"},"
            "\"status\":503}",
            strlen("{\"error\":{\"type\":\"cluster_block_exception\",\"reason\":\"blocked by: "
                   "[SERVICE_UNAVAILABLE]\"},\"status\":503}"));
        json_decref(items);
        return;
    }
    json_t *resp = json_pack("{s:i, s:b, s:o}", "took", 3, "errors", errors, "items", items);
    char *s = json_dumps(resp, JSON_COMPACT);
    st_buf_add(&q->resp, s, strlen(s));
    free(s);
    json_decref(resp);
}

static void handle(st_req_t *q, void *arg)
{
    pthread_mutex_lock(&mu);
    if (!strcmp(q->method, "GET") && !strcmp(q->url, "/")) {
        const char *info = "{\"name\":\"stand-in\",\"cluster_name\":\"outbox-test\",\"version\":"
                           "{\"distribution\":\"opensearch\",\"number\":\"2.11.0\"},"
                           "\"tagline\":\"The OpenSearch Project: https://opensearch.org/\"}";
        st_buf_add(&q->resp, info, strlen(info));
    } else if (!strcmp(q->method, "POST") && !strcmp(q->url, "/_bulk")) {
        handle_bulk(q);
    } else {
        violation("unexpected %s %s", q->method, q->url);
        q->status = 404;
    }
    pthread_mutex_unlock(&mu);
}

static ev_t *add(PGconn *c, const char *type, const char *key, int rev, int nscript, ...)
{
    CHECK(nevs < MAX_EVS, "too many events");
    ev_t *ev = &evs[nevs++];
    memset(ev, 0, sizeof(*ev));
    snprintf(ev->type, sizeof(ev->type), "%s", type);
    snprintf(ev->key, sizeof(ev->key), "%s", key);
    snprintf(ev->payload, sizeof(ev->payload),
             "{\n  \"id\": \"%s\",\n  \"model\": \"M%d\",\n  \"rev\": %d\n}", key, rev, rev);
    va_list ap;
    va_start(ap, nscript);
    for (int i = 0; i < nscript; i++)
        ev->script[i] = va_arg(ap, int);
    va_end(ap);
    ev->nscript = nscript;
    ev->seq = st_enqueue(c, "Cars", type, key, ev->payload, NULL, ev->id);
    return ev;
}

static void msg_of(const ev_t *ev, outbox_msg_t *m)
{
    memset(m, 0, sizeof(*m));
    m->seq = ev->seq;
    memcpy(m->id, ev->id, sizeof(m->id));
    m->topic = "Cars";
    m->type = ev->type;
    m->key = ev->key;
    m->payload = ev->payload;
    m->time = "2026-11-22T00:00:00Z";
    char err[256];
    m->envelope = outbox__envelope_build(m, &m->envelope_len, err, sizeof(err));
    CHECK(m->envelope, "envelope: %s", err);
}

static const char *doc_source(const char *id)
{
    doc_t *d = doc_get(id, 0);
    return d && d->exists ? d->source : NULL;
}

int main(void)
{
    PGconn *c;
    const char *ci = st_setup_db("sink_opensearch", &c);
    st_server_t srv = {0};
    st_server_start(&srv, handle, NULL);
    char url[128], err[512];
    snprintf(url, sizeof(url), "opensearch+http://127.0.0.1:%d/t-", srv.port);

    /* Interleaved history of six cars. Scripts: per-item 429 and 500 once,
     * 400 always (mapping error → dead letter); the first request 503. */
    ev_t *e429 = NULL, *e500 = NULL, *ebad = NULL;
    add(c, "CarCreated", "car-1", 0, 0);
    add(c, "CarCreated", "car-2", 0, 0);
    add(c, "CarCreated", "car-3", 0, 0);
    add(c, "CarCreated", "car-4", 0, 0);
    add(c, "CarCreated", "car-5", 0, 0);
    add(c, "CarCreated", "car-bad", 0, 0);
    add(c, "CarUpdated", "car-1", 1, 0);
    e429 = add(c, "CarUpdated", "car-2", 1, 1, 429);
    add(c, "CarDeleted", "car-3", 1, 0);
    e500 = add(c, "CarUpdated", "car-4", 1, 1, 500);
    add(c, "CarUpdated", "car-5", 1, 0);
    add(c, "CarUpdated", "car-2", 2, 0); /* same key after the 429 */
    add(c, "CarUpdated", "car-1", 2, 0);
    add(c, "CarDeleted", "car-4", 2, 0);
    add(c, "CarUpdated", "car-5", 2, 0);
    add(c, "CarCreated", "car-4", 3, 0); /* re-created after its delete */
    add(c, "CarUpdated", "car-5", 3, 0);
    ebad = add(c, "CarUpdated", "car-bad", 1, 1, 400);
    pthread_mutex_lock(&mu);
    whole_fail = 1;
    pthread_mutex_unlock(&mu);

    outbox_conf_t *conf = st_relay_conf(ci, url);
    st_conf_set(conf, "workers",
                "1"); /* one worker: whole batches, so per-item retries are visible */
    long long t0 = tu_now_ms();
    outbox_relay_t *r = st_relay_start(conf);
    st_wait_drained(c, 40000);
    long long took = tu_now_ms() - t0;
    outbox_relay_destroy(r);

    pthread_mutex_lock(&mu);
    CHECK(violations == 0, "%d protocol violations; first: %s", violations, first_violation);
    /* Only failed (or whole-request-failed) items were sent again;
     * every event's last appearance succeeded (the dead letter excepted). */
    int resent = 0;
    for (int i = 0; i < nevs; i++) {
        ev_t *ev = &evs[i];
        CHECK(ev->appearances >= 1, "event seq %lld never sent", ev->seq);
        for (int a = 0; a + 1 < ev->appearances && a < 16; a++)
            CHECK(ev->outcome[a] != OUT_OK,
                  "seq %lld (%s %s) succeeded at delivery %d but was sent again", ev->seq, ev->type,
                  ev->key, a + 1);
        resent += ev->appearances - 1;
        if (ev != ebad)
            CHECK(ev->outcome[ev->appearances - 1] == OUT_OK,
                  "seq %lld: last delivery did not succeed", ev->seq);
    }
    CHECK(ebad->appearances == 1, "the 400 item was sent %d times (want once: dead letter at once)",
          ebad->appearances);
    CHECK(e429->appearances >= 2 && e500->appearances >= 2, "per-item 429/500 not retried");
    /* Final documents: the newest event of each key. */
    const char *keys[] = {"car-1", "car-2", "car-3", "car-4", "car-5", "car-bad"};
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
        ev_t *newest = NULL;
        for (int i = 0; i < nevs; i++)
            if (!strcmp(evs[i].key, keys[k]) && &evs[i] != ebad)
                newest = &evs[i];
        const char *src = doc_source(keys[k]);
        doc_t *d = doc_get(keys[k], 0);
        CHECK(d && d->version == newest->seq, "%s: stored version %lld, want %lld", keys[k],
              d ? d->version : -1, newest->seq);
        if (ends_with(newest->type, "Deleted")) {
            CHECK(!src, "%s: deleted last, but the document exists: %s", keys[k], src);
        } else {
            json_t *a = json_loads(src ? src : "null", JSON_DECODE_ANY, NULL),
                   *b = json_loads(newest->payload, 0, NULL);
            CHECK(src && json_equal(a, b), "%s: document %s, want %s", keys[k],
                  src ? src : "(none)", newest->payload);
            json_decref(a);
            json_decref(b);
        }
    }
    int nreq = requests, nitems = items_total;
    pthread_mutex_unlock(&mu);
    PGresult *dl = tu_exec(c, "SELECT id, reason, last_error FROM outbox_dead_letter");
    CHECK(PQntuples(dl) == 1 && !strcmp(PQgetvalue(dl, 0, 0), ebad->id) &&
              !strcmp(PQgetvalue(dl, 0, 1), "rejected"),
          "want exactly the 400 event dead-lettered as rejected (%d rows)", PQntuples(dl));
    CHECK(strstr(PQgetvalue(dl, 0, 2), "mapper_parsing_exception"), "last_error: %s",
          PQgetvalue(dl, 0, 2));
    PQclear(dl);
    printf("relay: %d events in %d bulk requests (%d items, %d re-sent) drained in %lld ms\n", nevs,
           nreq, nitems, resent, took);

    /* ---- the sink called directly ---- */
    outbox_conf_t *sconf = outbox_conf_new();
    st_conf_set(sconf, "publish_timeout", "2s");
    outbox_sink_t *s = outbox__sink_new(url, sconf, "test", err, sizeof(err));
    CHECK(s, "sink_new: %s", err);
    CHECK(s->ops->ping(s, err, sizeof(err)) == OUTBOX_OK, "ping: %s", err);

    /* Older events replayed never overwrite: car-1's first version, car-3's
     * create (after its delete), car-5's newest again. */
    ev_t *old[3] = {NULL, NULL, NULL};
    for (int i = 0; i < nevs; i++) {
        if (!old[0] && !strcmp(evs[i].key, "car-1"))
            old[0] = &evs[i];
        if (!old[1] && !strcmp(evs[i].key, "car-3"))
            old[1] = &evs[i];
        if (!strcmp(evs[i].key, "car-5"))
            old[2] = &evs[i];
    }
    pthread_mutex_lock(&mu);
    char before1[256];
    snprintf(before1, sizeof(before1), "%s", doc_source("car-1"));
    long long v5 = doc_get("car-5", 0)->version;
    pthread_mutex_unlock(&mu);
    outbox_msg_t m[3];
    outbox_pub_result_t res[3];
    memset(res, 0, sizeof(res));
    for (int i = 0; i < 3; i++)
        msg_of(old[i], &m[i]);
    CHECK(s->ops->publish(s, m, 3, res) == OUTBOX_OK, "replay publish failed");
    for (int i = 0; i < 3; i++) {
        CHECK(res[i].err == OUTBOX_OK, "replay of seq %lld: %d %s (a 409 must count as delivered)",
              (long long)m[i].seq, res[i].err, res[i].errstr);
        free(m[i].envelope);
    }
    pthread_mutex_lock(&mu);
    CHECK(!strcmp(doc_source("car-1"), before1), "an older event overwrote car-1: %s",
          doc_source("car-1"));
    CHECK(!doc_source("car-3"), "an older create resurrected deleted car-3");
    CHECK(doc_get("car-5", 0)->version == v5, "car-5 version changed on replay");
    CHECK(violations == 0, "%d protocol violations; first: %s", violations, first_violation);
    pthread_mutex_unlock(&mu);
    printf("replay: 3 older/equal events -> 409, acknowledged, documents unchanged\n");

    /* Calls of one event per key, as the engine makes them. Non-object
     * data is rejected without being sent; the other events go through. */
    {
        pthread_mutex_lock(&mu);
        int req0 = requests, items0 = items_total;
        ev_t *x = &evs[nevs++], *y = &evs[nevs++], *z = &evs[nevs++];
        memset(x, 0, 3 * sizeof(*x));
        *x = (ev_t){.seq = 100001, .key = "car-9", .type = "CarCreated", .payload = "[1,2,3]"};
        *y = (ev_t){
            .seq = 100002, .key = "car-10", .type = "CarCreated", .payload = "{\"id\":\"car-10\"}"};
        *z = (ev_t){
            .seq = 100003, .key = "car-8", .type = "CarCreated", .payload = "{\"id\":\"car-8\"}"};
        for (int i = 0; i < 3; i++)
            outbox_uuid_v7(evs[nevs - 3 + i].id);
        pthread_mutex_unlock(&mu);
        msg_of(x, &m[0]);
        msg_of(y, &m[1]);
        msg_of(z, &m[2]);
        memset(res, 0, sizeof(res));
        CHECK(s->ops->publish(s, m, 3, res) == OUTBOX_OK, "publish");
        CHECK(res[0].err == OUTBOX_ERR_REJECTED && !res[0].not_sent, "array data: %d %s",
              res[0].err, res[0].errstr);
        CHECK(res[1].err == OUTBOX_OK, "event after the rejected one: %d %s", res[1].err,
              res[1].errstr);
        CHECK(res[2].err == OUTBOX_OK, "other key: %d %s", res[2].err, res[2].errstr);
        pthread_mutex_lock(&mu);
        CHECK(requests == req0 + 1 && items_total == items0 + 2,
              "only car-10 and car-8 may be sent (%d requests, %d items)", requests - req0,
              items_total - items0);
        CHECK(violations == 0, "%d protocol violations; first: %s", violations, first_violation);
        pthread_mutex_unlock(&mu);
        for (int i = 0; i < 3; i++)
            free(m[i].envelope);
        printf("local reject: non-object data rejected unsent, the other events delivered\n");
    }

    /* A per-item 429: only that item fails (retried), the other is
     * delivered; the next event of its key comes in a later call. */
    {
        pthread_mutex_lock(&mu);
        ev_t *x = &evs[nevs++], *y = &evs[nevs++], *z = &evs[nevs++];
        *x = (ev_t){.seq = 100011,
                    .key = "car-7",
                    .type = "CarCreated",
                    .payload = "{\"rev\":0}",
                    .script = {429},
                    .nscript = 1};
        *y = (ev_t){.seq = 100012, .key = "car-7", .type = "CarUpdated", .payload = "{\"rev\":1}"};
        *z = (ev_t){.seq = 100013, .key = "car-6", .type = "CarCreated", .payload = "{\"rev\":0}"};
        for (int i = 0; i < 3; i++)
            outbox_uuid_v7(evs[nevs - 3 + i].id);
        pthread_mutex_unlock(&mu);
        msg_of(x, &m[0]);
        msg_of(z, &m[1]);
        msg_of(y, &m[2]);
        memset(res, 0, sizeof(res));
        CHECK(s->ops->publish(s, m, 2, res) == OUTBOX_OK, "publish");
        CHECK(res[0].err == OUTBOX_ERR_BROKER && strstr(res[0].errstr, "429"), "429 item: %d %s",
              res[0].err, res[0].errstr);
        CHECK(res[1].err == OUTBOX_OK, "other key: %d %s", res[1].err, res[1].errstr);
        memset(res, 0, sizeof(res));
        CHECK(s->ops->publish(s, m, 1, res) == OUTBOX_OK && res[0].err == OUTBOX_OK, "retry: %d %s",
              res[0].err, res[0].errstr);
        CHECK(s->ops->publish(s, &m[2], 1, res) == OUTBOX_OK && res[0].err == OUTBOX_OK,
              "next of car-7: %d %s", res[0].err, res[0].errstr);
        pthread_mutex_lock(&mu);
        CHECK(!strcmp(doc_source("car-7"), "{\"rev\":1}") && doc_get("car-7", 0)->version == 100012,
              "car-7: %s", doc_source("car-7"));
        CHECK(violations == 0, "%d protocol violations; first: %s", violations, first_violation);
        pthread_mutex_unlock(&mu);
        for (int i = 0; i < 3; i++)
            free(m[i].envelope);
        printf("per-item 429: only that item retried; newest document kept\n");
    }

    /* A deadline already past: no request, every event not sent. */
    {
        pthread_mutex_lock(&mu);
        int req0 = requests;
        pthread_mutex_unlock(&mu);
        msg_of(&evs[0], &m[0]);
        memset(res, 0, sizeof(res));
        s->deadline_ms = outbox__now_ms() - 1;
        CHECK(s->ops->publish(s, m, 1, res) == OUTBOX_OK, "publish past deadline");
        CHECK(res[0].err == OUTBOX_ERR_TIMEOUT && res[0].not_sent, "past deadline: %d %s",
              res[0].err, res[0].errstr);
        s->deadline_ms = 0;
        pthread_mutex_lock(&mu);
        CHECK(requests == req0, "a request was sent past the deadline");
        pthread_mutex_unlock(&mu);
        free(m[0].envelope);
    }

    /* A key that is not UTF-8 can't be an _id: rejected alone, unsent. */
    {
        pthread_mutex_lock(&mu);
        int req0 = requests;
        ev_t *x = &evs[nevs++];
        *x = (ev_t){
            .seq = 100021, .key = "bad-\xff\xfe", .type = "CarCreated", .payload = "{\"rev\":0}"};
        outbox_uuid_v7(x->id);
        pthread_mutex_unlock(&mu);
        outbox_msg_t bm = {.seq = x->seq,
                           .topic = "Cars",
                           .type = x->type,
                           .key = x->key,
                           .payload = x->payload,
                           .envelope = (char *)"{}",
                           .envelope_len = 2};
        memcpy(bm.id, x->id, sizeof(bm.id));
        memset(res, 0, sizeof(res));
        CHECK(s->ops->publish(s, &bm, 1, res) == OUTBOX_OK, "publish");
        CHECK(res[0].err == OUTBOX_ERR_REJECTED, "non-UTF-8 key: %d %s", res[0].err, res[0].errstr);
        pthread_mutex_lock(&mu);
        CHECK(requests == req0, "a request was sent for a non-UTF-8 key");
        pthread_mutex_unlock(&mu);
    }

    /* 401 fails the whole call (nothing charged). */
    pthread_mutex_lock(&mu);
    auth_fail = 1;
    pthread_mutex_unlock(&mu);
    msg_of(&evs[0], &m[0]);
    memset(res, 0, sizeof(res));
    CHECK(s->ops->publish(s, m, 1, res) == OUTBOX_ERR_BROKER, "401 must fail the call");
    CHECK(strstr(res[0].errstr, "401"), "errstr: %s", res[0].errstr);
    free(m[0].envelope);
    outbox__sink_destroy(s);

    /* Unreachable → OUTBOX_ERR_BROKER for the call; ping fails. */
    snprintf(url, sizeof(url), "opensearch+http://127.0.0.1:%d/t-", tu_free_port());
    s = outbox__sink_new(url, sconf, "test", err, sizeof(err));
    CHECK(s, "sink_new: %s", err);
    msg_of(&evs[0], &m[0]);
    CHECK(s->ops->publish(s, m, 1, res) == OUTBOX_ERR_BROKER, "unreachable must fail the call");
    CHECK(s->ops->ping(s, err, sizeof(err)) == OUTBOX_ERR_BROKER, "ping must fail");
    free(m[0].envelope);
    outbox__sink_destroy(s);
    /* URL checks at open. */
    CHECK(!outbox__sink_new("opensearch+http://127.0.0.1:9200/a/b", sconf, "t", err, sizeof(err)),
          "a nested path was accepted as index prefix");
    outbox_conf_destroy(sconf);

    st_server_stop(&srv);
    PQfinish(c);
    printf("PASS sink_opensearch\n");
    return 0;
}
