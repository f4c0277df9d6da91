/* The relay's admin endpoint: GET /metrics (Prometheus text format 0.0.4),
 * /healthz (process alive), /readyz (database reachable and broker not
 * down). Binds to metrics_addr, 127.0.0.1:9464 by default. Pending count,
 * oldest-pending age and dead-letter size are read from the database at
 * scrape time on the endpoint's own connection. */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/conf.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/util.h"
#include "relay/relay_int.h"

#define MAX_SERIES 512
static const double buckets[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define NBUCKETS (sizeof(buckets) / sizeof(buckets[0]))

typedef struct series_s {
    char what[24];
    char topic[128];
    uint64_t value;
} series_t;

struct outbox_metrics_s {
    outbox_relay_t *relay;
    struct MHD_Daemon *daemon;
    pthread_mutex_t lock;
    series_t series[MAX_SERIES];
    int nseries;
    uint64_t bucket_counts[NBUCKETS];
    uint64_t batch_count;
    double batch_sum;
    PGconn *conn; /* scrape-time queries; guarded by lock */
};

void outbox__metrics_count(struct outbox_metrics_s *m, const char *what, const char *topic, uint64_t n)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    int i;
    for (i = 0; i < m->nseries; i++)
        if (!strcmp(m->series[i].what, what) && !strcmp(m->series[i].topic, topic))
            break;
    if (i == m->nseries && m->nseries < MAX_SERIES) {
        snprintf(m->series[i].what, sizeof(m->series[i].what), "%s", what);
        snprintf(m->series[i].topic, sizeof(m->series[i].topic), "%s", topic);
        m->nseries++;
    }
    if (i < m->nseries)
        m->series[i].value += n;
    pthread_mutex_unlock(&m->lock);
}

void outbox__metrics_batch(struct outbox_metrics_s *m, double seconds)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < NBUCKETS; i++)
        if (seconds <= buckets[i])
            m->bucket_counts[i]++;
    m->batch_count++;
    m->batch_sum += seconds;
    pthread_mutex_unlock(&m->lock);
}


/* Label values: escape backslash, quote and newline. */
static void label(char *out, size_t size, const char *in)
{
    size_t n = 0;
    for (; *in && n + 2 < size; in++) {
        if (*in == '\\' || *in == '"' || *in == '\n') {
            out[n++] = '\\';
            out[n++] = *in == '\n' ? 'n' : *in;
        } else {
            out[n++] = *in;
        }
    }
    out[n] = '\0';
}

/* Runs the scrape-time query; 0 on success. Caller holds m->lock. */
static int db_gauges(struct outbox_metrics_s *m, long long *pending, double *oldest, long long *dead)
{
    if (!m->conn || PQstatus(m->conn) != CONNECTION_OK) {
        PQfinish(m->conn);
        m->conn = outbox__pg_connect(outbox__conf_database_url(m->relay->conf), "outbox-relay metrics",
                                     NULL, 0);
        if (!m->conn)
            return -1;
    }
    PGresult *r = PQexec(m->conn,
                         "SELECT (SELECT count(*) FROM outbox),"
                         " COALESCE((SELECT extract(epoch FROM now() - min(created_at)) FROM outbox), 0),"
                         " (SELECT count(*) FROM outbox_dead_letter)");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        PQclear(r);
        PQfinish(m->conn);
        m->conn = NULL;
        return -1;
    }
    *pending = atoll(PQgetvalue(r, 0, 0));
    *oldest = atof(PQgetvalue(r, 0, 1));
    *dead = atoll(PQgetvalue(r, 0, 2));
    PQclear(r);
    return 0;
}

