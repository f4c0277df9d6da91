/* The register-user use case: validate, hash, save with the event. */
#include "usecase/users_usecase.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "outbox/outbox.h"

static int is_local_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f && !strchr("\"(),:;<>[\\]@", c);
}

static int is_label_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

int users_email_normalise(const char *in, size_t len, char *out, char *why, size_t why_size)
{
    if (len == 0 || len > USERS_EMAIL_MAX) {
        snprintf(why, why_size, "email must be 3 to %d characters, e.g. user@example.com",
                 USERS_EMAIL_MAX);
        return -1;
    }
    size_t at = len;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '\0') { /* the address would be cut there: another user's */
            snprintf(why, why_size, "email must not contain a NUL character");
            return -1;
        }
        out[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        if (c == '@') {
            if (at != len) {
                snprintf(why, why_size, "email must contain exactly one '@'");
                return -1;
            }
            at = i;
        }
    }
    out[len] = '\0';
    if (at == len || at == 0 || at > 64 || at + 1 >= len) {
        snprintf(why, why_size,
                 "email must look like local@domain (local part 1 to 64 characters), e.g. "
                 "user@example.com");
        return -1;
    }
    for (size_t i = 0; i < at; i++)
        if (!is_local_char((unsigned char)out[i]) ||
            (out[i] == '.' && (i == 0 || i + 1 == at || out[i + 1] == '.'))) {
            snprintf(why, why_size,
                     "email has a character not allowed before the '@' (position %zu)", i + 1);
            return -1;
        }
    /* domain: dot-separated labels of letters, digits and '-', at least two */
    const char *d = out + at + 1;
    int labels = 0;
    size_t lab = 0;
    const char *last = d;
    for (const char *p = d;; p++) {
        if (*p == '.' || *p == '\0') {
            if (lab == 0 || lab > 63 || p[-1] == '-' || *last == '-') {
                snprintf(why, why_size, "email domain \"%.64s\" is not a valid host name", d);
                return -1;
            }
            labels++;
            if (*p == '\0')
                break;
            lab = 0;
            last = p + 1;
            continue;
        }
        if (!is_label_char((unsigned char)*p)) {
            snprintf(why, why_size, "email domain \"%.64s\" is not a valid host name", d);
            return -1;
        }
        lab++;
    }
    if (labels < 2) {
        snprintf(why, why_size, "email domain \"%.64s\" needs a dot, e.g. example.com", d);
        return -1;
    }
    return 0;
}

/* Characters (UTF-8 code points) in s[0..len). */
static size_t utf8_chars(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

void users_register(const users_deps_t *deps, const char *email, size_t email_len,
                    const char *password, size_t password_len, const users_idem_t *idem,
                    users_reg_out_t *out)
{
    memset(out, 0, sizeof(*out));
    char norm[USERS_EMAIL_MAX + 1];
    if (!email) {
        out->status = USERS_REG_INVALID;
        snprintf(out->field, sizeof(out->field), "email");
        snprintf(out->message, sizeof(out->message),
                 "email is required (a string), e.g. {\"email\":\"user@example.com\","
                 "\"password\":\"at-least-8-chars\"}");
        return;
    }
    if (users_email_normalise(email, email_len, norm, out->message, sizeof(out->message))) {
        out->status = USERS_REG_INVALID;
        snprintf(out->field, sizeof(out->field), "email");
        return;
    }
    if (!password || utf8_chars(password, password_len) < USERS_PASSWORD_MIN ||
        password_len > USERS_PASSWORD_MAX) {
        out->status = USERS_REG_INVALID;
        snprintf(out->field, sizeof(out->field), "password");
        snprintf(out->message, sizeof(out->message),
                 password ? "password must be at least %d characters (and at most %d bytes)"
                          : "password is required: a string of at least %d characters (at most "
                            "%d bytes)",
                 USERS_PASSWORD_MIN, USERS_PASSWORD_MAX);
        return;
    }
    char hash[256];
    if (deps->hasher.ops->hash(deps->hasher.self, password, password_len, hash, sizeof(hash),
                               out->message, sizeof(out->message))) {
        out->status = USERS_REG_FAILED;
        return;
    }
    users_new_t u = {.email = norm, .password_hash = hash};
    outbox_uuid_v7(u.id);
    /* The event says who was created: no password, no hash. */
    json_t *data = json_pack("{s:s,s:s}", "userId", u.id, "email", norm);
    char *payload = data ? json_dumps(data, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(data);
    if (!payload) {
        out->status = USERS_REG_FAILED;
        snprintf(out->message, sizeof(out->message), "out of memory");
        return;
    }
    u.event_payload = payload;
    users_save_result_t r = deps->repo.ops->save(deps->repo.self, &u, idem, &out->replay,
                                                 out->message, sizeof(out->message));
    free(payload);
    memset(hash, 0, sizeof(hash));
    static const users_reg_status_t map[] = {[USERS_SAVED] = USERS_REG_CREATED,
                                             [USERS_EMAIL_TAKEN] = USERS_REG_EMAIL_TAKEN,
                                             [USERS_REPLAY] = USERS_REG_REPLAY,
                                             [USERS_KEY_IN_FLIGHT] = USERS_REG_KEY_IN_FLIGHT,
                                             [USERS_KEY_REUSED] = USERS_REG_KEY_REUSED,
                                             [USERS_UNAVAILABLE] = USERS_REG_UNAVAILABLE,
                                             [USERS_FAILED] = USERS_REG_FAILED,
                                             [USERS_COMMIT_UNKNOWN] = USERS_REG_COMMIT_UNKNOWN};
    out->status = map[r];
    snprintf(out->id, sizeof(out->id), "%s", u.id);
}
