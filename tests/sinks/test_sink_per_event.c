/* The sink contract after the per-key rule moved to the engine
 * (src/sink/sink.h), checked on the webhook sink called directly with
 * calls that hold at most one event per key, as the engine makes them:
 *  - every event is attempted and gets its own result: a failure (500, 404)
 *    does not stop the events after it, and is never reported not_sent;
 *  - Retry-After reaches retry_after_ms;
 *  - sink->deadline_ms bounds the call: an event whose request outlives it
 *    fails with OUTBOX_ERR_TIMEOUT (attempted, not_sent = 0), the events
 *    never tried are OUTBOX_ERR_TIMEOUT with not_sent = 1, never reach the
 *    endpoint, and publish returns by the deadline; a deadline already past
 *    sends nothing; deadline_ms = 0 means publish_timeout from now.
 * Stand-in: "Bad" -> 500, "Gone" -> 404, "Busy" -> 429 Retry-After: 3,
 * "Slow" -> 200 after 600 ms, anything else -> 200. */
#include <pthread.h>

#include "core/message.h"
#include "core/util.h"
#include "sink/sink.h"
#include "sink_test.h"

static int seen[8]; /* requests per event index (the "n" of the data) */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static void handle(st_req_t *q, void *arg)
{
    (void)arg;
    const char *n = q->body ? strstr(q->body, "\"n\":") : NULL;
    pthread_mutex_lock(&mu);
    if (n && atoi(n + 4) >= 0 && atoi(n + 4) < 8)
        seen[atoi(n + 4)]++;
    pthread_mutex_unlock(&mu);
    const char *b = q->body ? q->body : "";
    if (strstr(b, "\"type\":\"Bad\""))
        q->status = 500;
    else if (strstr(b, "\"type\":\"Gone\""))
        q->status = 404;
    else if (strstr(b, "\"type\":\"Busy\"")) {
        q->status = 429;
        snprintf(q->hdr_name, sizeof(q->hdr_name), "Retry-After");
        snprintf(q->hdr_value, sizeof(q->hdr_value), "3");
    } else if (strstr(b, "\"type\":\"Slow\""))
        tu_sleep_ms(600);
    st_buf_add(&q->resp, "{}", 2);
}

typedef struct call_s {
    outbox_msg_t m[8];
    outbox_pub_result_t r[8];
    char keys[8][16], payloads[8][32];
    size_t n;
} call_t;

/* Adds event n of the call: key "k<n>" (one event per key), data {"n":n}. */
static void add(call_t *c, const char *type)
{
    size_t i = c->n++;
    outbox_msg_t *m = &c->m[i];
    memset(m, 0, sizeof(*m));
    snprintf(c->keys[i], sizeof(c->keys[i]), "k%zu", i);
    snprintf(c->payloads[i], sizeof(c->payloads[i]), "{\"n\":%zu}", i);
    outbox_uuid_v7(m->id);
    m->seq = (int64_t)i + 1;
    m->topic = "per-event";
    m->type = type;
    m->key = c->keys[i];
    m->source = "/tests/sinks";
    m->payload = c->payloads[i];
    m->time = "2026-11-29T10:00:00Z";
    char err[256];
    m->envelope = outbox__envelope_build(m, &m->envelope_len, err, sizeof(err));
    CHECK(m->envelope, "envelope: %s", err);
}

static void reset(call_t *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->m[i].envelope);
    memset(c, 0, sizeof(*c));
    pthread_mutex_lock(&mu);
    memset(seen, 0, sizeof(seen));
    pthread_mutex_unlock(&mu);
}

static int seen_of(int i)
{
    pthread_mutex_lock(&mu);
    int v = seen[i];
    pthread_mutex_unlock(&mu);
    return v;
}

static void expect(const call_t *c, size_t i, outbox_err_t err, int not_sent, int requests)
{
    CHECK(c->r[i].err == err, "event %zu: %s (%s), want %s", i, outbox_err_str(c->r[i].err),
          c->r[i].errstr, outbox_err_str(err));
    CHECK(c->r[i].not_sent == not_sent, "event %zu: not_sent %d, want %d (%s)", i, c->r[i].not_sent,
          not_sent, c->r[i].errstr);
    CHECK(seen_of((int)i) == requests, "event %zu reached the endpoint %d times, want %d", i,
          seen_of((int)i), requests);
}

