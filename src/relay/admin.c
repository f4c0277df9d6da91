/* The relay's admin API and dashboard, on the metrics server (metrics.c):
 *
 *   GET  /                   the dashboard: one self-contained HTML page
 *                            (src/relay/dashboard.html, embedded at build time)
 *   GET  /api/status         JSON the page polls: health, pending and lag per
 *                            topic, throughput history, lanes, dead letters
 *   POST /api/dlq/requeue    {"id": UUID}: a dead letter back at the head of its key
 *   POST /api/consumer-dlq/requeue {"id": N}: a consumer dead letter handed back
 *                            to its group (outboxctl consumer-dlq requeue)
 *
 * Actions (POST) are allowed without a token only when the admin address is
 * loopback; otherwise admin_token must be set and sent as "Authorization:
 * Bearer TOKEN". Whatever the address, a set admin_token is required, the
 * body must be application/json (a cross-site form cannot send that without
 * a CORS preflight, which this server does not grant) and an Origin header,
 * when present, must name this server. The token is never logged.
 *
 * Store calls run on the metrics server's own session, under its lock; no
 * worker takes it. Throughput is sampled by a thread every
 * OUTBOX_ADMIN_SAMPLE_S seconds into a ring the page draws. */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/util.h"
#include "relay/admin.h"

extern const char outbox__dashboard_html[];
extern const size_t outbox__dashboard_html_len;

/* ------------------------------------------------------------------------ */
/* Throughput samples                                                        */

static uint64_t sum_counter(const outbox_relay_t *r, int what)
{
    uint64_t sum = 0;
    for (int wi = 0; wi < r->nworkers; wi++) {
        const outbox_worker_metrics_t *m = &r->workers[wi].m;
        int nt = atomic_load_explicit(&m->ntopics, memory_order_acquire);
        for (int t = 0; t < nt; t++)
            sum += atomic_load_explicit(&m->topics[t].v[what], memory_order_relaxed);
        sum += atomic_load_explicit(&m->other[what], memory_order_relaxed);
    }
    return sum;
}

static double wall_s(void)
{
    return (double)outbox__wall_us() / 1e6;
}

static void take_sample(outbox_admin_t *a)
{
    outbox_admin_sample_t s = {.t = wall_s(),
                               .published = sum_counter(a->relay, OUTBOX_M_PUBLISHED),
                               .failed = sum_counter(a->relay, OUTBOX_M_FAILED),
                               .dead = sum_counter(a->relay, OUTBOX_M_DEAD)};
    pthread_mutex_lock(&a->lock);
    a->samples[(a->first + a->n) % OUTBOX_ADMIN_SAMPLES] = s;
    if (a->n < OUTBOX_ADMIN_SAMPLES)
        a->n++;
    else
        a->first = (a->first + 1) % OUTBOX_ADMIN_SAMPLES;
    pthread_mutex_unlock(&a->lock);
}

static void *sampler(void *arg)
{
    outbox_admin_t *a = arg;
    outbox__thread_name("relay-metrics");
    take_sample(a);
    pthread_mutex_lock(&a->lock);
    while (!a->stopping) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += OUTBOX_ADMIN_SAMPLE_S;
        pthread_cond_timedwait(&a->wake, &a->lock, &until);
        if (a->stopping)
            break;
        pthread_mutex_unlock(&a->lock);
        take_sample(a);
        pthread_mutex_lock(&a->lock);
    }
    pthread_mutex_unlock(&a->lock);
    return NULL;
}

outbox_err_t outbox__admin_init(outbox_admin_t *a, outbox_relay_t *relay, int loopback,
                                char *errstr, size_t errstr_size)
{
    memset(a, 0, sizeof(*a));
    a->relay = relay;
    a->loopback = loopback;
    snprintf(a->token, sizeof(a->token), "%s", outbox__conf_str(relay->conf, "admin_token"));
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->wake, NULL);
    if (pthread_create(&a->thread, NULL, sampler, a)) {
        pthread_cond_destroy(&a->wake);
        pthread_mutex_destroy(&a->lock);
        return outbox__err(OUTBOX_ERR_IO, errstr, errstr_size, "cannot start the sampler thread");
    }
    a->started = 1;
    if (!loopback && !a->token[0])
        outbox__log(OUTBOX_LOG_WARN, "relay", "admin_actions_disabled",
                    "the admin address is not loopback and admin_token is not set: the "
                    "dashboard is read-only",
                    NULL);
    return OUTBOX_OK;
}

