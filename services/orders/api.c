/* The orders API: POST /orders, GET /orders/{id}, GET /inventory.
 *
 * POST /orders writes the order, its items, its OrderCreated event
 * (outbox_enqueue) and, with an Idempotency-Key, the key's stored response
 * in ONE transaction: all or nothing. See docs/ORDERS.md. */
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "orders.h"

#define MAX_ITEMS 100
#define MAX_QUANTITY 10000
#define MAX_AMOUNT 100000000000LL /* 1e11 minor units */
#define EXAMPLE                                                                                    \
    "{\"user_id\":\"user-456\",\"items\":[{\"sku\":\"SKU-1\",\"quantity\":2}],\"amount\":1000}"

int orders_traceparent_valid(const char *t)
{
    static const int seg[4] = {2, 32, 16, 2};
    if (!t || strlen(t) != 55 || !strncmp(t, "ff", 2))
        return 0;
    const char *p = t;
    for (int s = 0; s < 4; s++) {
        int nonzero = 0;
        for (int i = 0; i < seg[s]; i++, p++) {
            if (!isxdigit((unsigned char)*p) || isupper((unsigned char)*p))
                return 0;
            nonzero |= *p != '0';
        }
        if ((s == 1 || s == 2) && !nonzero)
            return 0;
        if (s < 3 && *p++ != '-')
            return 0;
    }
    return 1;
}

static void db_problem(const outbox_http_req_t *req, outbox_http_resp_t *resp, PGconn *c,
                       const char *what, const char *err)
{
    outbox__log(OUTBOX_LOG_ERROR, "orders", "db_error", err, "what", what, "path", req->path, NULL);
    int down = !c || PQstatus(c) != CONNECTION_OK;
    outbox__http_problem(req, resp, down ? 503 : 500, down ? "database-unavailable" : "internal",
                         NULL, "%s failed: the database %s; nothing was written, retry later", what,
                         down ? "is unreachable" : "returned an error (see the server log)");
}

/*
 * The connection broke while COMMIT was on its way or before its answer
 * came: the order may or may not exist, so the client must not hear
 * "nothing was written". The idempotency record commits in the same
 * transaction as the order, so a retry with the same key is the way to
 * learn the truth: it replays the stored 201 if the commit landed and
 * creates the order (once) if it did not. Without a key, the order id
 * tells: GET /orders/{id}.
 */
static void commit_unknown(const outbox_http_req_t *req, outbox_http_resp_t *resp, const char *key,
                           const char *order_id, const char *event_id, const char *err)
{
    outbox__log(OUTBOX_LOG_ERROR, "orders", "commit_outcome_unknown",
                "connection lost during COMMIT: the order may or may not have been created",
                "order_id", order_id, "event_id", event_id, "idempotency_key",
                key[0] ? key : "(none)", "error", err, NULL);
    if (key[0])
        outbox__http_problem(
            req, resp, 503, "commit-outcome-unknown", "Commit Outcome Unknown",
            "the connection to the database broke while order %s was being committed, "
            "so it may or may not have been created; retry with the same "
            "Idempotency-Key \"%s\" and the same body: you get the order's stored "
            "answer if it was created, or it is created once if it was not",
            order_id, key);
    else
        outbox__http_problem(
            req, resp, 503, "commit-outcome-unknown", "Commit Outcome Unknown",
            "the connection to the database broke while order %s was being committed, "
            "so it may or may not have been created; GET /orders/%s tells which (404: "
            "not created). This request had no Idempotency-Key: a blind retry may "
            "create a second order; send one to make retries safe",
            order_id, order_id);
    outbox__http_problem_member(resp, "order_id", order_id);
    outbox__http_add_header(resp, "Retry-After", "1");
}

/* 1 for application/json or application/<something>+json (parameters allowed). */
static int json_content_type(const char *ct)
{
    if (!ct)
        return 0;
    while (*ct == ' ')
        ct++;
    size_t n = strcspn(ct, "; ");
    if (n == 16 && !strncasecmp(ct, "application/json", 16))
        return 1;
    return n > 17 && !strncasecmp(ct, "application/", 12) && !strncasecmp(ct + n - 5, "+json", 5);
}

