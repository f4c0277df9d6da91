/* The chaos harness: what the checks after the chaos use (waiting for a
 * count, id sets, reading a Redis stream back, ids in the children's logs). */
#include "chaos_int.h"

#include <hiredis/hiredis.h>
#include <string.h>

void chaos_wait_ll(chaos_t *C, PGconn **c, const char *conninfo, const char *sql, long long want,
                   int timeout_ms, const char *what)
{
    long long t0 = tu_now_ms(), last = t0, v = -1;
    for (;;) {
        if (!*c || PQstatus(*c) != CONNECTION_OK) {
            PQfinish(*c);
            *c = PQconnectdb(conninfo);
        }
        PGresult *r = PQexec(*c, sql);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0)
            v = atoll(PQgetvalue(r, 0, 0));
        PQclear(r);
        if (v == want)
            return;
        CHECK(tu_now_ms() - t0 < timeout_ms, "%s: %lld after %d ms, want %lld (%s)", what, v,
              timeout_ms, want, sql);
        if (tu_now_ms() - last >= 30000) {
            last = tu_now_ms();
            chaos__say(C, "waiting: %s: %lld, want %lld", what, v, want);
        }
        pthread_mutex_lock(&C->lock);
        chaos__check_children(C);
        pthread_mutex_unlock(&C->lock);
        tu_sleep_ms(200);
    }
}

int chaos_drain_ms(const chaos_t *C)
{
    return 180000 + (int)(C->events * 6);
}

/* ---- id sets ---- */

void chaos_ids_add(chaos_ids_t *s, const char *id)
{
    if (s->n == s->cap) {
        long cap = s->cap ? s->cap * 2 : 1024;
        void *v = realloc(s->v, (size_t)cap * sizeof(*s->v));
        CHECK(v, "oom");
        s->v = v;
        s->cap = cap;
    }
    snprintf(s->v[s->n++], sizeof(s->v[0]), "%s", id);
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

long chaos_ids_sort(chaos_ids_t *s, int dedupe)
{
    if (s->n)
        qsort(s->v, (size_t)s->n, sizeof(s->v[0]), cmp_id);
    long dups = 0, w = 0;
    for (long i = 0; i < s->n; i++) {
        if (i > 0 && !strcmp(s->v[i], s->v[i - 1])) {
            dups++;
            if (dedupe)
                continue;
        }
        if (w != i)
            memcpy(s->v[w], s->v[i], sizeof(s->v[0]));
        w++;
    }
    s->n = w;
    return dups;
}

static long lower_bound(const chaos_ids_t *s, const char *id)
{
    long lo = 0, hi = s->n;
    while (lo < hi) {
        long mid = (lo + hi) / 2;
        if (strcmp(s->v[mid], id) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int chaos_ids_has(const chaos_ids_t *s, const char *id)
{
    long i = lower_bound(s, id);
    return i < s->n && !strcmp(s->v[i], id);
}

long chaos_ids_count(const chaos_ids_t *s, const char *id)
{
    long n = 0;
    for (long i = lower_bound(s, id); i < s->n && !strcmp(s->v[i], id); i++)
        n++;
    return n;
}

void chaos_ids_free(chaos_ids_t *s)
{
    free(s->v);
    memset(s, 0, sizeof(*s));
}

long chaos_stream_scan(chaos_t *C, const char *stream,
                       void (*fn)(const char *id, const char *type, const char *event, void *ud),
                       void *ud)
{
    CHECK(!C->amqp, "chaos_stream_scan reads Redis streams only");
    redisContext *r = tu_redis_connect("127.0.0.1", C->redis_port);
    char start[64] = "-";
    long n = 0;
    for (;;) {
        redisReply *x = redisCommand(r, "XRANGE %s %s + COUNT 1000", stream, start);
        CHECK(x && x->type == REDIS_REPLY_ARRAY, "XRANGE %s: %s", stream,
              x && x->str ? x->str : r->errstr);
        if (x->elements == 0) {
            freeReplyObject(x);
            break;
        }
        for (size_t i = 0; i < x->elements; i++) {
            redisReply *e = x->element[i], *f = e->element[1];
            const char *id = "", *type = "", *event = "";
            for (size_t j = 0; j + 1 < f->elements; j += 2) {
                const char *name = f->element[j]->str;
                if (!strcmp(name, "id"))
                    id = f->element[j + 1]->str;
                else if (!strcmp(name, "type"))
                    type = f->element[j + 1]->str;
                else if (!strcmp(name, "event"))
                    event = f->element[j + 1]->str;
            }
            fn(id, type, event, ud);
            n++;
            snprintf(start, sizeof(start), "(%s", e->element[0]->str);
        }
        freeReplyObject(x);
    }
    redisFree(r);
    return n;
}

void chaos_log_ids(chaos_t *C, const char *kind, const char *needle, chaos_ids_t *ids)
{
    size_t nl = strlen(needle);
    for (int i = 0; i < C->nprocs; i++) {
        if (kind && strcmp(C->procs[i].kind, kind))
            continue;
        FILE *f = fopen(C->procs[i].log, "r");
        if (!f)
            continue;
        char *line = NULL;
        size_t cap = 0;
        while (getline(&line, &cap, f) > 0) {
            for (const char *p = line; (p = strstr(p, needle)); p += nl) {
                const char *w = p + nl;
                size_t len = strspn(w, "0123456789abcdefABCDEF-");
                char id[64];
                snprintf(id, sizeof(id), "%.*s", (int)(len < 63 ? len : 63), w);
                if (len)
                    chaos_ids_add(ids, id);
            }
        }
        free(line);
        fclose(f);
    }
}