void outbox__admin_term(outbox_admin_t *a)
{
    if (!a->started)
        return;
    pthread_mutex_lock(&a->lock);
    a->stopping = 1;
    pthread_cond_signal(&a->wake);
    pthread_mutex_unlock(&a->lock);
    pthread_join(a->thread, NULL);
    pthread_cond_destroy(&a->wake);
    pthread_mutex_destroy(&a->lock);
    a->started = 0;
}

/* ------------------------------------------------------------------------ */
/* GET /api/status                                                           */

static void add_topic(void *arg, const outbox_topic_stats_t *t)
{
    json_array_append_new(arg,
                          json_pack("{s:s, s:I, s:I, s:f}", "topic", t->topic, "pending",
                                    (json_int_t)t->pending, "retrying", (json_int_t)t->retrying,
                                    "oldest_pending_age_seconds", t->oldest_age_s));
}

typedef struct lanes_arg_s {
    json_t *list;
    const char *relay_name;
} lanes_arg_t;

static void add_lanes(void *arg, const outbox_lane_holder_t *h)
{
    lanes_arg_t *l = arg;
    /* Worker sessions are labelled "outbox-relay NAME worker-N". */
    char mine[160];
    snprintf(mine, sizeof(mine), "outbox-relay %.40s ", l->relay_name);
    json_array_append_new(l->list, json_pack("{s:s, s:i, s:i, s:s, s:b}", "holder", h->holder,
                                             "pid", h->pid, "count", h->count, "lanes", h->lanes,
                                             "mine", !strncmp(h->holder, mine, strlen(mine))));
}

static void add_dead(void *arg, const outbox_dead_letter_t *d)
{
    json_array_append_new(arg, json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:s, s:s}", "id", d->id,
                                         "topic", d->topic, "type", d->type, "key", d->key,
                                         "attempts", d->attempts, "reason", d->reason, "dead_at",
                                         d->dead_at, "last_error", d->last_error));
}

static void add_consumer_dead(void *arg, const outbox_consumer_dead_t *d)
{
    json_array_append_new(
        arg,
        json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:i, s:s, s:s, s:s, s:b}", "id",
                  (json_int_t)d->id, "consumer", d->group, "message_id", d->message_id, "topic",
                  d->topic, "type", d->type ? d->type : "", "key", d->key ? d->key : "", "attempts",
                  d->attempts, "reason", d->reason ? d->reason : "", "dead_at",
                  d->dead_at ? d->dead_at : "", "last_error", d->last_error ? d->last_error : "",
                  "requeued", d->requeued_at && *d->requeued_at));
}

/* Published per topic, summed over workers (first-seen order). */
static json_t *published_by_topic(const outbox_relay_t *r)
{
    json_t *out = json_array();
    for (int wi = 0; wi < r->nworkers; wi++) {
        const outbox_worker_metrics_t *m = &r->workers[wi].m;
        int nt = atomic_load_explicit(&m->ntopics, memory_order_acquire);
        for (int t = 0; t < nt; t++) {
            const char *topic = m->topics[t].topic;
            uint64_t v =
                atomic_load_explicit(&m->topics[t].v[OUTBOX_M_PUBLISHED], memory_order_relaxed);
            size_t i;
            json_t *e = NULL;
            json_array_foreach(out, i, e)
            {
                if (!strcmp(json_string_value(json_object_get(e, "topic")), topic))
                    break;
            }
            if (i < json_array_size(out))
                json_object_set_new(
                    e, "published",
                    json_integer(json_integer_value(json_object_get(e, "published")) +
                                 (json_int_t)v));
            else
                json_array_append_new(
                    out, json_pack("{s:s, s:I}", "topic", topic, "published", (json_int_t)v));
        }
    }
    return out;
}

