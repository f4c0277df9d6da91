/* outboxctl tail TOPIC: follows the events of a topic as they go out.
 *
 * Sources (--source, or chosen from the configuration):
 *   outbox  reads the outbox table through the store, whatever the sink:
 *           with ack_mode=mark the rows the relay acknowledged (published),
 *           by processed_at; with ack_mode=delete published rows are gone,
 *           so it shows pending rows as they are committed (an event the
 *           relay publishes between two polls is not seen: use mark mode or
 *           the redis source for a complete feed).
 *   redis   reads the Redis stream TOPIC with XREAD (no consumer group, so
 *           nothing is left behind on the broker): every event published.
 * Default: outbox with ack_mode=mark; redis when the sink is a Redis stream
 * (OUTBOX_SINK redis://, or unset); outbox otherwise.
 *
 * The outbox cursor is a time (processed_at or created_at) read again with an
 * overlap, because rows become visible at commit, after their time was taken;
 * rows seen in the overlap are skipped by seq. */
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "broker/redis.h"
#include "core/conf.h"
#include "core/util.h"
#include "ctl.h"

static volatile sig_atomic_t stop_tail;

static void on_signal(int sig)
{
    (void)sig;
    stop_tail = 1;
}

typedef struct tail_s {
    int json;
    long count, shown; /* stop after count events (0: never) */
    int64_t *seen_seq; /* seqs shown whose time is inside the overlap */
    int64_t *seen_us;  /* their times */
    size_t nseen, capseen;
    int64_t last_us; /* latest time shown or skipped */
    int suppress;    /* first poll without --from-start: remember, do not show */
} tail_t;

static void json_text(const char *p)
{
    putchar('"');
    for (; *p; p++) {
        if (*p == '"' || *p == '\\')
            printf("\\%c", *p);
        else if ((unsigned char)*p < 0x20)
            printf("\\u%04x", (unsigned char)*p);
        else
            putchar(*p);
    }
    putchar('"');
}

/* One line per event: time, type, key, id, then the data as written. */
static void show(tail_t *t, const char *at, const char *topic, const char *type, const char *key,
                 const char *id, const char *what, const char *body)
{
    if (t->json) {
        printf("{\"id\":");
        json_text(id);
        printf(",\"topic\":");
        json_text(topic);
        printf(",\"type\":");
        json_text(type);
        printf(",\"key\":");
        json_text(key);
        if (at) {
            printf(",\"at\":");
            json_text(at);
        }
        printf(",\"%s\":%s}\n", what, body && *body ? body : "null");
    } else {
        /* at is 2026-01-02T03:04:05.678901Z: the time of day to the millisecond. */
        printf("%.12s  %-24s key=%-20s id=%s  %s\n", at && strlen(at) > 11 ? at + 11 : "", type,
               key, id, body ? body : "");
    }
    fflush(stdout);
    t->shown++;
}

static int seen(const tail_t *t, int64_t seq)
{
    for (size_t i = 0; i < t->nseen; i++)
        if (t->seen_seq[i] == seq)
            return 1;
    return 0;
}

static void remember(tail_t *t, int64_t seq, int64_t us)
{
    if (t->nseen == t->capseen) {
        size_t cap = t->capseen ? t->capseen * 2 : 256;
        int64_t *a = realloc(t->seen_seq, cap * sizeof(*a));
        if (a)
            t->seen_seq = a;
        int64_t *b = a ? realloc(t->seen_us, cap * sizeof(*b)) : NULL;
        if (!a || !b)
            return; /* out of memory: it may show an event twice, never lose one */
        t->seen_us = b;
        t->capseen = cap;
    }
    t->seen_seq[t->nseen] = seq;
    t->seen_us[t->nseen++] = us;
}

static void forget_before(tail_t *t, int64_t us)
{
    size_t k = 0;
    for (size_t i = 0; i < t->nseen; i++)
        if (t->seen_us[i] >= us) {
            t->seen_seq[k] = t->seen_seq[i];
            t->seen_us[k++] = t->seen_us[i];
        }
    t->nseen = k;
}

static void on_row(void *arg, const outbox_tail_event_t *e)
{
    tail_t *t = arg;
    if (t->count && t->shown >= t->count)
        return;
    if (e->at_us > t->last_us)
        t->last_us = e->at_us;
    if (seen(t, e->seq))
        return;
    remember(t, e->seq, e->at_us);
    if (!t->suppress)
        show(t, e->at, e->topic, e->type, e->key, e->id, "data", e->payload);
}

