/*
 * users-service use case: register a user. Depends only on the ports
 * (port/users_port.h): validation, hashing through the hasher port, the
 * UserCreated event, and one call to the repository port.
 */
#ifndef USERS_USECASE_H
#define USERS_USECASE_H

#include "port/users_port.h"

#define USERS_TOPIC "users"
#define USERS_SOURCE "/users"
#define USERS_EVENT_CREATED "UserCreated"
#define USERS_PASSWORD_MIN 8    /* characters */
#define USERS_PASSWORD_MAX 1024 /* bytes: bounds the hashing work per request */
#define USERS_EMAIL_MAX 254

typedef struct users_deps_s {
    users_repo_t repo;
    users_hasher_t hasher;
} users_deps_t;

typedef enum {
    USERS_REG_CREATED = 0,
    USERS_REG_INVALID, /* bad input: message says which field and why */
    USERS_REG_EMAIL_TAKEN,
    USERS_REG_REPLAY,
    USERS_REG_KEY_IN_FLIGHT,
    USERS_REG_KEY_REUSED,
    USERS_REG_UNAVAILABLE,
    USERS_REG_FAILED,
    USERS_REG_COMMIT_UNKNOWN
} users_reg_status_t;

typedef struct users_reg_out_s {
    users_reg_status_t status;
    char id[USERS_ID_LEN + 1]; /* CREATED, COMMIT_UNKNOWN: the user's id */
    char message[512];         /* INVALID: the reason; others: detail (no secret) */
    char field[16];            /* INVALID: "email" or "password" */
    users_replay_t replay;     /* REPLAY: the stored answer; free with users_replay_term */
} users_reg_out_t;

/* Normalises (lower-case) and checks an email address; 0 when valid, else
 * -1 with why set. out gets the normalised form (USERS_EMAIL_MAX + 1 bytes). */
int users_email_normalise(const char *in, size_t len, char *out, char *why, size_t why_size);

/* Registers a user: email and password as received (password: len bytes,
 * never logged, never stored). idem may be NULL. Fills out. */
void users_register(const users_deps_t *deps, const char *email, size_t email_len,
                    const char *password, size_t password_len, const users_idem_t *idem,
                    users_reg_out_t *out);

#endif
