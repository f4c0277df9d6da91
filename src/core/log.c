/* Structured logging. See log.h. */
#include "core/log.h"

#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/util.h"

static outbox_log_level_t threshold = OUTBOX_LOG_INFO;
static int text_format;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void outbox__log_setup(const char *level, const char *format)
{
    for (int i = 0; level && i < 4; i++)
        if (!strcmp(level, level_names[i]))
            threshold = (outbox_log_level_t)i;
    if (format)
        text_format = !strcmp(format, "text");
}

int outbox__log_enabled(outbox_log_level_t level)
{
    return level >= threshold;
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

static void vlog(outbox_log_level_t level, const char *component, const char *event,
                 const char *msg, va_list kv)
{
    char ts[40];
    timestamp(ts, sizeof(ts));
    if (text_format) {
        char extra[1024] = "";
        size_t n = 0;
        const char *k;
        while ((k = va_arg(kv, const char *)) != NULL) {
            const char *v = va_arg(kv, const char *);
            int w = snprintf(extra + n, sizeof(extra) - n, " %s=%s", k, v ? v : "");
            if (w < 0 || (size_t)w >= sizeof(extra) - n)
                break;
            n += (size_t)w;
        }
        pthread_mutex_lock(&log_lock);
        fprintf(stderr, "%s %-5s [%s] %s: %s%s\n", ts, level_names[level], component, event,
                msg ? msg : "", extra);
        fflush(stderr);
        pthread_mutex_unlock(&log_lock);
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "ts", json_string(ts));
    json_object_set_new(o, "level", json_string(level_names[level]));
    json_object_set_new(o, "component", json_string(component));
    json_object_set_new(o, "event", json_string(event));
    if (msg)
        json_object_set_new(o, "msg", json_string(msg));
    const char *k;
    while ((k = va_arg(kv, const char *)) != NULL) {
        const char *v = va_arg(kv, const char *);
        json_object_set_new(o, k, v ? json_string(v) : json_null());
    }
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!line)
        return;
    pthread_mutex_lock(&log_lock);
    fputs(line, stderr);
    fputc('\n', stderr);
    fflush(stderr);
    pthread_mutex_unlock(&log_lock);
    free(line);
}

void outbox__log(outbox_log_level_t level, const char *component, const char *event,
                 const char *msg, ...)
{
    if (level < threshold)
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
    if (level < threshold)
        return;
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    vlog_none(level, component, event, buf, NULL);
}

void outbox__redact_url(const char *url, char *out, size_t out_size)
{
    if (!out_size)
        return;
    snprintf(out, out_size, "%s", url ? url : "");
    /* URI form: scheme://user:password@host -> scheme://user:****@host */
    char *scheme = strstr(out, "://");
    if (scheme) {
        char *auth = scheme + 3;
        char *at = strchr(auth, '@');
        char *slash = strchr(auth, '/');
        if (at && (!slash || at < slash)) {
            char *colon = memchr(auth, ':', (size_t)(at - auth));
            if (colon) {
                char tail[1024];
                snprintf(tail, sizeof(tail), "%s", at);
                size_t keep = (size_t)(colon - out) + 1;
                snprintf(out + keep, out_size - keep, "****%s", tail);
            }
        }
    }
    /* conninfo / query form: password=... -> password=**** */
    char *p = out;
    while ((p = strstr(p, "password=")) != NULL) {
        char *v = p + 9;
        char *e = v;
        if (*e == '\'') {
            e++;
            while (*e && *e != '\'') {
                if (*e == '\\' && e[1])
                    e++;
                e++;
            }
            if (*e)
                e++;
        } else {
            while (*e && *e != ' ' && *e != '&')
                e++;
        }
        char tail[1024];
        snprintf(tail, sizeof(tail), "%s", e);
        size_t keep = (size_t)(v - out);
        snprintf(out + keep, out_size - keep, "****%s", tail);
        p = v + 4;
        if ((size_t)(p - out) >= strlen(out))
            break;
    }
}