/*
 * The request's order as a JSON object (a new reference), or NULL after a
 * 4xx. A POST with no body (no body at all, or Content-Length: 0: both
 * arrive as zero bytes) is seed 001's quick-start order,
 *   curl -X POST http://localhost:8080/orders -H "Idempotency-Key: order-123"
 * and means the demo order EXAMPLE (user-456, amount 1000: the user and the
 * amount the seed's email log shows). A body that is present is checked as
 * before: JSON Content-Type (415), valid JSON (400), an object (400).
 */
static json_t *order_doc(const outbox_http_req_t *req, outbox_http_resp_t *resp)
{
    if (req->body_len == 0)
        return json_loads(EXAMPLE, 0, NULL);
    const char *ct = outbox__http_header(req, "Content-Type");
    if (!json_content_type(ct)) {
        outbox__http_problem(req, resp, 415, "unsupported-media-type", NULL,
                             "Content-Type must be application/json, got \"%.60s\"",
                             ct ? ct : "(none)");
        return NULL;
    }
    json_error_t jerr;
    json_t *doc = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        outbox__http_problem(req, resp, 400, "malformed-json", NULL,
                             "request body is not valid JSON: %s (line %d, column %d)", jerr.text,
                             jerr.line, jerr.column);
        return NULL;
    }
    if (!json_is_object(doc)) {
        json_decref(doc);
        outbox__http_problem(req, resp, 400, "malformed-json", NULL,
                             "request body must be a JSON object");
        return NULL;
    }
    return doc;
}

int orders_validate(const json_t *doc, const char **user, long long *amount, json_t **items,
                    char *why, size_t why_size)
{
    json_t *u = json_object_get(doc, "user_id");
    if (!u) {
        snprintf(why, why_size, "user_id is required (a non-empty string), e.g. " EXAMPLE);
        return -1;
    }
    if (!json_is_string(u) || json_string_length(u) == 0 || json_string_length(u) > 128) {
        snprintf(why, why_size, "user_id must be a string of 1 to 128 characters");
        return -1;
    }
    *user = json_string_value(u);
    json_t *a = json_object_get(doc, "amount");
    if (!a) {
        snprintf(why, why_size,
                 "amount is required: an integer number of minor units (cents), e.g. 1000");
        return -1;
    }
    if (!json_is_integer(a) || json_integer_value(a) <= 0 || json_integer_value(a) > MAX_AMOUNT) {
        snprintf(why, why_size,
                 "amount must be a positive integer number of minor units (1..%lld), e.g. 1000",
                 MAX_AMOUNT);
        return -1;
    }
    *amount = (long long)json_integer_value(a);
    json_t *in = json_object_get(doc, "items");
    if (!in) {
        snprintf(
            why, why_size,
            "items is required: a non-empty array of {\"sku\": string, \"quantity\": integer}");
        return -1;
    }
    if (!json_is_array(in) || json_array_size(in) == 0 || json_array_size(in) > MAX_ITEMS) {
        snprintf(why, why_size, "items must be an array of 1 to %d {\"sku\", \"quantity\"} objects",
                 MAX_ITEMS);
        return -1;
    }
    json_t *out = json_array();
    size_t i;
    json_t *it;
    json_array_foreach(in, i, it)
    {
        json_t *sku = json_object_get(it, "sku"), *q = json_object_get(it, "quantity");
        const char *bad = NULL;
        if (!json_is_object(it))
            bad = "must be an object {\"sku\": string, \"quantity\": integer}";
        else if (!json_is_string(sku) || json_string_length(sku) == 0 ||
                 json_string_length(sku) > 64)
            bad = "sku must be a string of 1 to 64 characters";
        else if (!json_is_integer(q))
            bad = "quantity must be an integer";
        else if (json_integer_value(q) <= 0 || json_integer_value(q) > MAX_QUANTITY)
            bad = "quantity must be an integer from 1 to 10000";
        if (bad) {
            json_decref(out);
            snprintf(why, why_size, "items[%zu]: %s", i, bad);
            return -1;
        }
        size_t k;
        json_t *prev;
        json_array_foreach(out, k, prev)
        {
            if (!strcmp(json_string_value(json_object_get(prev, "sku")), json_string_value(sku))) {
                snprintf(why, why_size,
                         "items[%zu]: sku \"%s\" already appears in items[%zu]; list each sku once",
                         i, json_string_value(sku), k);
                json_decref(out);
                return -1;
            }
        }
        json_array_append_new(out, json_pack("{s:O,s:O}", "sku", sku, "quantity", q));
    }
    *items = out;
    return 0;
}

