/* UUID version 7 (RFC 9562 §5.7): 48-bit Unix milliseconds, then random
 * bits. Within one process ids are strictly increasing: the 12-bit rand_a
 * field is a counter seeded randomly each millisecond (method 1 of §6.2). */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "core/util.h"
#include "outbox/outbox.h"

static pthread_mutex_t uuid_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t last_ms;
static uint32_t counter; /* 12 bits used */

static void fill_random(unsigned char *b, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(b + got, n - got, 0);
        if (r <= 0) { /* fall back to the process PRNG; never fails */
            for (; got < n; got++)
                b[got] = (unsigned char)(outbox__rand01() * 256.0);
            return;
        }
        got += (size_t)r;
    }
}

/* Random bytes are taken from the kernel 256 at a time per thread: a
 * getrandom(2) per id was two system calls per POST /orders. A forked
 * child starts with an empty pool (pool_gen), so it never hands out the
 * bytes its parent will. */
#define POOL_BYTES 256
static _Atomic unsigned pool_gen;
static __thread unsigned char pool[POOL_BYTES];
static __thread size_t pool_left;
static __thread unsigned pool_seen;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static void pool_forked(void)
{
    pool_gen++;
}

static void pool_init(void)
{
    pthread_atfork(NULL, NULL, pool_forked);
}

static void take_random(unsigned char *b, size_t n)
{
    pthread_once(&pool_once, pool_init);
    unsigned gen = pool_gen;
    if (pool_seen != gen) {
        pool_seen = gen;
        pool_left = 0;
    }
    if (pool_left < n) {
        fill_random(pool, POOL_BYTES);
        pool_left = POOL_BYTES;
    }
    unsigned char *src = pool + POOL_BYTES - pool_left;
    memcpy(b, src, n);
    memset(src, 0, n); /* handed out once */
    pool_left -= n;
}

void outbox_uuid_v7(char out[OUTBOX_UUID_STRLEN + 1])
{
    unsigned char b[16];
    take_random(b, sizeof(b));
    uint64_t ms = (uint64_t)(outbox__wall_us() / 1000);

    pthread_mutex_lock(&uuid_lock);
    if (ms > last_ms) {
        last_ms = ms;
        counter = ((uint32_t)b[6] << 8 | b[7]) & 0x7ff; /* leave headroom */
    } else {
        ms = last_ms; /* clock went back or same ms: keep monotonic */
        if (++counter > 0xfff) {
            last_ms = ++ms;
            counter = 0;
        }
    }
    uint32_t c = counter;
    pthread_mutex_unlock(&uuid_lock);

    for (int i = 0; i < 6; i++)
        b[i] = (unsigned char)(ms >> (40 - 8 * i));
    b[6] = (unsigned char)(0x70 | ((c >> 8) & 0x0f));
    b[7] = (unsigned char)(c & 0xff);
    b[8] = (unsigned char)(0x80 | (b[8] & 0x3f)); /* variant 10 */

    static const char hex[] = "0123456789abcdef";
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *o++ = '-';
        *o++ = hex[b[i] >> 4];
        *o++ = hex[b[i] & 15];
    }
    *o = '\0';
}

int outbox_uuid_valid(const char *s)
{
    if (!s)
        return 0;
    for (int i = 0; i < OUTBOX_UUID_STRLEN; i++) {
        char ch = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (ch != '-')
                return 0;
        } else if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') ||
                     (ch >= 'A' && ch <= 'F'))) {
            return 0;
        }
    }
    return s[OUTBOX_UUID_STRLEN] == '\0';
}