static int tail_outbox(outbox_store_t *s, const char *topic, int processed, int from_start,
                       int64_t interval_ms, int64_t deadline_ms, tail_t *t)
{
    char err[1024];
    /* Visibility comes at commit: a relay's acknowledgement commits right after
     * processed_at is taken; a producer's transaction may run long after its
     * created_at. Read back that far, skip what was shown. */
    const int64_t overlap_us = processed ? 3000000 : 30000000;
    const int limit = 2000;
    int64_t now_us = 0;
    if (!s->ops->tail)
        return ctl_fail(OUTBOX_ERR_UNSUPPORTED, "tail", "not supported by this store");
    outbox_err_t e = s->ops->tail(s, topic, processed, 0, 0, on_row, t, &now_us, err, sizeof(err));
    if (e)
        return ctl_fail(e, "tail (did you run 'outboxctl migrate'?)", err);
    /* Start: everything (--from-start), or now minus the overlap with what is
     * already there remembered but not shown. */
    int64_t since = from_start ? 0 : now_us - overlap_us;
    t->last_us = from_start ? 0 : now_us;
    t->suppress = !from_start;
    fprintf(stderr, "outboxctl tail: following %s rows of topic %s in table %s (Ctrl-C to stop)\n",
            processed ? "published (processed)" : "pending", topic, s->cfg.table);
    while (!stop_tail && (!t->count || t->shown < t->count)) {
        size_t before = t->nseen;
        int64_t last_before = t->last_us;
        if ((e = s->ops->tail(s, topic, processed, since, limit, on_row, t, &now_us, err,
                              sizeof(err))))
            return ctl_fail(e, "tail", err);
        t->suppress = 0;
        if (t->count && t->shown >= t->count)
            break;
        /* Next read: back from the latest time by the overlap. A full page of
         * nothing new means the overlap holds more than a page: move on. */
        int64_t latest = t->last_us > last_before ? t->last_us : last_before;
        since = latest - overlap_us;
        if (t->nseen == before && latest > since && before >= (size_t)limit)
            since = latest;
        forget_before(t, since);
        if (deadline_ms && outbox__now_ms() >= deadline_ms)
            break;
        usleep((useconds_t)(interval_ms * 1000));
    }
    return 0;
}

/* The field of a stream entry, or "". */
static const char *field(const redisReply *fields, const char *name)
{
    for (size_t f = 0; f + 1 < fields->elements; f += 2)
        if (fields->element[f]->str && !strcmp(fields->element[f]->str, name))
            return fields->element[f + 1]->str ? fields->element[f + 1]->str : "";
    return "";
}

static int tail_redis(const outbox_conf_t *conf, const char *url, const char *topic, int from_start,
                      int64_t deadline_ms, tail_t *t)
{
    outbox__redis_url_t u;
    char err[256], last[64];
    if (outbox__redis_url_parse(url, &u, err, sizeof(err)) != OUTBOX_OK) {
        fprintf(stderr, "outboxctl: tail: %s\n", err);
        return 2;
    }
    if (!u.password[0])
        snprintf(u.password, sizeof(u.password), "%s", outbox__conf_str(conf, "redis_password"));
    redisContext *rc = outbox__redis_connect(&u, 0, err, sizeof(err));
    if (!rc) {
        fprintf(stderr, "outboxctl: tail: %s\n", err);
        return 1;
    }
    /* Start after the newest entry (or at the beginning): an explicit id, so
     * nothing appended between two reads is missed ("$" would). */
    snprintf(last, sizeof(last), "0-0");
    if (!from_start) {
        redisReply *r = redisCommand(rc, "XREVRANGE %s + - COUNT 1", topic);
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
            r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->element[0]->str)
            snprintf(last, sizeof(last), "%s", r->element[0]->element[0]->str);
        if (r)
            freeReplyObject(r);
    }
    fprintf(stderr, "outboxctl tail: following Redis stream %s at %s:%d (Ctrl-C to stop)\n", topic,
            u.host, u.port);
    int ret = 0;
    while (!stop_tail && (!t->count || t->shown < t->count)) {
        redisReply *r = redisCommand(rc, "XREAD COUNT 500 BLOCK 500 STREAMS %s %s", topic, last);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "outboxctl: tail: XREAD: %s\n", r && r->str ? r->str : rc->errstr);
            if (r)
                freeReplyObject(r);
            ret = 1;
            break;
        }
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 1) {
            redisReply *entries = r->element[0]->element[1];
            for (size_t i = 0; i < entries->elements && (!t->count || t->shown < t->count); i++) {
                redisReply *en = entries->element[i];
                snprintf(last, sizeof(last), "%s", en->element[0]->str);
                /* The entry id is the time Redis appended it, in milliseconds. */
                char at[40] = "";
                long long ms = atoll(last);
                time_t sec = (time_t)(ms / 1000);
                struct tm tm;
                gmtime_r(&sec, &tm);
                size_t n = strftime(at, sizeof(at), "%Y-%m-%dT%H:%M:%S", &tm);
                snprintf(at + n, sizeof(at) - n, ".%03lldZ", ms % 1000);
                const redisReply *f = en->element[1];
                show(t, at, topic, field(f, "type"), field(f, "key"), field(f, "id"), "event",
                     field(f, "event"));
            }
        }
        freeReplyObject(r);
        if (deadline_ms && outbox__now_ms() >= deadline_ms)
            break;
    }
    redisFree(rc);
    return ret;
}