/*
 * The order's own rows in one prepared statement: the sku check, the order
 * and its items (one round trip, planned once per session; see
 * docs/ORDERS.md "Performance"). $1 order id, $2 user, $3 amount, $4 the
 * normalised items. When a sku is unknown nothing is inserted and the row
 * says which (the first in sku order) and how many.
 */
#define CREATE_STMT "orders_create_v1"
static const char create_sql[] =
    "WITH req AS (SELECT sku, quantity FROM json_to_recordset($4::json) AS i(sku text, quantity "
    "int)),"
    " missing AS (SELECT r.sku FROM req r LEFT JOIN inventory v ON v.sku = r.sku"
    "             WHERE v.sku IS NULL),"
    " o AS (INSERT INTO orders (id, user_id, amount) SELECT $1::uuid, $2::text, $3::bigint"
    "       WHERE NOT EXISTS (SELECT 1 FROM missing) RETURNING created_at),"
    " it AS (INSERT INTO order_items (order_id, sku, quantity)"
    "        SELECT $1::uuid, r.sku, r.quantity FROM req r CROSS JOIN o)"
    " SELECT (SELECT to_char(created_at AT TIME ZONE 'UTC', "
    "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM o),"
    " (SELECT min(sku) FROM missing), (SELECT count(*) FROM missing)";

/* Sessions of the pool that have CREATE_STMT: the pool hands out plain
 * libpq connections, so they are remembered here by connection and backend
 * pid (a connection the pool reset is a new session). A session pushed out
 * of the table is prepared again, which it survives (42P05). */
#define PREPARED_MAX 1024
static struct {
    pthread_mutex_t lock;
    struct {
        const PGconn *conn;
        int pid;
    } s[PREPARED_MAX];
    int n, next;
} g_prepared = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* Slot of conn in g_prepared or -1; the caller holds the lock. */
static int prepared_slot(const PGconn *c)
{
    for (int i = 0; i < g_prepared.n; i++)
        if (g_prepared.s[i].conn == c)
            return i;
    return -1;
}

/* Marks conn's session as prepared (pid > 0) or not (pid 0). */
static void prepared_set(const PGconn *c, int pid)
{
    pthread_mutex_lock(&g_prepared.lock);
    int i = prepared_slot(c);
    if (i < 0 && g_prepared.n < PREPARED_MAX)
        i = g_prepared.n++;
    else if (i < 0)
        i = g_prepared.next++ % PREPARED_MAX;
    g_prepared.s[i].conn = c;
    g_prepared.s[i].pid = pid;
    pthread_mutex_unlock(&g_prepared.lock);
}

void orders_forget_session(const PGconn *c)
{
    prepared_set(c, 0);
}

/* Prepares CREATE_STMT and the batches' statements on c's session unless
 * it has them; outside a transaction. Returns 0, or -1 with errbuf set. */
int orders_prepare_session(PGconn *c, char *errbuf, size_t errsize)
{
    int pid = PQbackendPID(c);
    pthread_mutex_lock(&g_prepared.lock);
    int i = prepared_slot(c);
    int have = i >= 0 && g_prepared.s[i].pid == pid;
    pthread_mutex_unlock(&g_prepared.lock);
    if (have)
        return 0;
    /* No sequential scan where an index serves: the statements are planned
     * once for the session, maybe while the tables are empty (a fresh
     * database, or the benchmark's TRUNCATE), and a scan that looked free
     * then reads every row later (a batch's key lookup: 5 ms after 30,000
     * orders instead of 0.04). The relay's sessions do the same. */
    PGresult *r = PQexec(c, "SET enable_seqscan = off");
    PQclear(r);
    r = PQprepare(c, CREATE_STMT, create_sql, 0, NULL);
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || (state && !strcmp(state, "42P05"));
    if (!ok) {
        snprintf(errbuf, errsize, "preparing the order statement: %s", PQresultErrorMessage(r));
        size_t l = strlen(errbuf);
        while (l && errbuf[l - 1] == '\n')
            errbuf[--l] = '\0';
    }
    PQclear(r);
    if (ok && orders_batch_prepare(c, errbuf, errsize))
        ok = 0;
    if (ok)
        prepared_set(c, pid);
    return ok ? 0 : -1;
}

