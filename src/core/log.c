/* Structured logging. See log.h. */
#include "core/log.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/json.h"
#include "core/util.h"

/* Set by outbox__log_setup (a relay or consumer being created) while other
 * threads may be logging: relaxed atomics, each read on its own. */
static _Atomic int threshold = OUTBOX_LOG_INFO;
static _Atomic int text_format;
static pthread_rwlock_t log_lock;
static pthread_once_t log_lock_once = PTHREAD_ONCE_INIT;

/* A long line waits for the short ones being written, never behind the
 * ones that come after it (glibc's default would let them starve it). */
static void log_lock_init(void)
{
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&log_lock, &a);
    pthread_rwlockattr_destroy(&a);
}
static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* Writes a whole line (newline included) to stderr in one write(2). Lines
 * of threads never mix: a write of at most PIPE_BUF bytes is atomic on a
 * pipe, and a file or a terminal takes each write whole, so such lines
 * share the lock (no waiting); a longer line, which a pipe may take in
 * parts, holds it alone. */
static void write_line(const char *p, size_t n)
{
    pthread_once(&log_lock_once, log_lock_init);
    if (n <= PIPE_BUF)
        pthread_rwlock_rdlock(&log_lock);
    else
        pthread_rwlock_wrlock(&log_lock);
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break; /* nowhere to log to */
        p += w;
        n -= (size_t)w;
    }
    pthread_rwlock_unlock(&log_lock);
}

void outbox__log_setup(const char *level, const char *format)
{
    for (int i = 0; level && i < 4; i++)
        if (!strcmp(level, level_names[i]))
            atomic_store_explicit(&threshold, i, memory_order_relaxed);
    if (format)
        atomic_store_explicit(&text_format, !strcmp(format, "text"), memory_order_relaxed);
}

int outbox__log_enabled(outbox_log_level_t level)
{
    return (int)level >= atomic_load_explicit(&threshold, memory_order_relaxed);
}

static void timestamp(char *buf, size_t size)
{
    int64_t us = outbox__wall_us();
    time_t s = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, size - n, ".%03dZ", (int)((us / 1000) % 1000));
}

/* Text values: bare when they are one word, else double-quoted with escapes. */
static size_t text_value(char *out, size_t size, const char *v)
{
    int bare = *v != '\0';
    for (const char *p = v; *p && bare; p++)
        bare = (unsigned char)*p > ' ' && *p != '"' && *p != '=' && *p != '\\';
    if (bare)
        return (size_t)snprintf(out, size, "%s", v);
    size_t n = 0;
    if (n + 1 < size)
        out[n++] = '"';
    for (const char *p = v; *p && n + 3 < size; p++) {
        if (*p == '"' || *p == '\\')
            out[n++] = '\\', out[n++] = *p;
        else if (*p == '\n')
            out[n++] = '\\', out[n++] = 'n';
        else if ((unsigned char)*p < ' ')
            out[n++] = ' ';
        else
            out[n++] = *p;
    }
    if (n + 1 < size)
        out[n++] = '"';
    out[n < size ? n : size - 1] = '\0';
    return n;
}

/* Colour only for a person: stderr is a terminal and NO_COLOR is unset
 * (https://no-color.org). Decided once. */
static int use_colour(void)
{
    static _Atomic int decided = -1; /* threads may decide at once: same answer */
    int d = atomic_load_explicit(&decided, memory_order_relaxed);
    if (d < 0) {
        const char *nc = getenv("NO_COLOR");
        d = isatty(STDERR_FILENO) && !(nc && *nc);
        atomic_store_explicit(&decided, d, memory_order_relaxed);
    }
    return d;
}

/* One line for people: aligned columns time, level, component, event, then
 * the message and key=value pairs (keys dimmed when coloured). */
