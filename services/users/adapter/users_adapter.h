/* users-service adapters: the ports on PostgreSQL + the outbox
 * (users_pg.c) and on libsodium (users_sodium.c). */
#ifndef USERS_ADAPTER_H
#define USERS_ADAPTER_H

#include "kit/kit.h"
#include "port/users_port.h"

#define USERS_IDEM_SCOPE "users"

/* The repository on a pool (borrowed; must outlive the repo). */
typedef struct users_pg_s {
    outbox_dbpool_t *pool;
} users_pg_t;
users_repo_t users_pg_repo(users_pg_t *pg);

/* Argon2id (crypto_pwhash_str, interactive limits: 64 MiB, 2 passes), at
 * most max_parallel hashes at a time so that a burst of requests cannot
 * take all the memory. NULL when libsodium cannot
 * start or out of memory. */
typedef struct users_sodium_s users_sodium_t;
users_sodium_t *users_sodium_new(int max_parallel);
void users_sodium_destroy(users_sodium_t *s);
users_hasher_t users_sodium_hasher(users_sodium_t *s);

#endif