/* Runs one statement; returns the result or NULL (then errbuf is set). */
static PGresult *exec(PGconn *c, const char *sql, int n, const char *const *params,
                      ExecStatusType want, char *errbuf, size_t errsize)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != want) {
        snprintf(errbuf, errsize, "%s", PQresultErrorMessage(r));
        size_t l = strlen(errbuf);
        while (l && errbuf[l - 1] == '\n')
            errbuf[--l] = '\0';
        PQclear(r);
        return NULL;
    }
    return r;
}

/* One member of an object: its value a string to escape (str) or JSON text
 * as it is (raw). */
typedef struct member_s {
    const char *name, *str, *raw;
} member_t;

/* A new malloc'd compact JSON object of members m[0..n), strings escaped as
 * jansson writes them; NULL when out of memory. */
static char *json_object_text(const member_t *m, size_t n, size_t hint)
{
    outbox__buf_t b = {0};
    outbox__buf_reserve(&b, hint);
    for (size_t i = 0; i < n; i++) {
        outbox__buf_adds(&b, i ? ",\"" : "{\"");
        outbox__buf_adds(&b, m[i].name);
        outbox__buf_adds(&b, "\":");
        if (m[i].raw) {
            outbox__buf_adds(&b, m[i].raw);
            continue;
        }
        outbox__buf_add(&b, "\"", 1);
        outbox__json_put_escaped(&b, m[i].str, strlen(m[i].str), 1);
        outbox__buf_add(&b, "\"", 1);
    }
    outbox__buf_add(&b, "}", 1);
    if (b.broken) {
        outbox__buf_free(&b);
        return NULL;
    }
    return b.p;
}

/* The two texts are written straight into buffers, the items spliced in
 * as items_text: jansson's json_pack and json_dumps for both were a tenth
 * of the service's CPU under load (perf, orders-service at 32
 * connections). The bytes are the ones jansson wrote (fuzz/fuzz_orders.c
 * compares them). */
int orders_created_texts(const char *id, const char *user, long long amount, const char *items_text,
                         const char *created, const char *event_id, char **payload, char **body)
{
    char amt[24];
    snprintf(amt, sizeof(amt), "%lld", amount);
    size_t hint = 256 + strlen(user) + strlen(items_text);
    const member_t event[] = {{"order_id", id, NULL},      {"user_id", user, NULL},
                              {"amount", NULL, amt},       {"items", NULL, items_text},
                              {"status", "pending", NULL}, {"created_at", created, NULL}};
    const member_t answer[] = {{"status", "success", NULL},
                               {"order_id", id, NULL},
                               {"order_status", "pending", NULL},
                               {"user_id", user, NULL},
                               {"amount", NULL, amt},
                               {"items", NULL, items_text},
                               {"event_id", event_id, NULL},
                               {"created_at", created, NULL}};
    *payload = json_object_text(event, sizeof(event) / sizeof(event[0]), hint);
    *body = json_object_text(answer, sizeof(answer) / sizeof(answer[0]), hint);
    if (*payload && *body)
        return 0;
    free(*payload);
    free(*body);
    *payload = *body = NULL;
    return -1;
}

/* The answers of create_order, the same whichever way the order went. */
static void reply_in_flight(const outbox_http_req_t *req, outbox_http_resp_t *resp, const char *key)
{
    outbox__http_problem(
        req, resp, 409, "idempotency-key-in-flight", NULL,
        "a request with Idempotency-Key \"%s\" is still being processed; retry shortly", key);
    outbox__http_add_header(resp, "Retry-After", "1");
}

static void reply_mismatch(const outbox_http_req_t *req, outbox_http_resp_t *resp, const char *key)
{
    outbox__http_problem(req, resp, 422, "idempotency-key-reused", NULL,
                         "Idempotency-Key \"%s\" was already used with a different request body; "
                         "use a new key for a new order",
                         key);
}

static void reply_replay(outbox_http_resp_t *resp, unsigned status, const char *content_type,
                         const char *body, size_t body_len)
{
    outbox__http_reply_raw(resp, status, content_type, body, body_len);
    outbox__http_add_header(resp, "Idempotent-Replayed", "true");
}

