/*
 * POST /api/v1/transactions {"amount","description","fromUserId","toUserId"}
 *      -> 202 {"transactionId":"<uuid>","status":"PENDING"}
 * GET  /api/v1/transactions/{id} -> the transaction: PENDING, COMPLETED, or
 *      FAILED with a reason
 * GET  /api/v1/balance/{userId}  -> {"userId","balance"}
 * Errors are application/problem+json (400 validation-error with the field,
 * 404, 409/422 Idempotency-Key conflicts, 503 database). See docs/LEDGER.md.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/tx_http.h"

#define EXAMPLE                                                                                    \
    "{\"amount\":100,\"description\":\"transfer\",\"fromUserId\":\"<uuid>\",\"toUserId\":"         \
    "\"<uuid>\"}"

static char *render_accepted(const char *id)
{
    json_t *o = json_pack("{s:s,s:s}", "transactionId", id, "status", "PENDING");
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    return s;
}

static void bad(const outbox_http_req_t *req, outbox_http_resp_t *resp, const char *field,
                const char *msg)
{
    outbox__http_problem(req, resp, 400, "validation-error", NULL, "%s", msg);
    outbox__http_problem_member(resp, "field", field);
}

static void store_problem(const outbox_http_req_t *req, outbox_http_resp_t *resp,
                          tx_store_result_t r, const char *what)
{
    if (r == TX_STORE_UNAVAILABLE) {
        outbox__http_problem(req, resp, 503, "database-unavailable", NULL,
                             "%s: the database is unreachable; nothing was written, retry later",
                             what);
        outbox__http_add_header(resp, "Retry-After", "1");
    } else {
        outbox__http_problem(req, resp, 500, "internal", NULL,
                             "%s: the database returned an error (see the server log)", what);
    }
}

/* Optional user id member: absent or null -> *out NULL; a string -> it;
 * anything else -> -1. */
static int opt_user(const json_t *doc, const char *name, const char **out)
{
    json_t *v = json_object_get(doc, name);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
        return -1; /* not a string, or a NUL inside it */
    *out = json_string_value(v);
    return 0;
}

int tx_http_parse_create(const json_t *doc, tx_create_in_t *in, const char **field,
                         const char **msg)
{
    memset(in, 0, sizeof(*in));
    *field = *msg = NULL;
    json_t *a = json_object_get(doc, "amount");
    if (!a) {
        *field = "amount";
        *msg = "amount is required: a positive integer number of minor units (cents), "
               "e.g. " EXAMPLE;
        return -1;
    }
    if (!json_is_integer(a)) {
        *field = "amount";
        *msg = "amount must be an integer number of minor units (cents), e.g. 100 for 1.00; "
               "not a string or a decimal";
        return -1;
    }
    in->amount = (int64_t)json_integer_value(a);
    json_t *d = json_object_get(doc, "description");
    if (d && !json_is_null(d) && !json_is_string(d)) {
        *field = "description";
        *msg = "description must be a string";
        return -1;
    }
    in->description = json_is_string(d) ? json_string_value(d) : NULL;
    if (d && json_is_string(d) && strlen(in->description) != json_string_length(d)) {
        *field = "description";
        *msg = "description must not contain a NUL character";
        return -1;
    }
    if (opt_user(doc, "fromUserId", &in->from_user)) {
        *field = "fromUserId";
        *msg = "fromUserId must be a user id (a string), or null/absent for a deposit";
        return -1;
    }
    if (opt_user(doc, "toUserId", &in->to_user)) {
        *field = "toUserId";
        *msg = "toUserId must be a user id (a string), or null/absent for a withdrawal";
        return -1;
    }
    return 0;
}