int main(void)
{
    st_server_t srv;
    memset(&srv, 0, sizeof(srv));
    st_server_start(&srv, handle, NULL);
    char url[128], err[512];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", srv.port);
    outbox_conf_t *conf = outbox_conf_new();
    st_conf_set(conf, "publish_timeout", "5s");
    st_conf_set(conf, "backoff_max", "10s");
    outbox_sink_t *s = outbox__sink_new(url, conf, "t", err, sizeof(err));
    CHECK(s, "sink_new: %s", err);
    call_t c;
    memset(&c, 0, sizeof(c));

    /* 1. Failures do not stop the call: each event has its own result. */
    add(&c, "Bad");
    add(&c, "Good");
    add(&c, "Gone");
    add(&c, "Busy");
    add(&c, "Good");
    s->deadline_ms = 0; /* none set: publish_timeout from now */
    CHECK(s->ops->publish(s, c.m, c.n, c.r) == OUTBOX_OK, "call 1: %s", c.r[0].errstr);
    expect(&c, 0, OUTBOX_ERR_BROKER, 0, 1);
    expect(&c, 1, OUTBOX_OK, 0, 1);
    expect(&c, 2, OUTBOX_ERR_REJECTED, 0, 1);
    expect(&c, 3, OUTBOX_ERR_BROKER, 0, 1);
    expect(&c, 4, OUTBOX_OK, 0, 1);
    CHECK(c.r[3].retry_after_ms == 3000, "Retry-After: 3 gave retry_after_ms %lld",
          (long long)c.r[3].retry_after_ms);
    printf("per event: 500 -> %s; 404 -> %s; 429 -> retry after %lld ms; the others delivered\n",
           outbox_err_str(c.r[0].err), outbox_err_str(c.r[2].err),
           (long long)c.r[3].retry_after_ms);
    reset(&c);

    /* 2. The deadline: the slow request outlives it, the rest is never tried. */
    add(&c, "Good");
    add(&c, "Slow");
    add(&c, "Good");
    add(&c, "Good");
    long long t0 = tu_now_ms();
    s->deadline_ms = outbox__now_ms() + 300;
    CHECK(s->ops->publish(s, c.m, c.n, c.r) == OUTBOX_OK, "call 2: %s", c.r[0].errstr);
    long long took = tu_now_ms() - t0;
    CHECK(took < 300 + 150, "publish returned %lld ms after the start, deadline was 300 ms", took);
    tu_sleep_ms(400); /* let the stand-in finish the slow request */
    expect(&c, 0, OUTBOX_OK, 0, 1);
    expect(&c, 1, OUTBOX_ERR_TIMEOUT, 0, 1);
    expect(&c, 2, OUTBOX_ERR_TIMEOUT, 1, 0);
    expect(&c, 3, OUTBOX_ERR_TIMEOUT, 1, 0);
    printf(
        "deadline 300 ms: returned after %lld ms; slow event timed out, 2 events not sent (%s)\n",
        took, c.r[2].errstr);
    reset(&c);

    /* 3. A deadline already past: nothing is sent, nothing charged. */
    add(&c, "Good");
    add(&c, "Good");
    s->deadline_ms = outbox__now_ms() - 1;
    CHECK(s->ops->publish(s, c.m, c.n, c.r) == OUTBOX_OK, "call 3");
    expect(&c, 0, OUTBOX_ERR_TIMEOUT, 1, 0);
    expect(&c, 1, OUTBOX_ERR_TIMEOUT, 1, 0);
    reset(&c);

    /* 4. The sink's own timeout caps a far deadline. */
    outbox_conf_t *conf2 = outbox_conf_new();
    st_conf_set(conf2, "publish_timeout", "200ms");
    outbox_sink_t *s2 = outbox__sink_new(url, conf2, "t2", err, sizeof(err));
    CHECK(s2, "sink_new: %s", err);
    add(&c, "Slow");
    add(&c, "Good");
    s2->deadline_ms = outbox__now_ms() + 60000;
    t0 = tu_now_ms();
    CHECK(s2->ops->publish(s2, c.m, c.n, c.r) == OUTBOX_OK, "call 4");
    took = tu_now_ms() - t0;
    CHECK(took < 200 + 150, "publish_timeout 200ms did not cap a 60 s deadline: %lld ms", took);
    tu_sleep_ms(500);
    expect(&c, 0, OUTBOX_ERR_TIMEOUT, 0, 1);
    expect(&c, 1, OUTBOX_ERR_TIMEOUT, 1, 0);
    reset(&c);
    outbox__sink_destroy(s2);
    outbox_conf_destroy(conf2);

    outbox__sink_destroy(s);
    outbox_conf_destroy(conf);
    st_server_stop(&srv);
    printf("PASS sink_per_event_results\n");
    return 0;
}
