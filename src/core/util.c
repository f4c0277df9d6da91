/* Error strings, clocks, durations, backoff. */
#define _GNU_SOURCE /* pthread_setname_np */
#include "core/util.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

static const char *const err_strs[OUTBOX_ERR__COUNT] = {
    [OUTBOX_OK] = "success",
    [OUTBOX_ERR_INVALID_ARG] = "invalid argument",
    [OUTBOX_ERR_NOT_IN_TRANSACTION] = "not inside a transaction block",
    [OUTBOX_ERR_DB] = "database error",
    [OUTBOX_ERR_BROKER] = "broker error",
    [OUTBOX_ERR_REJECTED] = "rejected by the broker",
    [OUTBOX_ERR_TIMEOUT] = "timed out",
    [OUTBOX_ERR_NOMEM] = "out of memory",
    [OUTBOX_ERR_IO] = "I/O error",
    [OUTBOX_ERR_CONFIG] = "configuration error",
    [OUTBOX_ERR_NOT_FOUND] = "not found",
    [OUTBOX_ERR_UNSUPPORTED] = "not supported",
};

const char *outbox_err_str(outbox_err_t err)
{
    if ((int)err < 0 || err >= OUTBOX_ERR__COUNT || !err_strs[err])
        return "unknown error";
    return err_strs[err];
}

outbox_err_t outbox__err(outbox_err_t err, char *errstr, size_t errstr_size, const char *fmt, ...)
{
    if (errstr && errstr_size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
    }
    return err;
}

int64_t outbox__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t outbox__wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void outbox__sleep_ms(int64_t ms, _Atomic int *stop)
{
    int64_t end = outbox__now_ms() + ms;
    while (!(stop && *stop)) {
        int64_t left = end - outbox__now_ms();
        if (left <= 0)
            break;
        if (left > 50 && stop)
            left = 50; /* notice stop requests promptly */
        struct timespec ts = {left / 1000, (left % 1000) * 1000000};
        nanosleep(&ts, NULL);
    }
}

int outbox__parse_duration_ms(const char *s, int64_t *ms)
{
    if (!s || !*s)
        return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !(v >= 0)) /* NaN ("nan") is not a duration either */
        return -1;
    double mult;
    if (!*end || !strcmp(end, "ms"))
        mult = 1;
    else if (!strcmp(end, "s"))
        mult = 1000;
    else if (!strcmp(end, "m"))
        mult = 60e3;
    else if (!strcmp(end, "h"))
        mult = 3600e3;
    else if (!strcmp(end, "d"))
        mult = 86400e3;
    else
        return -1;
    double r = v * mult;
    if (r > 9.0e15)
        return -1;
    *ms = (int64_t)(r + 0.5);
    return 0;
}

static __thread uint64_t rng_state;

static uint64_t rng_next(void)
{
    if (!rng_state) {
        if (getrandom(&rng_state, sizeof(rng_state), 0) != sizeof(rng_state))
            rng_state = (uint64_t)outbox__wall_us() ^ (uint64_t)pthread_self();
        rng_state |= 1;
    }
    /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

double outbox__rand01(void)
{
    return (double)(rng_next() >> 11) / 9007199254740992.0;
}

int64_t outbox__backoff_ms(int attempt, int64_t base_ms, int64_t max_ms)
{
    if (attempt < 1)
        attempt = 1;
    int64_t cap = base_ms;
    for (int i = 1; i < attempt && cap < max_ms; i++)
        cap *= 2;
    if (cap > max_ms)
        cap = max_ms;
    int64_t half = cap / 2;
    return half + (int64_t)(outbox__rand01() * (double)(cap - half + 1));
}

int outbox__url_scheme_is(const char *url, const char *scheme)
{
    const char *colon = url ? strchr(url, ':') : NULL;
    size_t n = strlen(scheme);
    return colon && (size_t)(colon - url) == n && !strncasecmp(url, scheme, n);
}

void outbox__thread_name(const char *fmt, ...)
{
    char name[16];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof(name), fmt, ap);
    va_end(ap);
    (void)pthread_setname_np(pthread_self(), name);
}

int outbox__join_by(pthread_t t, int64_t deadline_ms)
{
    if (deadline_ms <= 0)
        return pthread_join(t, NULL) == 0 ? 0 : -1;
    struct timespec until = {(time_t)(deadline_ms / 1000), (long)(deadline_ms % 1000) * 1000000L};
    return pthread_clockjoin_np(t, NULL, CLOCK_MONOTONIC, &until) == 0 ? 0 : -1;
}

char *outbox__strdup0(const char *s)
{
    return s ? strdup(s) : NULL;
}

void outbox__on_stop_signals(void (*handler)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

char *outbox__rtrim(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' '))
        s[--n] = '\0';
    return s;
}