static void render(struct outbox_metrics_s *m, outbox__buf_t *b)
{
    static const struct {
        const char *what, *name, *help;
    } counters[] = {
        {"published", "outbox_events_published_total", "Events confirmed by the broker and acknowledged."},
        {"failed", "outbox_events_failed_total", "Publish attempts that failed."},
        {"retried", "outbox_events_retried_total", "Failed events scheduled for another attempt."},
        {"dead_lettered", "outbox_events_dead_lettered_total", "Events moved to the dead-letter table."},
    };
    pthread_mutex_lock(&m->lock);
    for (size_t c = 0; c < sizeof(counters) / sizeof(counters[0]); c++) {
        outbox__buf_printf(b, "# HELP %s %s\n# TYPE %s counter\n", counters[c].name, counters[c].help, counters[c].name);
        for (int i = 0; i < m->nseries; i++) {
            if (strcmp(m->series[i].what, counters[c].what))
                continue;
            char t[300];
            label(t, sizeof(t), m->series[i].topic);
            outbox__buf_printf(b, "%s{topic=\"%s\"} %llu\n", counters[c].name, t, (unsigned long long)m->series[i].value);
        }
    }
    outbox__buf_printf(b, "# HELP outbox_batch_duration_seconds Claim-publish-acknowledge time of non-empty batches.\n"
               "# TYPE outbox_batch_duration_seconds histogram\n");
    for (size_t i = 0; i < NBUCKETS; i++)
        outbox__buf_printf(b, "outbox_batch_duration_seconds_bucket{le=\"%g\"} %llu\n", buckets[i],
                (unsigned long long)m->bucket_counts[i]);
    outbox__buf_printf(b, "outbox_batch_duration_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)m->batch_count);
    outbox__buf_printf(b, "outbox_batch_duration_seconds_sum %.6f\n", m->batch_sum);
    outbox__buf_printf(b, "outbox_batch_duration_seconds_count %llu\n", (unsigned long long)m->batch_count);

    long long pending = 0, dead = 0;
    double oldest = 0;
    int up = db_gauges(m, &pending, &oldest, &dead) == 0;
    pthread_mutex_unlock(&m->lock);

    outbox__buf_printf(b, "# HELP outbox_database_up 1 if the metrics endpoint reached the database.\n"
               "# TYPE outbox_database_up gauge\noutbox_database_up %d\n", up);
    if (up) {
        outbox__buf_printf(b, "# HELP outbox_pending_events Events in the outbox not yet published.\n"
                   "# TYPE outbox_pending_events gauge\noutbox_pending_events %lld\n", pending);
        outbox__buf_printf(b, "# HELP outbox_oldest_pending_age_seconds Age of the oldest unpublished event (lag).\n"
                   "# TYPE outbox_oldest_pending_age_seconds gauge\noutbox_oldest_pending_age_seconds %.3f\n",
                oldest);
        outbox__buf_printf(b, "# HELP outbox_dead_letters Events in the dead-letter table.\n"
                   "# TYPE outbox_dead_letters gauge\noutbox_dead_letters %lld\n", dead);
    }
    outbox_relay_t *r = m->relay;
    outbox__buf_printf(b, "# HELP outbox_worker_lanes Lanes held by each worker.\n# TYPE outbox_worker_lanes gauge\n");
    for (int i = 0; i < r->nworkers; i++)
        outbox__buf_printf(b, "outbox_worker_lanes{worker=\"%s\"} %d\n", r->workers[i].name,
                atomic_load(&r->workers[i].lanes_held));
    outbox__buf_printf(b, "# HELP outbox_broker_up 0 while a worker finds the broker unreachable.\n"
               "# TYPE outbox_broker_up gauge\n");
    int broker_up = 1;
    for (int i = 0; i < r->nworkers; i++)
        if (r->workers[i].sink_down)
            broker_up = 0;
    outbox__buf_printf(b, "outbox_broker_up %d\n", broker_up);
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *ctype, char *body,
                             size_t len, int take)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        len, body, take ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", ctype);
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *upload, size_t *upload_size, void **ctx)
{
    struct outbox_metrics_s *m = cls;
    if (strcmp(method, "GET") && strcmp(method, "HEAD"))
        return reply(c, 405, "text/plain", "method not allowed\n", 19, 0);
    if (!strcmp(url, "/metrics")) {
        outbox__buf_t b = {0};
        render(m, &b);
        if (!b.p || b.broken) {
            free(b.p);
            return reply(c, 500, "text/plain", "out of memory\n", 14, 0);
        }
        return reply(c, 200, "text/plain; version=0.0.4", b.p, b.len, 1);
    }
    if (!strcmp(url, "/healthz"))
        return reply(c, 200, "text/plain", "ok\n", 3, 0);
    if (!strcmp(url, "/readyz")) {
        long long p, d;
        double o;
        pthread_mutex_lock(&m->lock);
        int up = db_gauges(m, &p, &o, &d) == 0;
        pthread_mutex_unlock(&m->lock);
        int broker_up = 1;
        for (int i = 0; i < m->relay->nworkers; i++)
            if (m->relay->workers[i].sink_down)
                broker_up = 0;
        if (!up)
            return reply(c, 503, "text/plain", "database unreachable\n", 21, 0);
        if (!broker_up)
            return reply(c, 503, "text/plain", "broker unreachable\n", 19, 0);
        return reply(c, 200, "text/plain", "ready\n", 6, 0);
    }
    return reply(c, 404, "text/plain", "not found\n", 10, 0);
}

struct outbox_metrics_s *outbox__metrics_start(outbox_relay_t *relay, const char *addr, char *errstr,
                                               size_t errstr_size)
{
    char host[128];
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || !colon[1]) {
        outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size, "metrics_addr \"%s\" must be host:port", addr);
        return NULL;
    }
    snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
    int port = atoi(colon + 1);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (port < 0 || port > 65535 ||
        inet_pton(AF_INET, !strcmp(host, "localhost") ? "127.0.0.1" : host, &sa.sin_addr) != 1) {
        outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                    "metrics_addr \"%s\": need an IPv4 address and port, e.g. 127.0.0.1:9464", addr);
        return NULL;
    }
    struct outbox_metrics_s *m = calloc(1, sizeof(*m));
    if (!m) {
        outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
        return NULL;
    }
    m->relay = relay;
    pthread_mutex_init(&m->lock, NULL);
    m->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, (uint16_t)port, NULL,
                                 NULL, handler, m, MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_END);
    if (!m->daemon) {
        outbox__err(OUTBOX_ERR_IO, errstr, errstr_size,
                    "cannot listen on metrics_addr %s (in use? set OUTBOX_METRICS_ADDR or \"off\")", addr);
        pthread_mutex_destroy(&m->lock);
        free(m);
        return NULL;
    }
    outbox__log(OUTBOX_LOG_INFO, "relay", "metrics_listening", "serving /metrics /healthz /readyz",
                "addr", addr, NULL);
    return m;
}

void outbox__metrics_stop(struct outbox_metrics_s *m)
{
    if (!m)
        return;
    MHD_stop_daemon(m->daemon);
    PQfinish(m->conn);
    pthread_mutex_destroy(&m->lock);
    free(m);
}
