/*
 * POST /users {"email","password"} ->
 *   201 {"code":201,"message":"user created successfully","data":{"id":"<uuid>"}}
 * Errors are application/problem+json (400 validation-error with the field,
 * 409 email-taken, 409/422 Idempotency-Key conflicts, 503 database).
 * The password is passed to the use case and never logged or echoed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/users_http.h"

static char *render_created(const char *id)
{
    json_t *o = json_pack("{s:i,s:s,s:{s:s}}", "code", 201, "message", "user created successfully",
                          "data", "id", id);
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    return s;
}

static void create_user(outbox_http_req_t *req, outbox_http_resp_t *resp, void *opaque)
{
    users_http_app_t *app = opaque;
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
    json_t *e = json_object_get(req->json, "email"), *p = json_object_get(req->json, "password");
    if (e && !json_is_string(e)) {
        outbox__http_problem(req, resp, 400, "validation-error", NULL,
                             "email must be a string, e.g. \"user@example.com\"");
        outbox__http_problem_member(resp, "field", "email");
        return;
    }
    if (p && !json_is_string(p)) {
        outbox__http_problem(req, resp, 400, "validation-error", NULL,
                             "password must be a string of at least %d characters",
                             USERS_PASSWORD_MIN);
        outbox__http_problem_member(resp, "field", "password");
        return;
    }
    /* The key's fingerprint covers the email only: nothing derived from the
     * password is stored (a fast hash of it would be crackable offline). */
    char fp[65];
    const char *email = e ? json_string_value(e) : NULL;
    size_t email_len = e ? json_string_length(e) : 0;
    outbox__idem_fingerprint(req->method, req->path, email ? email : "", email_len, fp);
    users_idem_t idem = {.key = key,
                         .fingerprint = fp,
                         .retention_ms = app->idem_retention_ms,
                         .render = render_created};
    users_reg_out_t out;
    users_register(app->deps, email, email_len, p ? json_string_value(p) : NULL,
                   p ? json_string_length(p) : 0, &idem, &out);
    char *body;
    switch (out.status) {
    case USERS_REG_CREATED:
        body = render_created(out.id);
        if (!body) {
            outbox__http_problem(req, resp, 500, "internal", NULL, "out of memory");
            break;
        }
        outbox__http_reply_raw(resp, 201, "application/json", body, strlen(body));
        free(body);
        break;
    case USERS_REG_INVALID:
        outbox__http_problem(req, resp, 400, "validation-error", NULL, "%s", out.message);
        outbox__http_problem_member(resp, "field", out.field);
        break;
    case USERS_REG_EMAIL_TAKEN:
        outbox__http_problem(req, resp, 409, "email-taken", NULL,
                             "a user with this email already exists");
        outbox__http_problem_member(resp, "field", "email");
        break;
    case USERS_REG_REPLAY:
        outbox__http_reply_raw(resp, out.replay.status, out.replay.content_type, out.replay.body,
                               out.replay.body_len);
        outbox__http_add_header(resp, "Idempotent-Replayed", "true");
        break;
    case USERS_REG_KEY_IN_FLIGHT:
        outbox__http_problem(req, resp, 409, "idempotency-key-in-flight", NULL,
                             "a request with Idempotency-Key \"%s\" is still being processed; "
                             "retry shortly",
                             key);
        outbox__http_add_header(resp, "Retry-After", "1");
        break;
    case USERS_REG_KEY_REUSED:
        outbox__http_problem(req, resp, 422, "idempotency-key-reused", NULL,
                             "Idempotency-Key \"%s\" was already used for another email; use a "
                             "new key for a new user",
                             key);
        break;
    case USERS_REG_UNAVAILABLE:
        outbox__http_problem(req, resp, 503, "database-unavailable", NULL,
                             "the database is unreachable; nothing was written, retry later");
        outbox__http_add_header(resp, "Retry-After", "1");
        break;
    case USERS_REG_FAILED:
        outbox__log(OUTBOX_LOG_ERROR, "users", "create_failed", out.message, NULL);
        outbox__http_problem(req, resp, 500, "internal", NULL,
                             "the user could not be saved (see the server log); nothing was "
                             "written");
        break;
    case USERS_REG_COMMIT_UNKNOWN:
        outbox__http_problem(req, resp, 503, "commit-outcome-unknown", "Commit Outcome Unknown",
                             "the connection to the database broke while user %s was being "
                             "committed, so it may or may not have been created; retry with an "
                             "Idempotency-Key to be safe (a retry without one answers 409 "
                             "email-taken if it was created)",
                             out.id);
        outbox__http_add_header(resp, "Retry-After", "1");
        break;
    }
    users_replay_term(&out.replay);
}

const outbox_http_route_t users_routes[] = {
    {"POST", "/users", create_user, 1},
    {NULL, NULL, NULL, 0},
};