char *outbox__admin_status_json(outbox_admin_t *a, outbox_store_t *store, int db_up,
                                const outbox_store_stats_t *st, const char *addr, int broker_up)
{
    outbox_relay_t *r = a->relay;
    char sink[1024], err[512];
    outbox__redact_url(r->sink_url, sink, sizeof(sink));
    json_t *o = json_object();
    json_object_set_new(o, "relay", json_string(r->name));
    json_object_set_new(o, "version", json_string(OUTBOX_VERSION_STR));
    json_object_set_new(o, "table", json_string(r->o.table));
    json_object_set_new(o, "sink", json_string(sink));
    json_object_set_new(o, "admin_addr", json_string(addr));
    json_object_set_new(o, "time", json_real(wall_s()));
    json_object_set_new(o, "database_up", json_boolean(db_up));
    json_object_set_new(o, "broker_up", json_boolean(broker_up));
    json_t *topics = json_array(), *lanes = json_array(), *dead = json_array();
    if (db_up) {
        json_object_set_new(o, "pending", json_integer(st->pending));
        json_object_set_new(o, "retrying", json_integer(st->retrying));
        json_object_set_new(o, "oldest_pending_age_seconds", json_real(st->oldest_age_s));
        json_object_set_new(o, "dead_letters", json_integer(st->dead));
        json_object_set_new(o, "processed", json_integer(st->processed));
        /* Status and listing errors leave the lists empty; the gauges above say up. */
        store->ops->topic_stats(store, add_topic, topics, err, sizeof(err));
        lanes_arg_t la = {lanes, r->name};
        store->ops->lane_holders(store, add_lanes, &la, err, sizeof(err));
        if (store->ops->dlq_list)
            store->ops->dlq_list(store, NULL, NULL, OUTBOX_ADMIN_DLQ_ROWS, add_dead, dead, err,
                                 sizeof(err));
    }
    json_object_set_new(o, "topics", topics);
    json_object_set_new(o, "lanes", lanes);
    json_object_set_new(o, "lane_count", json_integer(OUTBOX_LANES));
    json_object_set_new(o, "dead_letter_list", dead);
    /* Consumer dead letters (outbox_consumer_dead_letter, in this database
     * when the consumers share it, as the services do): listed when the table
     * is there; the page shows the section as soon as the key is present. */
    if (db_up && store->ops->cdl_list) {
        json_t *cdl = json_array();
        if (store->ops->cdl_list(store, NULL, NULL, 0, OUTBOX_ADMIN_DLQ_ROWS, add_consumer_dead,
                                 cdl, err, sizeof(err)) == OUTBOX_OK)
            json_object_set_new(o, "consumer_dead_letters", cdl);
        else
            json_decref(cdl); /* no such table here: no section */
    }
    json_t *workers = json_array();
    for (int i = 0; i < r->nworkers; i++)
        json_array_append_new(workers,
                              json_pack("{s:s, s:i, s:b}", "name", r->workers[i].name, "lanes",
                                        atomic_load(&r->workers[i].lanes_held), "broker_down",
                                        (int)atomic_load(&r->workers[i].sink_down)));
    json_object_set_new(o, "workers", workers);
    json_object_set_new(o, "published_total",
                        json_integer((json_int_t)sum_counter(r, OUTBOX_M_PUBLISHED)));
    json_object_set_new(o, "failed_total",
                        json_integer((json_int_t)sum_counter(r, OUTBOX_M_FAILED)));
    json_object_set_new(o, "published_by_topic", published_by_topic(r));
    json_t *samples = json_array();
    pthread_mutex_lock(&a->lock);
    for (int i = 0; i < a->n; i++) {
        const outbox_admin_sample_t *s = &a->samples[(a->first + i) % OUTBOX_ADMIN_SAMPLES];
        json_array_append_new(samples,
                              json_pack("{s:f, s:I, s:I, s:I}", "t", s->t, "published",
                                        (json_int_t)s->published, "failed", (json_int_t)s->failed,
                                        "dead", (json_int_t)s->dead));
    }
    pthread_mutex_unlock(&a->lock);
    /* The current counters as the last point, so the chart reaches "now". */
    json_array_append_new(samples, json_pack("{s:f, s:I, s:I, s:I}", "t", wall_s(), "published",
                                             (json_int_t)sum_counter(r, OUTBOX_M_PUBLISHED),
                                             "failed", (json_int_t)sum_counter(r, OUTBOX_M_FAILED),
                                             "dead", (json_int_t)sum_counter(r, OUTBOX_M_DEAD)));
    json_object_set_new(o, "throughput", samples);
    json_object_set_new(o, "sample_interval_seconds", json_integer(OUTBOX_ADMIN_SAMPLE_S));
    json_object_set_new(o, "requeue_enabled", json_boolean(a->loopback || a->token[0]));
    json_object_set_new(o, "requeue_requires_token", json_boolean(a->token[0] != '\0'));
    char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return text;
}

/* ------------------------------------------------------------------------ */
/* POST /api/dlq/requeue                                                     */