int ctl_tail(outbox_store_t *s, const outbox_conf_t *conf, int argc, char **argv)
{
    const char *topic = NULL, *source = NULL;
    int from_start = 0;
    int64_t interval_ms = 250, timeout_ms = 0;
    tail_t t = {0};
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--from-start"))
            from_start = 1;
        else if (!strcmp(argv[i], "--json"))
            t.json = 1;
        else if (!strcmp(argv[i], "--count") && i + 1 < argc)
            t.count = atol(argv[++i]);
        else if (!strcmp(argv[i], "--source") && i + 1 < argc)
            source = argv[++i];
        else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) {
            if (outbox__parse_duration_ms(argv[++i], &timeout_ms)) {
                fprintf(stderr, "outboxctl: tail: --timeout wants a duration (e.g. 30s)\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "--interval") && i + 1 < argc) {
            if (outbox__parse_duration_ms(argv[++i], &interval_ms) || interval_ms < 10) {
                fprintf(stderr, "outboxctl: tail: --interval wants a duration >= 10ms\n");
                return 2;
            }
        } else if (argv[i][0] != '-' && !topic)
            topic = argv[i];
        else {
            fprintf(stderr,
                    "outboxctl: tail: unexpected argument \"%s\" (see outboxctl tail "
                    "--help)\n",
                    argv[i]);
            return 2;
        }
    }
    if (!topic || !*topic) {
        fprintf(stderr, "outboxctl: tail needs a topic, e.g. outboxctl tail orders\n");
        return 2;
    }
    if (t.count < 0) {
        fprintf(stderr, "outboxctl: tail: --count must be a positive integer\n");
        return 2;
    }
    int mark = !strcmp(outbox__conf_str(conf, "ack_mode"), "mark");
    const char *sink = outbox__conf_str(conf, "sink");
    char url[512];
    if (!*sink)
        snprintf(url, sizeof(url), "redis://%s", outbox__conf_str(conf, "redis_addr"));
    else
        snprintf(url, sizeof(url), "%s", sink);
    if (!source)
        source = mark ? "outbox" : !strncmp(url, "redis://", 8) ? "redis" : "outbox";
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int64_t deadline = timeout_ms ? outbox__now_ms() + timeout_ms : 0;
    int rc;
    if (!strcmp(source, "outbox")) {
        rc = tail_outbox(s, topic, mark, from_start, interval_ms, deadline, &t);
    } else if (!strcmp(source, "redis")) {
        if (strncmp(url, "redis://", 8)) {
            fprintf(stderr,
                    "outboxctl: tail --source redis needs a redis:// sink (OUTBOX_SINK), "
                    "not %.*s\n",
                    (int)strcspn(url, ":"), url);
            return 2;
        }
        rc = tail_redis(conf, url, topic, from_start, deadline, &t);
    } else {
        fprintf(stderr, "outboxctl: tail: --source is outbox or redis\n");
        return 2;
    }
    free(t.seen_seq);
    free(t.seen_us);
    if (!rc && t.count && t.shown < t.count) {
        fprintf(stderr, "outboxctl tail: %ld of %ld events before the timeout\n", t.shown, t.count);
        return 1;
    }
    return rc;
}
