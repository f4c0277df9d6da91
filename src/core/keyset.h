/* A set of borrowed key strings (open addressing, header-only), used by the
 * relay and the sinks for "a message must not be sent after an earlier one
 * of the same key failed in this batch". */
#ifndef OUTBOX_CORE_KEYSET_H
#define OUTBOX_CORE_KEYSET_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct outbox__keyset_s {
    const char **slots;
    size_t cap; /* power of two, > 2 * entries */
} outbox__keyset_t;

static inline uint64_t outbox__keyset_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

/** Sizes the set for up to n keys. -1 on ENOMEM. */
static inline int outbox__keyset_init(outbox__keyset_t *ks, size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n + 2)
        cap *= 2;
    ks->slots = calloc(cap, sizeof(*ks->slots));
    ks->cap = ks->slots ? cap : 0;
    return ks->slots ? 0 : -1;
}

static inline int outbox__keyset_has(const outbox__keyset_t *ks, const char *key)
{
    if (!ks->cap || !key)
        return 0;
    for (size_t i = outbox__keyset_hash(key) & (ks->cap - 1);; i = (i + 1) & (ks->cap - 1)) {
        if (!ks->slots[i])
            return 0;
        if (!strcmp(ks->slots[i], key))
            return 1;
    }
}

/** Adds key (borrowed: it must outlive the set). At most n keys (see init). */
static inline void outbox__keyset_add(outbox__keyset_t *ks, const char *key)
{
    if (!ks->cap || !key || outbox__keyset_has(ks, key))
        return;
    size_t i = outbox__keyset_hash(key) & (ks->cap - 1);
    while (ks->slots[i])
        i = (i + 1) & (ks->cap - 1);
    ks->slots[i] = key;
}

static inline void outbox__keyset_term(outbox__keyset_t *ks)
{
    free(ks->slots);
    ks->slots = NULL;
    ks->cap = 0;
}

#endif