static void reply_unknown_sku(const outbox_http_req_t *req, outbox_http_resp_t *resp,
                              const char *sku, long long nmissing)
{
    outbox__http_problem(req, resp, 422, "unknown-sku", NULL,
                         "unknown sku \"%.64s\"%s: no such product in the inventory", sku,
                         nmissing > 1 ? " (and others)" : "");
}

static void reply_created(outbox_http_resp_t *resp, const char *body, const char *id,
                          const char *event_id, const char *user, long long amount)
{
    outbox__http_reply_raw(resp, 201, "application/json", body, strlen(body));
    char loc[64], amt[24];
    snprintf(loc, sizeof(loc), "/orders/%s", id);
    outbox__http_add_header(resp, "Location", loc);
    snprintf(amt, sizeof(amt), "%lld", amount);
    outbox__log(OUTBOX_LOG_INFO, "orders", "order_created", "order created", "order_id", id,
                "event_id", event_id, "user_id", user, "amount", amt, NULL);
}

/* The answer of an order written in a batch (batch.c). */
static void reply_job(const outbox_http_req_t *req, outbox_http_resp_t *resp, const orders_job_t *j)
{
    switch (j->outcome) {
    case ORDERS_JOB_CREATED:
        reply_created(resp, j->body, j->id, j->event_id, j->user, j->amount);
        break;
    case ORDERS_JOB_REPLAY:
        reply_replay(resp, j->status, j->content_type, j->body, j->body_len);
        break;
    case ORDERS_JOB_IN_FLIGHT:
        reply_in_flight(req, resp, j->key);
        break;
    case ORDERS_JOB_MISMATCH:
        reply_mismatch(req, resp, j->key);
        break;
    case ORDERS_JOB_UNKNOWN_SKU:
        reply_unknown_sku(req, resp, j->sku, j->nmissing);
        break;
    case ORDERS_JOB_COMMIT_UNKNOWN:
        commit_unknown(req, resp, j->key, j->id, j->event_id, j->err);
        break;
    case ORDERS_JOB_DB_DOWN:
        db_problem(req, resp, NULL, "creating the order", j->err);
        break;
    case ORDERS_JOB_ALONE:
        break;
    }
}

