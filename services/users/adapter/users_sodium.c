/* The hasher port on libsodium: Argon2id via crypto_pwhash_str. */
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>

#include "adapter/users_adapter.h"

struct users_sodium_s {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int free_slots;
};

static int hash(void *self, const char *password, size_t len, char *out, size_t out_size,
                char *errstr, size_t errstr_size)
{
    users_sodium_t *s = self;
    if (out_size < crypto_pwhash_STRBYTES) {
        snprintf(errstr, errstr_size, "hash buffer too small");
        return -1;
    }
    pthread_mutex_lock(&s->lock);
    while (s->free_slots == 0)
        pthread_cond_wait(&s->cond, &s->lock);
    s->free_slots--;
    pthread_mutex_unlock(&s->lock);
    int rc =
        crypto_pwhash_str(out, password, (unsigned long long)len,
                          crypto_pwhash_OPSLIMIT_INTERACTIVE, crypto_pwhash_MEMLIMIT_INTERACTIVE);
    pthread_mutex_lock(&s->lock);
    s->free_slots++;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    if (rc != 0) {
        snprintf(errstr, errstr_size, "hashing the password failed: out of memory");
        return -1;
    }
    return 0;
}

static const users_hasher_ops_t ops = {hash};

users_sodium_t *users_sodium_new(int max_parallel)
{
    if (sodium_init() < 0)
        return NULL;
    users_sodium_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->free_slots = max_parallel > 0 ? max_parallel : 1;
    return s;
}

void users_sodium_destroy(users_sodium_t *s)
{
    if (!s)
        return;
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    free(s);
}

users_hasher_t users_sodium_hasher(users_sodium_t *s)
{
    users_hasher_t h = {&ops, s};
    return h;
}
