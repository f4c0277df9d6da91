/* The relay's admin endpoint: GET /metrics (Prometheus text format 0.0.4),
 * /healthz (process alive), /readyz (database reachable and broker not
 * down), and the dashboard with its JSON API (/, /api/..., see admin.c). Binds to metrics_addr,
 * 127.0.0.1:9464 by default (the next free port when that one is taken and the address was not set
 * explicitly). Counters are per worker and lock-free; pending count, oldest-pending age and
 * dead-letter size come from the store at scrape time, on the endpoint's own session, under a lock
 * no worker takes. */
#include <arpa/inet.h>
#include <jansson.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/conf.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/util.h"
#include "http/http.h"
#include "relay/admin.h"
#include "relay/relay_int.h"

static const double buckets[OUTBOX_BATCH_BUCKETS] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                     0.25,  0.5,   1,    2.5,   5,    10};

struct outbox_metrics_s {
    outbox_relay_t *relay;
    outbox_http_t *http;
    char addr[64];           /* where it listens */
    pthread_mutex_t db_lock; /* the scrape's own store session; no worker takes it */
    outbox_store_t *store;
    outbox_admin_t admin; /* dashboard, admin API, throughput samples */
};

/* ------------------------------------------------------------------------ */
/* Counting: each worker writes its own counters, lock-free.                 */

void outbox__metrics_count(outbox_worker_t *w, int what, const char *topic, uint64_t n)
{
    outbox_worker_metrics_t *m = &w->m;
    int nt = atomic_load_explicit(&m->ntopics, memory_order_relaxed); /* only this thread appends */
    int i;
    for (i = 0; i < nt; i++)
        if (!strcmp(m->topics[i].topic, topic))
            break;
    if (i == nt) {
        if (nt == OUTBOX_METRIC_TOPICS) {
            atomic_fetch_add_explicit(&m->other[what], n, memory_order_relaxed);
            return;
        }
        snprintf(m->topics[i].topic, sizeof(m->topics[i].topic), "%s", topic);
        atomic_store_explicit(&m->ntopics, nt + 1,
                              memory_order_release); /* publish the filled slot */
    }
    atomic_fetch_add_explicit(&m->topics[i].v[what], n, memory_order_relaxed);
}

void outbox__metrics_batch(outbox_worker_t *w, double seconds)
{
    outbox_worker_metrics_t *m = &w->m;
    for (int i = 0; i < OUTBOX_BATCH_BUCKETS; i++)
        if (seconds <= buckets[i])
            atomic_fetch_add_explicit(&m->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->batches, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->batch_us, (uint64_t)(seconds * 1e6), memory_order_relaxed);
}

/* ------------------------------------------------------------------------ */
/* Scraping                                                                  */

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

/* The scrape's store session, opened on demand; the caller holds db_lock. */
static outbox_store_t *session(struct outbox_metrics_s *m)
{
    if (!m->store) {
        char err[512];
        outbox_store_cfg_t cfg = {.url = m->relay->o.database_url,
                                  .table = m->relay->o.table,
                                  .appname = "outbox-relay metrics"};
        m->store = outbox__store_open(&cfg, err, sizeof(err));
    }
    return m->store;
}

/* The database gauges; the caller holds db_lock. 0 when the database is unreachable. */
static int db_gauges_locked(struct outbox_metrics_s *m, outbox_store_stats_t *st)
{
    char err[512];
    if (session(m) && m->store->ops->stats(m->store, st, err, sizeof(err)) == OUTBOX_OK)
        return 1;
    outbox__store_close(m->store); /* reconnect at the next scrape */
    m->store = NULL;
    return 0;
}

/* The database gauges, on the scrape's own session (opened on demand). */
static int db_gauges(struct outbox_metrics_s *m, outbox_store_stats_t *st)
{
    pthread_mutex_lock(&m->db_lock);
    int ok = db_gauges_locked(m, st);
    pthread_mutex_unlock(&m->db_lock);
    return ok;
}

static int broker_up(const outbox_relay_t *r)
{
    for (int i = 0; i < r->nworkers; i++)
        if (atomic_load(&r->workers[i].sink_down))
            return 0;
    return 1;
}