static void create_order(outbox_http_req_t *req, outbox_http_resp_t *resp, void *opaque)
{
    orders_app_t *app = opaque;
    char key[OUTBOX_IDEM_KEY_MAX + 1] = "", why[256];
    size_t hk_len = 0;
    /* With its length: a key cut at a NUL byte would collide with another. */
    const char *hk = outbox__http_header_n(req, "Idempotency-Key", &hk_len);
    if (hk && outbox__idem_key_parse(hk, hk_len, key, why, sizeof(why)) != 0) {
        outbox__http_problem(req, resp, 400, "invalid-idempotency-key", NULL, "%s", why);
        return;
    }
    if (!hk && app->idem_required) {
        outbox__http_problem(
            req, resp, 400, "idempotency-key-required", NULL,
            "this server requires an Idempotency-Key header on POST (1..%d printable ASCII "
            "characters, e.g. a UUID)",
            OUTBOX_IDEM_KEY_MAX);
        return;
    }
    const char *user;
    long long amount;
    json_t *items;
    json_t *doc = order_doc(req, resp);
    if (!doc)
        return;
    req->json = doc; /* ours: freed below */
    char invalid[512];
    if (orders_validate(doc, &user, &amount, &items, invalid, sizeof(invalid)) != 0) {
        outbox__http_problem(req, resp, 400, "validation-error", NULL, "%s", invalid);
        req->json = NULL;
        json_decref(doc);
        return;
    }

    /* Fingerprint the canonical form: whitespace and key order do not matter. */
    char *canon = json_dumps(req->json, JSON_COMPACT | JSON_SORT_KEYS);
    char *items_text = json_dumps(items, JSON_COMPACT);
    char fp[65];
    outbox__idem_fingerprint(req->method, req->path, canon ? canon : "", canon ? strlen(canon) : 0,
                             fp);
    free(canon);

    size_t tp_len = 0;
    const char *tp = outbox__http_header_n(req, "traceparent", &tp_len);
    if (tp && (tp_len != strlen(tp) || !orders_traceparent_valid(tp)))
        tp = NULL; /* a NUL inside, or not a traceparent */

    char err[512];
    char *body = NULL;
    outbox_idem_t idem;
    memset(&idem, 0, sizeof(idem));
    PGconn *c = NULL;
    orders_job_t job = {.key = key,
                        .fp = fp,
                        .user = user,
                        .amount = amount,
                        .items = items,
                        .items_text = items_text,
                        .tp = tp};
    if (items_text) {
        /* With the orders of concurrent requests, in one transaction. */
        orders_batch_submit(app, &job);
        reply_job(req, resp, &job);
        free(job.body);
        if (job.outcome != ORDERS_JOB_ALONE)
            goto done;
    }
    c = outbox__dbpool_get(app->pool, 5000, err, sizeof(err));
    if (!c || !items_text) {
        db_problem(req, resp, NULL, "creating the order", c ? "out of memory" : err);
        goto done;
    }
    if (orders_prepare_session(c, err, sizeof(err)))
        goto dberr;
    if (!key[0] && outbox_kit_db_exec(c, "BEGIN", err, sizeof(err)))
        goto dberr;
    if (key[0]) {
        /* BEGIN, the key's lock and its lookup in one round trip. */
        if (outbox__idem_begin_tx(c, ORDERS_IDEM_SCOPE, key, fp, &idem, err, sizeof(err)))
            goto dberr;
        if (idem.state == OUTBOX_IDEM_IN_FLIGHT) {
            reply_in_flight(req, resp, key);
            goto done;
        }
        if (idem.state == OUTBOX_IDEM_MISMATCH) {
            reply_mismatch(req, resp, key);
            goto done;
        }
        if (idem.state == OUTBOX_IDEM_REPLAY) {
            reply_replay(resp, idem.status, idem.content_type, idem.body, idem.body_len);
            goto done;
        }
    }

    /* Every sku must exist; then the order and its items. */
    char id[OUTBOX_UUID_STRLEN + 1], amt[24];
    outbox_uuid_v7(id);
    snprintf(amt, sizeof(amt), "%lld", amount);
    const char *p4[4] = {id, user, amt, items_text};
    PGresult *r = PQexecPrepared(c, CREATE_STMT, 4, p4, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (state && !strcmp(state, "26000"))
            prepared_set(c, 0); /* the session lost it (DISCARD ALL): prepare again */
        snprintf(err, sizeof(err), "%s", PQresultErrorMessage(r));
        size_t l = strlen(err);
        while (l && err[l - 1] == '\n')
            err[--l] = '\0';
        PQclear(r);
        goto dberr;
    }
    long long nmissing = atoll(PQgetvalue(r, 0, 2));
    if (nmissing > 0) {
        reply_unknown_sku(req, resp, PQgetvalue(r, 0, 1), nmissing);
        PQclear(r);
        goto done;
    }
    char created[40];
    snprintf(created, sizeof(created), "%s", PQgetvalue(r, 0, 0));
    PQclear(r);

    /* The event's id is made here: the response names it, and with a key
     * that response is stored in the same round trip as the event. */
    char event_id[OUTBOX_UUID_STRLEN + 1];
    outbox_uuid_v7(event_id);
    char *payload = NULL;
    int texts =
        orders_created_texts(id, user, amount, items_text, created, event_id, &payload, &body);
    outbox_event_t ev = {.id = event_id,
                         .topic = ORDERS_TOPIC,
                         .type = "OrderCreated",
                         .key = id,
                         .payload = payload ? payload : "{}",
                         .traceparent = tp,
                         .source = ORDERS_SOURCE};
    outbox_err_t e = OUTBOX_OK;
    int recorded = 0;
    if (texts) {
        e = OUTBOX_ERR_NOMEM;
        snprintf(err, sizeof(err), "out of memory");
    } else if (key[0]) /* the event and the key's record: one round trip */
        e = outbox__idem_enqueue_store(c, &ev, ORDERS_IDEM_SCOPE, key, fp, 201, "application/json",
                                       body, app->idem_retention_ms, &recorded, err, sizeof(err));
    else
        e = outbox_enqueue(c, &ev, NULL, err, sizeof(err));
    free(payload);
    if (recorded) {
        outbox__http_problem(
            req, resp, 409, "idempotency-key-in-flight", NULL,
            "a concurrent request with Idempotency-Key \"%s\" won; retry to get its response", key);
        goto done;
    }
    if (e)
        goto dberr;
    switch (outbox_kit_db_commit(c, err, sizeof(err))) {
    case OUTBOX_KIT_COMMITTED:
        break;
    case OUTBOX_KIT_ROLLED_BACK:
        goto dberr; /* the server said so: nothing was written */
    case OUTBOX_KIT_COMMIT_UNKNOWN:
        commit_unknown(req, resp, key, id, event_id, err);
        goto done;
    }
    reply_created(resp, body, id, event_id, user, amount);
    goto done;

dberr:
    db_problem(req, resp, c, "creating the order", err);
done:
    outbox__dbpool_put(app->pool, c); /* rolls back anything left open */
    orders_batch_release(&job);
    outbox__idem_term(&idem);
    free(body);
    free(items_text);
    json_decref(items);
    req->json = NULL;
    json_decref(doc);
}

