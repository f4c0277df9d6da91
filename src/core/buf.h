/* Growable byte buffer with a hard cap (header-only). It goes "broken" on
 * ENOMEM or past the cap, so callers append freely and check ->broken once
 * at the end. Used by the sinks (request bodies) and the metrics endpoints. */
#ifndef OUTBOX_CORE_BUF_H
#define OUTBOX_CORE_BUF_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct outbox__buf_s {
    char *p; /* NUL-terminated while not broken */
    size_t len, cap;
    size_t max; /* hard cap in bytes (0 = 1 GiB) */
    int broken;
} outbox__buf_t;

/** Makes room for n more bytes (plus the NUL) without adding them: returns
 *  where they go (the caller writes them, adds n to b->len and lets the next
 *  add terminate), or NULL when the buffer is broken. */
static inline char *outbox__buf_reserve(outbox__buf_t *b, size_t n)
{
    if (b->broken)
        return NULL;
    size_t max = b->max ? b->max : ((size_t)1 << 30);
    if (b->len + n + 1 > max) {
        b->broken = 1;
        return NULL;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        if (cap > max)
            cap = max;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->broken = 1;
            return NULL;
        }
        b->p = p;
        b->cap = cap;
    }
    return b->p + b->len;
}

static inline void outbox__buf_add(outbox__buf_t *b, const void *data, size_t n)
{
    char *dst = outbox__buf_reserve(b, n);
    if (!dst)
        return;
    if (n)
        memcpy(dst, data, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static inline void outbox__buf_adds(outbox__buf_t *b, const char *s)
{
    outbox__buf_add(b, s, strlen(s));
}

/** Empties b (keeps the memory and the cap). */
static inline void outbox__buf_reset(outbox__buf_t *b)
{
    b->len = 0;
    b->broken = 0;
    if (b->p)
        b->p[0] = '\0';
}

static inline void outbox__buf_free(outbox__buf_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
    b->broken = 0;
}

/** Appends printf-style text. */
static inline void outbox__buf_printf(outbox__buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline void outbox__buf_printf(outbox__buf_t *b, const char *fmt, ...)
{
    if (b->broken)
        return;
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->broken = 1;
        return;
    }
    if ((size_t)n < sizeof(small)) {
        outbox__buf_add(b, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->broken = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    outbox__buf_add(b, big, (size_t)n);
    free(big);
}

#endif