/* One counter family summed over workers, a series per topic. */
static void render_counter(outbox__buf_t *b, const outbox_relay_t *r, int what, const char *name,
                           const char *help)
{
    outbox__buf_printf(b, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    /* Topics in first-seen order across workers; each summed once. */
    for (int wi = 0; wi < r->nworkers; wi++) {
        const outbox_worker_metrics_t *m = &r->workers[wi].m;
        int nt = atomic_load_explicit(&m->ntopics, memory_order_acquire);
        for (int t = 0; t < nt; t++) {
            const char *topic = m->topics[t].topic;
            int seen = 0;
            for (int pw = 0; pw < wi && !seen; pw++) {
                const outbox_worker_metrics_t *pm = &r->workers[pw].m;
                int pn = atomic_load_explicit(&pm->ntopics, memory_order_acquire);
                for (int pt = 0; pt < pn && !seen; pt++)
                    seen = !strcmp(pm->topics[pt].topic, topic);
            }
            if (seen)
                continue;
            uint64_t sum = 0;
            for (int ow = wi; ow < r->nworkers; ow++) {
                const outbox_worker_metrics_t *om = &r->workers[ow].m;
                int on = atomic_load_explicit(&om->ntopics, memory_order_acquire);
                for (int ot = 0; ot < on; ot++)
                    if (!strcmp(om->topics[ot].topic, topic))
                        sum += atomic_load_explicit(&om->topics[ot].v[what], memory_order_relaxed);
            }
            char l[300];
            label(l, sizeof(l), topic);
            outbox__buf_printf(b, "%s{topic=\"%s\"} %llu\n", name, l, (unsigned long long)sum);
        }
    }
    uint64_t other = 0;
    for (int wi = 0; wi < r->nworkers; wi++)
        other += atomic_load_explicit(&r->workers[wi].m.other[what], memory_order_relaxed);
    if (other)
        outbox__buf_printf(b, "%s{topic=\"_other\"} %llu\n", name, (unsigned long long)other);
}

static void render(struct outbox_metrics_s *m, outbox__buf_t *b)
{
    outbox_relay_t *r = m->relay;
    render_counter(b, r, OUTBOX_M_PUBLISHED, "outbox_events_published_total",
                   "Events confirmed by the broker and acknowledged.");
    render_counter(b, r, OUTBOX_M_FAILED, "outbox_events_failed_total",
                   "Publish attempts that failed.");
    render_counter(b, r, OUTBOX_M_RETRIED, "outbox_events_retried_total",
                   "Failed events scheduled for another attempt.");
    render_counter(b, r, OUTBOX_M_DEAD, "outbox_events_dead_lettered_total",
                   "Events moved to the dead-letter table.");

    uint64_t bc[OUTBOX_BATCH_BUCKETS] = {0}, count = 0, us = 0;
    for (int wi = 0; wi < r->nworkers; wi++) {
        const outbox_worker_metrics_t *wm = &r->workers[wi].m;
        for (int i = 0; i < OUTBOX_BATCH_BUCKETS; i++)
            bc[i] += atomic_load_explicit(&wm->buckets[i], memory_order_relaxed);
        count += atomic_load_explicit(&wm->batches, memory_order_relaxed);
        us += atomic_load_explicit(&wm->batch_us, memory_order_relaxed);
    }
    outbox__buf_printf(b, "# HELP outbox_batch_duration_seconds Claim-publish-acknowledge time of "
                          "non-empty batches.\n"
                          "# TYPE outbox_batch_duration_seconds histogram\n");
    for (int i = 0; i < OUTBOX_BATCH_BUCKETS; i++)
        outbox__buf_printf(b, "outbox_batch_duration_seconds_bucket{le=\"%g\"} %llu\n", buckets[i],
                           (unsigned long long)bc[i]);
    outbox__buf_printf(b, "outbox_batch_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
                       (unsigned long long)count);
    outbox__buf_printf(b, "outbox_batch_duration_seconds_sum %.6f\n", (double)us / 1e6);
    outbox__buf_printf(b, "outbox_batch_duration_seconds_count %llu\n", (unsigned long long)count);

    /* Database gauges: queried outside any lock a worker takes. */
    outbox_store_stats_t st = {0};
    int up = db_gauges(m, &st);
    outbox__buf_printf(b,
                       "# HELP outbox_database_up 1 if the metrics endpoint reached the database.\n"
                       "# TYPE outbox_database_up gauge\noutbox_database_up %d\n",
                       up);
    if (up) {
        outbox__buf_printf(b,
                           "# HELP outbox_pending_events Events in the outbox not yet published.\n"
                           "# TYPE outbox_pending_events gauge\noutbox_pending_events %lld\n",
                           st.pending);
        outbox__buf_printf(
            b,
            "# HELP outbox_oldest_pending_age_seconds Age of the oldest unpublished event (lag).\n"
            "# TYPE outbox_oldest_pending_age_seconds gauge\noutbox_oldest_pending_age_seconds "
            "%.3f\n",
            st.oldest_age_s);
        outbox__buf_printf(b,
                           "# HELP outbox_dead_letters Events in the dead-letter table.\n"
                           "# TYPE outbox_dead_letters gauge\noutbox_dead_letters %lld\n",
                           st.dead);
        if (r->o.ack_mode == OUTBOX_ACK_MARK)
            outbox__buf_printf(
                b,
                "# HELP outbox_processed_events Acknowledged rows kept (ack_mode=mark).\n"
                "# TYPE outbox_processed_events gauge\noutbox_processed_events %lld\n",
                st.processed);
    }
    outbox__buf_printf(b, "# HELP outbox_worker_lanes Lanes held by each worker.\n# TYPE "
                          "outbox_worker_lanes gauge\n");
    for (int i = 0; i < r->nworkers; i++)
        outbox__buf_printf(b, "outbox_worker_lanes{worker=\"%s\"} %d\n", r->workers[i].name,
                           atomic_load(&r->workers[i].lanes_held));
    outbox__buf_printf(b,
                       "# HELP outbox_broker_up 0 while a worker finds the broker unreachable.\n"
                       "# TYPE outbox_broker_up gauge\noutbox_broker_up %d\n",
                       broker_up(r));
}

/* The security headers of every admin answer. */
static void secure(outbox_http_resp_t *resp)
{
    outbox__http_add_header(resp, "X-Content-Type-Options", "nosniff");
    if (!strncmp(resp->content_type, "text/html", 9)) {
        /* The page's own inline script and style, nothing from elsewhere, no framing. */
        outbox__http_add_header(resp, "Content-Security-Policy",
                                "default-src 'none'; script-src 'unsafe-inline'; style-src "
                                "'unsafe-inline'; connect-src 'self'; img-src 'self' data:; "
                                "frame-ancestors 'none'");
        outbox__http_add_header(resp, "X-Frame-Options", "DENY");
    }
    if (!strncmp(resp->content_type, "application/json", 16))
        outbox__http_add_header(resp, "Cache-Control", "no-store");
}

/* Takes json (may be NULL: out of memory). */
static void reply_json(outbox_http_resp_t *resp, unsigned status, char *json)
{
    if (!json)
        outbox__http_reply_raw(resp, 500, "text/plain", "out of memory\n", 14);
    else
        outbox__http_reply_raw(resp, status, "application/json", json, strlen(json));
    free(json);
    secure(resp);
}

static void get_dashboard(outbox_http_req_t *req, outbox_http_resp_t *resp, void *opaque)
{
    (void)req, (void)opaque;
    size_t len;
    const char *html = outbox__admin_html(&len);
    outbox__http_reply_raw(resp, 200, "text/html; charset=utf-8", html, len);
    secure(resp);
}

static void get_status(outbox_http_req_t *req, outbox_http_resp_t *resp, void *opaque)
{
    (void)req;
    struct outbox_metrics_s *m = opaque;
    outbox_store_stats_t st = {0};
    pthread_mutex_lock(&m->db_lock);
    int up = db_gauges_locked(m, &st);
    char *json =
        outbox__admin_status_json(&m->admin, m->store, up, &st, m->addr, broker_up(m->relay));
    pthread_mutex_unlock(&m->db_lock);
    reply_json(resp, 200, json);
}

static void post_requeue(outbox_http_req_t *req, outbox_http_resp_t *resp, void *opaque)
{
    struct outbox_metrics_s *m = opaque;
    const char *why = NULL;
    int st = outbox__admin_authorize(&m->admin, outbox__http_header(req, "Authorization"),
                                     outbox__http_header(req, "Content-Type"),
                                     outbox__http_header(req, "Origin"),
                                     outbox__http_header(req, "Host"), &why);
    if (st) {
        json_t *e = json_pack("{s:s}", "error", why);
        char *text = json_dumps(e, JSON_COMPACT);
        json_decref(e);
        outbox__log(OUTBOX_LOG_WARN, "relay", "admin_refused", why, "url", req->path, NULL);
        reply_json(resp, (unsigned)st, text);
        return;
    }
    char *out = NULL;
    pthread_mutex_lock(&m->db_lock);
    if (!strcmp(req->path, "/api/consumer-dlq/requeue"))
        st = outbox__admin_consumer_requeue(&m->admin, session(m), req->body, req->body_len, &out);
    else
        st = outbox__admin_requeue(&m->admin, session(m), req->body, req->body_len, &out);
    pthread_mutex_unlock(&m->db_lock);
    reply_json(resp, (unsigned)st, out);
}

static const outbox_http_route_t admin_routes[] = {
    {"GET", "/", get_dashboard, 0},
    {"GET", "/dashboard", get_dashboard, 0},
    {"GET", "/api/status", get_status, 0},
    {"POST", "/api/dlq/requeue", post_requeue, 0},
    {"POST", "/api/consumer-dlq/requeue", post_requeue, 0},
    {NULL, NULL, NULL, 0},
};

/* GET /readyz: the database reachable and no sink down. */
static int admin_ready(void *opaque, char *why, size_t why_size)
{
    struct outbox_metrics_s *m = opaque;
    outbox_store_stats_t st;
    if (!db_gauges(m, &st)) {
        snprintf(why, why_size, "database unreachable");
        return -1;
    }
    if (!broker_up(m->relay)) {
        snprintf(why, why_size, "broker unreachable");
        return -1;
    }
    return 0;
}

static void admin_metrics(void *opaque, outbox__buf_t *b)
{
    render(opaque, b);
}

static outbox_http_t *listen_on(struct outbox_metrics_s *m, const char *host, int port, char *err,
                                size_t err_size)
{
    outbox_http_opts_t o = {.name = "relay-admin",
                            .addr = host,
                            .port = port,
                            .max_body = 4096,
                            .max_connections = 64,
                            .timeout_s = 30,
                            .routes = admin_routes,
                            .opaque = m,
                            .ready = admin_ready,
                            .metrics = admin_metrics,
                            .quiet = 1};
    return outbox__http_start(&o, err, err_size);
}

/* How many ports after the default one a relay tries when it is taken, so
 * several relays on one host work out of the box. */
#define METRICS_PORT_TRIES 32

struct outbox_metrics_s *outbox__metrics_start(outbox_relay_t *relay, const char *addr,
                                               int explicit_addr, char *errstr, size_t errstr_size)
{
    char host[128];
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || !colon[1]) {
        outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size, "metrics_addr \"%s\" must be host:port",
                    addr);
        return NULL;
    }
    snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
    int port = atoi(colon + 1);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    if (port < 0 || port > 65535 ||
        inet_pton(AF_INET, !strcmp(host, "localhost") ? "127.0.0.1" : host, &sa.sin_addr) != 1) {
        outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                    "metrics_addr \"%s\": need an IPv4 address and port, e.g. 127.0.0.1:9464",
                    addr);
        return NULL;
    }
    struct outbox_metrics_s *m = calloc(1, sizeof(*m));
    if (!m) {
        outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
        return NULL;
    }
    m->relay = relay;
    pthread_mutex_init(&m->db_lock, NULL);
    int loopback = (ntohl(sa.sin_addr.s_addr) >> 24) == 127;
    if (outbox__admin_init(&m->admin, relay, loopback, errstr, errstr_size) != OUTBOX_OK) {
        pthread_mutex_destroy(&m->db_lock);
        free(m);
        return NULL;
    }
    /* An address the user chose is used as given; the default port moves on
     * to the next free one when another relay on this host has it. */
    int tries = explicit_addr || port == 0 ? 1 : METRICS_PORT_TRIES, p = port;
    char why[256] = "unknown reason";
    for (int i = 0; i < tries && !m->http && p <= 65535; i++, p++)
        m->http =
            listen_on(m, !strcmp(host, "localhost") ? "127.0.0.1" : host, p, why, sizeof(why));
    if (!m->http) {
        if (explicit_addr)
            outbox__err(OUTBOX_ERR_IO, errstr, errstr_size,
                        "cannot listen on metrics_addr %s: %s (choose another OUTBOX_METRICS_ADDR, "
                        "or \"off\")",
                        addr, why);
        else
            outbox__err(OUTBOX_ERR_IO, errstr, errstr_size,
                        "cannot listen on metrics_addr %s nor the %d ports after it: %s (set "
                        "OUTBOX_METRICS_ADDR, or "
                        "\"off\")",
                        addr, METRICS_PORT_TRIES - 1, why);
        outbox__admin_term(&m->admin);
        pthread_mutex_destroy(&m->db_lock);
        free(m);
        return NULL;
    }
    snprintf(m->addr, sizeof(m->addr), "%s:%d", host, outbox__http_port(m->http));
    if (p - 1 != port && port != 0)
        outbox__log(
            OUTBOX_LOG_WARN, "relay", "metrics_port_moved",
            "default metrics port taken (another relay on this host?): using the next free one",
            "wanted", addr, "addr", m->addr, NULL);
    char dash[96];
    snprintf(dash, sizeof(dash), "http://%s/", m->addr);
    outbox__log(OUTBOX_LOG_INFO, "relay", "metrics_listening",
                "serving /metrics /healthz /readyz and the dashboard", "addr", m->addr, "dashboard",
                dash, NULL);
    return m;
}

void outbox__metrics_stop(struct outbox_metrics_s *m)
{
    if (!m)
        return;
    outbox__http_stop(m->http, 1000);
    outbox__admin_term(&m->admin);
    outbox__store_close(m->store);
    pthread_mutex_destroy(&m->db_lock);
    free(m);
}
