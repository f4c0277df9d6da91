/* The relay's admin endpoint: /metrics in Prometheus text format with the
 * published/failed/retried/dead-lettered counters by topic, pending gauge,
 * oldest-pending age, batch latency histogram and lanes; /healthz;
 * /readyz (503 while the broker is down). Binds 127.0.0.1 by default. */
#include <curl/curl.h>

#include "relay_common.h"

typedef struct {
    char buf[65536];
    size_t len;
} body_t;

static size_t on_data(char *p, size_t sz, size_t n, void *ud)
{
    body_t *b = ud;
    size_t k = sz * n;
    if (b->len + k >= sizeof(b->buf))
        k = sizeof(b->buf) - b->len - 1;
    memcpy(b->buf + b->len, p, k);
    b->len += k;
    b->buf[b->len] = '\0';
    return sz * n;
}

static long get(const char *url, body_t *b)
{
    b->len = 0;
    b->buf[0] = '\0';
    CURL *h = curl_easy_init();
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, tu_ms(10000));
    long code = 0;
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(h);
    return code;
}

int main(void)
{
    PGconn *c;
    const char *ci = setup_db("relay_metrics", &c);
    char err[512], addr[64], url[128];
    int rport = tu_free_port(), mport = tu_free_port();
    pid_t redis = tu_redis_server_start(rport);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", mport);
    outbox_conf_t *conf = relay_conf(ci, "127.0.0.1", rport);
    conf_set(conf, "metrics_addr", addr);
    conf_set(conf, "fault_poison_type", "Poison");
    conf_set(conf, "max_attempts", "2");
    conf_set(conf, "backoff_base", "10ms");
    conf_set(conf, "broker_probe_max", "200ms");
    outbox_relay_t *relay = outbox_relay_new(conf, err, sizeof(err));
    CHECK(relay && outbox_relay_start(relay, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    enqueue_many(c, "metrics-topic", 300, 30, 100, NULL);
    PQclear(tu_exec(c, "BEGIN"));
    outbox_event_t poison = {
        .topic = "metrics-topic", .type = "Poison", .key = "px", .payload = "{}"};
    CHECK(outbox_enqueue(c, &poison, NULL, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    PQclear(tu_exec(c, "COMMIT"));
    long long end = tu_now_ms() + 20000;
    while (tu_query_ll(c, "SELECT count(*) FROM outbox") > 0)
        CHECK(tu_now_ms() < end, "not drained");

    body_t b;
    snprintf(url, sizeof(url), "http://%s/metrics", addr);
    CHECK(get(url, &b) == 200, "/metrics status");
    const char *must[] = {"outbox_events_published_total{topic=\"metrics-topic\"} 300",
                          "outbox_events_failed_total{topic=\"metrics-topic\"} 2",
                          "outbox_events_retried_total{topic=\"metrics-topic\"} 1",
                          "outbox_events_dead_lettered_total{topic=\"metrics-topic\"} 1",
                          "# TYPE outbox_batch_duration_seconds histogram",
                          "outbox_batch_duration_seconds_bucket{le=\"+Inf\"}",
                          "outbox_pending_events 0",
                          "outbox_oldest_pending_age_seconds",
                          "outbox_dead_letters 1",
                          "outbox_worker_lanes{worker=\"worker-1\"}",
                          "outbox_broker_up 1"};
    for (size_t i = 0; i < sizeof(must) / sizeof(must[0]); i++)
        CHECK(strstr(b.buf, must[i]), "/metrics lacks \"%s\":\n%s", must[i], b.buf);
    snprintf(url, sizeof(url), "http://%s/healthz", addr);
    CHECK(get(url, &b) == 200, "/healthz");
    snprintf(url, sizeof(url), "http://%s/readyz", addr);
    CHECK(get(url, &b) == 200, "/readyz while healthy: %s", b.buf);

    /* Broker down: pending grows, readiness fails, broker_up 0. */
    tu_stop(redis);
    enqueue_many(c, "metrics-topic", 50, 5, 50, NULL);
    end = tu_now_ms() + 20000;
    for (;;) {
        snprintf(url, sizeof(url), "http://%s/readyz", addr);
        if (get(url, &b) == 503)
            break;
        CHECK(tu_now_ms() < end, "/readyz never reported the broker down");
        tu_sleep_ms(100);
    }
    CHECK(strstr(b.buf, "broker"), "/readyz reason: %s", b.buf);
    snprintf(url, sizeof(url), "http://%s/metrics", addr);
    CHECK(get(url, &b) == 200 && strstr(b.buf, "outbox_pending_events 50") &&
              strstr(b.buf, "outbox_broker_up 0"),
          "metrics during outage:\n%s", b.buf);
    snprintf(url, sizeof(url), "http://%s/nope", addr);
    CHECK(get(url, &b) == 404, "unknown path");
    outbox_relay_destroy(relay);
    PQfinish(c);
    printf("PASS relay_metrics_endpoint\n");
    return 0;
}