static void create_tx(outbox_http_req_t *req, outbox_http_resp_t *resp, void *opaque)
{
    tx_http_app_t *app = opaque;
    char key[OUTBOX_IDEM_KEY_MAX + 1] = "", why[256];
    size_t hk_len = 0;
    const char *hk = outbox__http_header_n(req, "Idempotency-Key", &hk_len);
    if (hk && outbox__idem_key_parse(hk, hk_len, key, why, sizeof(why)) != 0) {
        outbox__http_problem(req, resp, 400, "invalid-idempotency-key", NULL, "%s", why);
        return;
    }
    if (!hk && app->idem_required) {
        outbox__http_problem(req, resp, 400, "idempotency-key-required", NULL,
                             "this server requires an Idempotency-Key header on POST (1..%d "
                             "printable ASCII characters, e.g. a UUID)",
                             OUTBOX_IDEM_KEY_MAX);
        return;
    }
    json_t *doc = req->json;
    tx_create_in_t in;
    const char *field, *msg;
    if (tx_http_parse_create(doc, &in, &field, &msg)) {
        bad(req, resp, field, msg);
        return;
    }

    char *canon = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    char fp[65];
    outbox__idem_fingerprint(req->method, req->path, canon ? canon : "", canon ? strlen(canon) : 0,
                             fp);
    free(canon);
    tx_idem_t idem = {.key = key,
                      .fingerprint = fp,
                      .retention_ms = app->idem_retention_ms,
                      .status = 202,
                      .render = render_accepted};
    tx_create_out_t out;
    tx_create(&app->store, &in, &idem, &out);
    if (out.invalid) {
        bad(req, resp, out.field, out.message);
        return;
    }
    char *body;
    switch (out.status) {
    case TX_STORE_OK:
        body = render_accepted(out.id);
        if (!body) {
            outbox__http_problem(req, resp, 500, "internal", NULL, "out of memory");
            break;
        }
        outbox__http_reply_raw(resp, 202, "application/json", body, strlen(body));
        free(body);
        char loc[80];
        snprintf(loc, sizeof(loc), "/api/v1/transactions/%s", out.id);
        outbox__http_add_header(resp, "Location", loc);
        break;
    case TX_STORE_REPLAY:
        outbox__http_reply_raw(resp, out.replay.status, out.replay.content_type, out.replay.body,
                               out.replay.body_len);
        outbox__http_add_header(resp, "Idempotent-Replayed", "true");
        break;
    case TX_STORE_KEY_IN_FLIGHT:
        outbox__http_problem(req, resp, 409, "idempotency-key-in-flight", NULL,
                             "a request with Idempotency-Key \"%s\" is still being processed; "
                             "retry shortly",
                             key);
        outbox__http_add_header(resp, "Retry-After", "1");
        break;
    case TX_STORE_KEY_REUSED:
        outbox__http_problem(req, resp, 422, "idempotency-key-reused", NULL,
                             "Idempotency-Key \"%s\" was already used with a different request "
                             "body; use a new key for a new transaction",
                             key);
        break;
    case TX_STORE_COMMIT_UNKNOWN:
        outbox__http_problem(req, resp, 503, "commit-outcome-unknown", "Commit Outcome Unknown",
                             "the connection to the database broke while transaction %s was "
                             "being committed, so it may or may not have been created; GET "
                             "/api/v1/transactions/%s tells which (404: not created), or retry "
                             "with the same Idempotency-Key",
                             out.id, out.id);
        outbox__http_problem_member(resp, "transactionId", out.id);
        outbox__http_add_header(resp, "Retry-After", "1");
        break;
    default:
        store_problem(req, resp, out.status, "creating the transaction");
        break;
    }
    free(out.replay.body);
}

static void get_tx(outbox_http_req_t *req, outbox_http_resp_t *resp, void *opaque)
{
    tx_http_app_t *app = opaque;
    const char *id = outbox__http_param(req, "id");
    if (!outbox_uuid_valid(id)) {
        outbox__http_problem(req, resp, 400, "invalid-transaction-id", NULL,
                             "transaction id \"%.64s\" is not a UUID (8-4-4-4-12 hex digits)",
                             id ? id : "");
        return;
    }
    tx_view_t v;
    tx_store_result_t r = tx_get(&app->store, id, &v);
    if (r == TX_STORE_OK)
        outbox__http_reply_raw(resp, 200, "application/json", v.json, strlen(v.json));
    else if (r == TX_STORE_NOT_FOUND)
        outbox__http_problem(req, resp, 404, "transaction-not-found", NULL,
                             "no transaction with id %s", id);
    else
        store_problem(req, resp, r, "reading the transaction");
    free(v.json);
}

static void get_balance(outbox_http_req_t *req, outbox_http_resp_t *resp, void *opaque)
{
    tx_http_app_t *app = opaque;
    const char *id = outbox__http_param(req, "userId");
    if (!id || !*id || strlen(id) > TX_USER_ID_MAX) {
        outbox__http_problem(req, resp, 400, "invalid-user-id", NULL,
                             "a user id is 1..%d characters", TX_USER_ID_MAX);
        return;
    }
    int64_t bal = 0;
    /* Accounts are opened for the UUIDs of UserCreated events: any other id
     * ("user-1" in our users' example) has none. */
    tx_store_result_t r =
        outbox_uuid_valid(id) ? tx_balance(&app->store, id, &bal) : TX_STORE_NOT_FOUND;
    if (r == TX_STORE_OK) {
        json_t *o = json_pack("{s:s,s:I}", "userId", id, "balance", (json_int_t)bal);
        outbox__http_reply_json(resp, 200, o);
        json_decref(o);
    } else if (r == TX_STORE_NOT_FOUND) {
        outbox__http_problem(req, resp, 404, "account-not-found", NULL,
                             "no account for user %.64s (unknown user, or its UserCreated event "
                             "has not arrived yet)",
                             id);
    } else {
        store_problem(req, resp, r, "reading the balance");
    }
}

const outbox_http_route_t tx_routes[] = {
    {"POST", "/api/v1/transactions", create_tx, 1},
    {"GET", "/api/v1/transactions/{id}", get_tx, 0},
    {"GET", "/api/v1/balance/{userId}", get_balance, 0},
    {NULL, NULL, NULL, 0},
};
