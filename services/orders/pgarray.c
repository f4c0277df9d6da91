/* PostgreSQL array literals of text for the statements' parameters (the
 * consumers' and the API's batches). See orders.h. */
#include <stdlib.h>
#include <string.h>

#include "orders.h"

static void put(orders_arr_t *b, const char *s, size_t len)
{
    if (b->nomem)
        return;
    if (b->n + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + len + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->nomem = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = '\0';
}

void orders_arr_add(orders_arr_t *b, const char *s)
{
    put(b, b->count++ ? "," : "{", 1);
    if (!s) {
        put(b, "NULL", 4);
        return;
    }
    put(b, "\"", 1);
    for (const char *q = s; *q; q++) {
        size_t run = strcspn(q, "\"\\");
        put(b, q, run);
        q += run;
        if (!*q)
            break;
        put(b, "\\", 1);
        put(b, q, 1);
    }
    put(b, "\"", 1);
}

const char *orders_arr_end(orders_arr_t *b)
{
    put(b, b->count ? "}" : "{}", b->count ? 1 : 2);
    return b->nomem ? NULL : b->p;
}
