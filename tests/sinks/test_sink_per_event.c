/* An event a sink holds back (an earlier event of its key failed in the same
 * call, so it was never sent) is not charged an attempt: when the head of the
 * key is dead-lettered, its followers wait in the outbox with attempts = 0
 * (hold mode) instead of being dead-lettered for failures they never had.
 * Webhook stand-in: 500 for type "Bad", 200 otherwise. */
#include <pthread.h>

#include "sink_test.h"

static int bad_seen, good_seen;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static void handle(st_req_t *q, void *arg)
{
    (void)arg;
    int bad = q->body && strstr(q->body, "\"type\":\"Bad\"") != NULL;
    pthread_mutex_lock(&mu);
    if (bad)
        bad_seen++;
    else
        good_seen++;
    pthread_mutex_unlock(&mu);
    q->status = bad ? 500 : 200;
    st_buf_add(&q->resp, "{}", 2);
    q->content_type = "application/json";
}

int main(void)
{
    PGconn *c;
    const char *ci = st_setup_db("sink_held_not_charged", &c);
    st_server_t srv;
    memset(&srv, 0, sizeof(srv));
    st_server_start(&srv, handle, NULL);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", srv.port);

    char head[OUTBOX_UUID_STRLEN + 1], f1[OUTBOX_UUID_STRLEN + 1], f2[OUTBOX_UUID_STRLEN + 1];
    char other[OUTBOX_UUID_STRLEN + 1];
    /* one transaction so the first batch holds all of them together */
    st_enqueue(c, "held", "Bad", "k1", "{\"n\":1}", NULL, head);
    st_enqueue(c, "held", "Good", "k1", "{\"n\":2}", NULL, f1);
    st_enqueue(c, "held", "Good", "k1", "{\"n\":3}", NULL, f2);
    st_enqueue(c, "held", "Good", "k2", "{\"n\":1}", NULL, other);

    outbox_conf_t *conf = st_relay_conf(ci, url);
    st_conf_set(conf, "workers", "1");
    st_conf_set(conf, "max_attempts", "3");
    st_conf_set(conf, "backoff_base", "20ms");
    st_conf_set(conf, "backoff_max", "50ms");
    st_conf_set(conf, "dlq_mode", "hold");
    outbox_relay_t *relay = st_relay_start(conf);
    long long end = tu_now_ms() + 20000;
    while (tu_query_ll(c, "SELECT count(*) FROM outbox_dead_letter") == 0)
        CHECK(tu_now_ms() < end, "head of k1 never dead-lettered");
    tu_sleep_ms(500);
    outbox_relay_destroy(relay);

    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM outbox_dead_letter WHERE id = '%s' AND attempts = 3", head);
    CHECK(tu_query_ll(c, sql) == 1, "the failing head should be the only dead letter, after 3 attempts");
    CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox_dead_letter") == 1, "a follower that was never sent was dead-lettered");
    CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox WHERE key = 'k1' AND attempts = 0") == 2,
          "followers were charged attempts for sends that never happened (attempts: %lld)",
          tu_query_ll(c, "SELECT COALESCE(sum(attempts), -1) FROM outbox WHERE key = 'k1'"));
    CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox WHERE key = 'k2'") == 0, "other key did not flow");
    CHECK(bad_seen == 3, "head sent %d times, want 3", bad_seen);
    CHECK(good_seen == 1, "stand-in saw %d good events, want only k2's (followers must not be sent)", good_seen);
    st_server_stop(&srv);
    PQfinish(c);
    printf("PASS sink_held_not_charged: head dead-lettered after 3 attempts, 2 held followers never sent and "
           "never charged\n");
    return 0;
}
