/*
 * services/users: the POST /users body {"email", "password"} through the
 * register use case (usecase/users_usecase.c) with an in-memory
 * repository and hasher, and the email rules on raw bytes.
 *
 * Input: the body (JSON, read as the HTTP layer does); the whole input is
 * also tried as an email address. What the use case hands the repository
 * is the email as sent, lower-cased, whole (nothing cut at a NUL), the
 * hash and an event of exactly the id and the email; no answer depends on
 * what the password says (only on its length).
 */
#include <ctype.h>
#include <jansson.h>
#include <string.h>

#include "fuzz_common.h"
#include "usecase/users_usecase.h"

#define FAKE_HASH "$argon2id$v=19$m=65536,t=2,p=1$fuzz$fuzz"

typedef struct sent_s {
    const char *email; /* as received */
    size_t email_len;
    const char *password;
    size_t password_len;
    int saved;
} sent_t;

static users_save_result_t fake_save(void *self, const users_new_t *u, const users_idem_t *idem,
                                     users_replay_t *replay, char *errstr, size_t errstr_size)
{
    sent_t *s = self;
    s->saved++;
    size_t n = strlen(u->email);
    FUZZ_CHECK(n == s->email_len, "email of %zu bytes saved as %zu bytes (\"%s\")", s->email_len, n,
               u->email);
    for (size_t i = 0; i < n; i++) {
        char c = s->email[i];
        FUZZ_CHECK(u->email[i] == (c >= 'A' && c <= 'Z' ? c + 32 : c), "email changed: %s",
                   u->email);
    }
    FUZZ_CHECK(outbox_uuid_valid(u->id), "user id %s", u->id);
    json_t *ev = json_loads(u->event_payload, 0, NULL);
    /* exactly the id and the email: nothing derived from the password */
    FUZZ_CHECK(ev && json_object_size(ev) == 2 &&
                   !strcmp(json_string_value(json_object_get(ev, "email")), u->email) &&
                   !strcmp(json_string_value(json_object_get(ev, "userId")), u->id),
               "event %s", u->event_payload);
    json_decref(ev);
    FUZZ_CHECK(!strcmp(u->password_hash, FAKE_HASH), "stored \"%s\", not the hash",
               u->password_hash);
    return USERS_SAVED;
}

static int fake_hash(void *self, const char *password, size_t len, char *out, size_t out_size,
                     char *errstr, size_t errstr_size)
{
    snprintf(out, out_size, "%s", FAKE_HASH);
    return 0;
}

static const users_repo_ops_t repo_ops = {fake_save};
static const users_hasher_ops_t hasher_ops = {fake_hash};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char norm[USERS_EMAIL_MAX + 1], why[256];
    if (users_email_normalise((const char *)data, size, norm, why, sizeof(why)) == 0)
        FUZZ_CHECK(strlen(norm) == size, "email of %zu bytes normalised to \"%s\"", size, norm);

    json_t *doc = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    json_t *e = json_object_get(doc, "email"), *p = json_object_get(doc, "password");
    /* the HTTP adapter refuses members that are not strings */
    if (json_is_object(doc) && (!e || json_is_string(e)) && (!p || json_is_string(p))) {
        sent_t s = {e ? json_string_value(e) : NULL, e ? json_string_length(e) : 0,
                    p ? json_string_value(p) : NULL, p ? json_string_length(p) : 0, 0};
        users_deps_t deps = {{&repo_ops, &s}, {&hasher_ops, NULL}};
        users_idem_t idem = {.key = "", .fingerprint = "", .retention_ms = 1000};
        users_reg_out_t out;
        users_register(&deps, s.email, s.email_len, s.password, s.password_len, &idem, &out);
        FUZZ_CHECK((out.status == USERS_REG_CREATED) == (s.saved == 1), "status %d, saved %d",
                   (int)out.status, s.saved);
        if (out.status == USERS_REG_INVALID)
            FUZZ_CHECK(out.message[0] && out.field[0], "invalid without a reason");
        /* The message never depends on what the password says: the same
         * request with its letters and digits changed (same length, same
         * characters count) gets the same answer. */
        if (s.password && out.status == USERS_REG_INVALID) {
            char *other = malloc(s.password_len + 1);
            FUZZ_CHECK(other, "out of memory");
            for (size_t i = 0; i < s.password_len; i++) {
                unsigned char c = (unsigned char)s.password[i];
                other[i] = (char)(isalnum(c) ? (c == 'a' ? 'b' : 'a') : c);
            }
            other[s.password_len] = '\0';
            sent_t s2 = s;
            s2.password = other;
            users_deps_t deps2 = {{&repo_ops, &s2}, {&hasher_ops, NULL}};
            users_reg_out_t out2;
            users_register(&deps2, s.email, s.email_len, other, s.password_len, &idem, &out2);
            FUZZ_CHECK(out2.status == out.status && !strcmp(out2.message, out.message) &&
                           !strcmp(out2.field, out.field),
                       "the answer depends on the password: \"%s\" / \"%s\"", out.message,
                       out2.message);
            users_replay_term(&out2.replay);
            free(other);
        }
        users_replay_term(&out.replay);
    }
    json_decref(doc);
    return 0;
}