static void get_order(outbox_http_req_t *req, outbox_http_resp_t *resp, void *opaque)
{
    orders_app_t *app = opaque;
    const char *id = outbox__http_param(req, "id");
    if (!outbox_uuid_valid(id)) {
        outbox__http_problem(req, resp, 400, "invalid-order-id", NULL,
                             "order id \"%.64s\" is not a UUID (8-4-4-4-12 hex digits)",
                             id ? id : "");
        return;
    }
    char err[512];
    PGconn *c = outbox__dbpool_get(app->pool, 5000, err, sizeof(err));
    if (!c) {
        db_problem(req, resp, NULL, "reading the order", err);
        return;
    }
    const char *p[1] = {id};
    PGresult *r = exec(
        c,
        "SELECT json_build_object('order_id', o.id, 'user_id', o.user_id, 'amount', o.amount,"
        "  'status', o.status, 'reason', o.reason,"
        "  'items', COALESCE((SELECT json_agg(json_build_object('sku', i.sku, 'quantity', "
        "i.quantity)"
        "                       ORDER BY i.sku) FROM order_items i WHERE i.order_id = o.id), '[]'),"
        "  'created_at', o.created_at, 'updated_at', o.updated_at)::text"
        " FROM orders o WHERE o.id = $1::uuid",
        1, p, PGRES_TUPLES_OK, err, sizeof(err));
    if (!r) {
        db_problem(req, resp, c, "reading the order", err);
    } else if (PQntuples(r) == 0) {
        outbox__http_problem(req, resp, 404, "order-not-found", NULL, "no order with id %s", id);
    } else {
        outbox__http_reply_raw(resp, 200, "application/json", PQgetvalue(r, 0, 0),
                               (size_t)PQgetlength(r, 0, 0));
    }
    PQclear(r);
    outbox__dbpool_put(app->pool, c);
}

static void list_inventory(outbox_http_req_t *req, outbox_http_resp_t *resp, void *opaque)
{
    orders_app_t *app = opaque;
    char err[512];
    PGconn *c = outbox__dbpool_get(app->pool, 5000, err, sizeof(err));
    if (!c) {
        db_problem(req, resp, NULL, "reading the inventory", err);
        return;
    }
    PGresult *r =
        exec(c,
             "SELECT COALESCE(json_agg(json_build_object('sku', sku, 'name', name, 'stock', stock)"
             " ORDER BY sku), '[]')::text FROM inventory",
             0, NULL, PGRES_TUPLES_OK, err, sizeof(err));
    if (!r)
        db_problem(req, resp, c, "reading the inventory", err);
    else
        outbox__http_reply_raw(resp, 200, "application/json", PQgetvalue(r, 0, 0),
                               (size_t)PQgetlength(r, 0, 0));
    PQclear(r);
    outbox__dbpool_put(app->pool, c);
}

const outbox_http_route_t orders_routes[] = {
    {"POST", "/orders", create_order, 0}, /* the body is optional: order_doc() */
    {"GET", "/orders/{id}", get_order, 0},
    {"GET", "/inventory", list_inventory, 0},
    {NULL, NULL, NULL, 0},
};
