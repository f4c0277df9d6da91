/*
 * users-service ports: what the use case needs from the outside world,
 * as small ops tables. The adapters (adapter/) implement them on
 * PostgreSQL + the outbox and on libsodium; the use case (usecase/) knows
 * only these declarations.
 */
#ifndef USERS_PORT_H
#define USERS_PORT_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define USERS_ID_LEN 36

/* A user to store: the hash, never the password. */
typedef struct users_new_s {
    char id[USERS_ID_LEN + 1];
    const char *email;         /* normalised (lower-case) */
    const char *password_hash; /* Argon2id hash string */
    const char *event_payload; /* the UserCreated data (JSON, no secret) */
} users_new_t;

/* The request's Idempotency-Key, when it has one (key[0] == '\0': none). */
typedef struct users_idem_s {
    const char *key;
    const char *fingerprint; /* hex SHA-256 of what identifies the request */
    int64_t retention_ms;
    /* The body to store for the key once the user is saved (malloc'd, or NULL
     * when out of memory); the caller frees it. */
    char *(*render)(const char *user_id);
} users_idem_t;

typedef enum {
    USERS_SAVED = 0,     /* committed: user + UserCreated event (+ key) */
    USERS_EMAIL_TAKEN,   /* nothing written: the email belongs to another user */
    USERS_REPLAY,        /* the key was used before with the same request: stored answer */
    USERS_KEY_IN_FLIGHT, /* a request with the same key is being processed */
    USERS_KEY_REUSED,    /* the key was used before with another request */
    USERS_UNAVAILABLE,   /* the database is unreachable: nothing written */
    USERS_FAILED,        /* the database returned an error: nothing written */
    USERS_COMMIT_UNKNOWN /* the connection broke during COMMIT: may have been written */
} users_save_result_t;

/* A stored answer (USERS_REPLAY). */
typedef struct users_replay_s {
    unsigned status;
    char content_type[64];
    char *body; /* malloc'd; users_replay_term frees it */
    size_t body_len;
} users_replay_t;

/* Repository: the user, its UserCreated event and the key's answer in ONE
 * database transaction. */
typedef struct users_repo_ops_s {
    users_save_result_t (*save)(void *self, const users_new_t *u, const users_idem_t *idem,
                                users_replay_t *replay, char *errstr, size_t errstr_size);
} users_repo_ops_t;

typedef struct users_repo_s {
    const users_repo_ops_t *ops;
    void *self;
} users_repo_t;

/* Password hasher: Argon2id. hash() returns 0, or -1 (out of memory) with
 * errstr set; out gets a NUL-terminated hash string of < out_size bytes. */
typedef struct users_hasher_ops_s {
    int (*hash)(void *self, const char *password, size_t len, char *out, size_t out_size,
                char *errstr, size_t errstr_size);
} users_hasher_ops_t;

typedef struct users_hasher_s {
    const users_hasher_ops_t *ops;
    void *self;
} users_hasher_t;

static inline void users_replay_term(users_replay_t *r)
{
    if (r) {
        free(r->body);
        r->body = NULL;
    }
}

#endif
