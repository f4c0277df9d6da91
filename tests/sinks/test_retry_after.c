/* Retry-After is counted from when the failure is known, not from when the
 * batch's transaction began.
 *
 * A local webhook stand-in (libmicrohttpd) holds its answer to the first
 * request for the event 1.5 s, then answers 503 with Retry-After: 3; the
 * second request is answered 200. The relay learns of the failure 1.5 s into
 * its transaction, so a retry time computed from the transaction's start
 * (PostgreSQL now()) would come 1.5 s early. The second delivery must arrive
 * at least 3.0 s after the 503 was answered, and not much later (poll
 * slack). */
#include <pthread.h>

#include "sink_test.h"

#define HOLD_MS 1500
#define RETRY_AFTER_S 3
#define SLACK_MS 1000

typedef struct seen_s {
    pthread_mutex_t mu;
    char id[OUTBOX_UUID_STRLEN + 1];
    int deliveries, strangers;
    long long first_at, answered_at, second_at; /* tu_now_ms() */
} seen_t;

static void handle(st_req_t *q, void *arg)
{
    seen_t *s = arg;
    const char *idem = st_header(q, "Idempotency-Key");
    long long now = tu_now_ms();
    pthread_mutex_lock(&s->mu);
    if (!idem || strcmp(idem, s->id)) {
        s->strangers++;
        pthread_mutex_unlock(&s->mu);
        q->status = 422;
        return;
    }
    int n = ++s->deliveries;
    if (n == 1)
        s->first_at = now;
    else if (n == 2)
        s->second_at = now;
    pthread_mutex_unlock(&s->mu);
    if (n == 1) {
        tu_sleep_ms(HOLD_MS); /* the relay's transaction is open meanwhile */
        q->status = 503;
        snprintf(q->hdr_name, sizeof(q->hdr_name), "Retry-After");
        snprintf(q->hdr_value, sizeof(q->hdr_value), "%d", RETRY_AFTER_S);
        st_buf_add(&q->resp, "{\"error\":\"busy\"}", 16);
        pthread_mutex_lock(&s->mu);
        s->answered_at = tu_now_ms(); /* the answer goes out as this returns */
        pthread_mutex_unlock(&s->mu);
        return;
    }
    st_buf_add(&q->resp, "{\"ok\":true}", 11);
}

int main(void)
{
    PGconn *c;
    const char *ci = st_setup_db("retry_after", &c);
    seen_t s = {.mu = PTHREAD_MUTEX_INITIALIZER};
    st_server_t srv = {0};
    st_server_start(&srv, handle, &s);

    st_enqueue(c, "orders", "OrderCreated", "k1", "{\"n\":1}", NULL, s.id); /* no relay yet */

    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", srv.port);
    outbox_conf_t *conf = st_relay_conf(ci, url);
    /* The held answer must fit well inside the batch's deadline (90% of it). */
    st_conf_set(conf, "publish_timeout", "4s");
    outbox_relay_t *r = st_relay_start(conf);
    st_wait_drained(c, 20000);
    outbox_relay_destroy(r);
    st_server_stop(&srv);

    pthread_mutex_lock(&s.mu);
    CHECK(s.strangers == 0, "%d requests for an unknown event", s.strangers);
    CHECK(s.deliveries == 2, "event delivered %d times (want 503, then 200)", s.deliveries);
    long long gap = s.second_at - s.answered_at;
    long long held = s.answered_at - s.first_at;
    pthread_mutex_unlock(&s.mu);
    CHECK(held >= HOLD_MS, "the 503 was held only %lld ms", held);
    CHECK(gap >= RETRY_AFTER_S * 1000,
          "retried %lld ms after the 503 with Retry-After: %d was answered: the delay was counted"
          " from before the failure was known (the transaction's start, %lld ms earlier)",
          gap, RETRY_AFTER_S, held);
    CHECK(gap <= RETRY_AFTER_S * 1000 + SLACK_MS,
          "retried %lld ms after the 503 with Retry-After: %d (want within %d ms of it)", gap,
          RETRY_AFTER_S, SLACK_MS);
    printf("503 held %lld ms, then Retry-After: %d honoured: retried %lld ms after the answer\n",
           held, RETRY_AFTER_S, gap);
    PQfinish(c);
    printf("PASS retry_after\n");
    return 0;
}