/* Equal strings, in time independent of where they differ. */
static int same_secret(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = (unsigned char)(la != lb);
    for (size_t i = 0; i < la; i++)
        d |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
    return d == 0;
}

int outbox__admin_authorize(const outbox_admin_t *a, const char *authorization,
                            const char *content_type, const char *origin, const char *host,
                            const char **why)
{
    if (!content_type || strncmp(content_type, "application/json", 16)) {
        *why = "the body must be application/json";
        return 415;
    }
    if (origin && *origin && strcmp(origin, "null")) {
        const char *o = strstr(origin, "://");
        if (!host || !o || strcmp(o + 3, host)) {
            *why = "cross-origin request refused";
            return 403;
        }
    }
    if (a->token[0]) {
        if (!authorization || strncmp(authorization, "Bearer ", 7) ||
            !same_secret(authorization + 7, a->token)) {
            *why = "missing or wrong bearer token (admin_token)";
            return 401;
        }
        return 0;
    }
    if (!a->loopback) {
        *why = "admin actions need admin_token when the admin address is not loopback";
        return 403;
    }
    return 0;
}

int outbox__admin_requeue(outbox_admin_t *a, outbox_store_t *store, const char *body, size_t len,
                          char **reply)
{
    json_error_t jerr;
    json_t *in = json_loadb(body ? body : "", len, 0, &jerr);
    const char *id = in ? json_string_value(json_object_get(in, "id")) : NULL;
    int status;
    char err[512];
    json_t *out;
    if (!id || !outbox_uuid_valid(id)) {
        status = 400;
        out = json_pack("{s:s}", "error", "want {\"id\": \"<dead letter UUID>\"}");
    } else if (!store || !store->ops->dlq_requeue) {
        status = 503;
        out = json_pack("{s:s}", "error", "database unreachable");
    } else {
        long long n = 0;
        outbox_err_t e = store->ops->dlq_requeue(store, id, &n, err, sizeof(err));
        if (e) {
            status = 500;
            out = json_pack("{s:s}", "error", err);
        } else if (!n) {
            status = 404;
            out = json_pack("{s:s}", "error", "no dead letter with that id");
        } else {
            status = 200;
            out = json_pack("{s:s, s:I}", "id", id, "requeued", (json_int_t)n);
            char nbuf[24];
            snprintf(nbuf, sizeof(nbuf), "%lld", n);
            outbox__log(OUTBOX_LOG_INFO, "relay", "dlq_requeued",
                        "dead letter requeued from the admin API", "id", id, "events", nbuf, NULL);
        }
    }
    json_decref(in);
    *reply = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    return status;
}

int outbox__admin_consumer_requeue(outbox_admin_t *a, outbox_store_t *store, const char *body,
                                   size_t len, char **reply)
{
    (void)a;
    json_error_t jerr;
    json_t *in = json_loadb(body ? body : "", len, 0, &jerr);
    json_t *idv = in ? json_object_get(in, "id") : NULL;
    long long id = json_is_integer(idv) ? (long long)json_integer_value(idv) : 0;
    int status;
    char err[512];
    json_t *out;
    if (id <= 0) {
        status = 400;
        out = json_pack("{s:s}", "error", "want {\"id\": <consumer dead letter id>}");
    } else if (!store || !store->ops->cdl_requeue) {
        status = 503;
        out = json_pack("{s:s}", "error", "database unreachable");
    } else {
        long long n = 0;
        if (store->ops->cdl_requeue(store, id, NULL, &n, err, sizeof(err))) {
            status = 500;
            out = json_pack("{s:s}", "error", err);
        } else if (!n) {
            status = 404;
            out = json_pack("{s:s}", "error", "no consumer dead letter with that id");
        } else {
            status = 200;
            out = json_pack("{s:I, s:I}", "id", (json_int_t)id, "requeued", (json_int_t)n);
            char idbuf[24];
            snprintf(idbuf, sizeof(idbuf), "%lld", id);
            outbox__log(OUTBOX_LOG_INFO, "relay", "consumer_dlq_requeued",
                        "consumer dead letter requeued from the admin API: its group's consumers "
                        "hand it to their handler again",
                        "id", idbuf, NULL);
        }
    }
    json_decref(in);
    *reply = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    return status;
}

const char *outbox__admin_html(size_t *len)
{
    *len = outbox__dashboard_html_len;
    return outbox__dashboard_html;
}