static void text_line(outbox_log_level_t level, const char *ts, const char *component,
                      const char *event, const char *msg, va_list kv)
{
    static const char *const names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    static const char *const colours[] = {"\033[2m", "\033[32m", "\033[33m", "\033[1;31m"};
    int c = use_colour();
    const char *dim = c ? "\033[2m" : "", *reset = c ? "\033[0m" : "", *cyan = c ? "\033[36m" : "",
               *bold = c ? "\033[1m" : "";
    char line[4096];
    /* ts is 2026-01-02T03:04:05.678Z: people get the time of day (UTC). */
    int n = snprintf(line, sizeof(line), "%s%.12s%s %s%-5s%s %s%-10s%s %s%-22s%s %s", dim, ts + 11,
                     reset, c ? colours[level] : "", names[level], reset, cyan, component, reset,
                     bold, event, reset, msg ? msg : "");
    size_t len = n < 0 ? 0 : (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
    const char *k;
    for (int first = 1; (k = va_arg(kv, const char *)) != NULL; first = 0) {
        const char *v = va_arg(kv, const char *);
        if (len + 8 >= sizeof(line))
            continue;
        n = snprintf(line + len, sizeof(line) - len, "%s%s%s=%s", first ? "  " : " ", dim, k,
                     reset);
        if (n < 0 || (size_t)n >= sizeof(line) - len)
            break;
        len += (size_t)n;
        len += text_value(line + len, sizeof(line) - len, v ? v : "");
        if (len >= sizeof(line))
            len = sizeof(line) - 1;
    }
    line[len++] = '\n'; /* len <= sizeof(line) - 1: room for it */
    write_line(line, len);
}

/* Appends ,"key":"value" (value NULL: null). Text that is not UTF-8 is kept
 * readable: each offending byte becomes U+FFFD. */
static void put_member(outbox__buf_t *b, const char *key, const char *value)
{
    outbox__buf_adds(b, ",\"");
    outbox__json_put_escaped(b, key, strlen(key), 1);
    if (!value) {
        outbox__buf_adds(b, "\":null");
        return;
    }
    outbox__buf_adds(b, "\":\"");
    outbox__json_put_escaped(b, value, strlen(value), 1);
    outbox__buf_adds(b, "\"");
}

static void vlog(outbox_log_level_t level, const char *component, const char *event,
                 const char *msg, va_list kv)
{
    char ts[40];
    timestamp(ts, sizeof(ts));
    if (atomic_load_explicit(&text_format, memory_order_relaxed)) {
        text_line(level, ts, component, event, msg, kv);
        return;
    }
    /* The line is written here, not through jansson: no allocation per
     * field, and one write(2) for the whole line, its newline included. */
    outbox__buf_t b = {0};
    outbox__buf_adds(&b, "{\"ts\":\"");
    outbox__buf_adds(&b, ts);
    outbox__buf_adds(&b, "\",\"level\":\"");
    outbox__buf_adds(&b, level_names[level]);
    outbox__buf_adds(&b, "\"");
    put_member(&b, "component", component);
    put_member(&b, "event", event);
    if (msg)
        put_member(&b, "msg", msg);
    const char *k;
    while ((k = va_arg(kv, const char *)) != NULL)
        put_member(&b, k, va_arg(kv, const char *));
    outbox__buf_adds(&b, "}\n");
    if (!b.broken)
        write_line(b.p, b.len);
    free(b.p);
}

void outbox__log(outbox_log_level_t level, const char *component, const char *event,
                 const char *msg, ...)
{
    if (!outbox__log_enabled(level))
        return;
    va_list ap;
    va_start(ap, msg);
    vlog(level, component, event, msg, ap);
    va_end(ap);
}

static void vlog_none(outbox_log_level_t level, const char *component, const char *event,
                      const char *msg, ...)
{
    va_list ap;
    va_start(ap, msg);
    vlog(level, component, event, msg, ap);
    va_end(ap);
}

void outbox__logf(outbox_log_level_t level, const char *component, const char *event,
                  const char *fmt, ...)
{
    if (!outbox__log_enabled(level))
        return;
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    vlog_none(level, component, event, buf, NULL);
}

/* The end of a password value starting at v: a quoted one (libpq
 * conninfo) after its closing quote, else at white space, and in a URI's
 * query also at '&' or '#'; a backslash escapes the next byte (libpq). */
static const char *password_end(const char *v, int uri)
{
    if (*v == '\'') {
        for (v++; *v && *v != '\''; v++)
            if (*v == '\\' && v[1])
                v++;
        return *v ? v + 1 : v;
    }
    for (; *v && !isspace((unsigned char)*v) && !(uri && (*v == '&' || *v == '#')); v++)
        if (*v == '\\' && v[1])
            v++;
    return v;
}

void outbox__redact_url(const char *url, char *out, size_t out_size)
{
    if (!out_size)
        return;
    /* Worked on whole, then cut to out_size: a copy cut first could lose the
     * '@' that ends a password and show its start. */
    const char *u = url ? url : "";
    outbox__buf_t w = {0}, r = {0};
    /* URI form: scheme://user:password@host -> scheme://user:****@host; in
     * scheme://secret@host (a Redis password, a NATS token) the whole user
     * info is masked. libcurl also takes "scheme:/" and "scheme:" before the user
     * info. The user info runs to the LAST '@': the NATS and Kafka URL
     * parsers take the last one, and a password may hold '/' (base64 does).
     * Masking a port or a path too in a log line hides nothing secret;
     * stopping short would show the rest of the password. A conninfo may
     * hold a URI in a value: "://" anywhere starts user info too. */
    size_t sl = strspn(u, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.");
    int uri = sl > 0 && u[sl] == ':';
    const char *auth = uri ? u + sl + 1 : strstr(u, "://");
    if (auth && !uri)
        auth += 3;
    while (auth && *auth == '/')
        auth++;
    const char *at = auth ? strrchr(auth, '@') : NULL;
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    if (at) {
        const char *from = colon ? colon + 1 : auth;
        outbox__buf_add(&w, u, (size_t)(from - u));
        outbox__buf_adds(&w, "****");
        u = at;
    }
    outbox__buf_adds(&w, u);
    /* conninfo and URI query forms: password=VALUE -> password=****, for any
     * key ending in "password" (sslpassword too), with the white space libpq
     * allows around '=' and its quoted values. */
    const char *p = w.p && !w.broken ? w.p : "";
    for (const char *k; (k = strstr(p, "password")) != NULL;) {
        const char *v = k + 8;
        while (isspace((unsigned char)*v))
            v++;
        if (*v != '=') {
            outbox__buf_add(&r, p, (size_t)(k + 8 - p));
            p = k + 8;
            continue;
        }
        for (v++; isspace((unsigned char)*v);)
            v++;
        outbox__buf_add(&r, p, (size_t)(v - p));
        outbox__buf_adds(&r, "****");
        p = password_end(v, uri);
    }
    outbox__buf_adds(&r, p);
    snprintf(out, out_size, "%s", w.broken || r.broken ? "(redacted)" : r.p ? r.p : "");
    outbox__buf_free(&w);
    outbox__buf_free(&r);
}
