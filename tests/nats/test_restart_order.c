/* A key's order survives a consumer restart on JetStream.
 *
 * Holds (src/consumer/consumer_poison.c) are in memory: a restarted consumer
 * has none and hands the handler whatever JetStream redelivers first, and
 * JetStream redelivers nak'ed messages in the order their delays run out.
 * The stream holds H (key k), X (key x), F (key k):
 *   instance 1: H fails (nak'ed until its retry, 300 ms); X takes 400 ms;
 *     F, behind H, is nak'ed for 300 ms (nats_nak_delay) after that; H is
 *     back, fails again (nak'ed for 600 ms); the instance is destroyed while
 *     H's delay ends after F's.
 *   instance 2: must apply H before F (X, H, F).
 * Without the hand-back on close (src/consumer/nats.c) F came back first
 * and was applied before H. */
#include "natstest.h"
#include "outbox/consumer.h"

#define KEY_ID(n) "00000000-0000-4000-8000-00000000000" #n

typedef struct ctx_s {
    int h_calls, x_calls, f_calls;
    char order[8]; /* what was applied, in order: 'H', 'X', 'F' */
    int n;
} ctx_t;

static outbox_err_t handler(const outbox_delivery_t *d, void *opaque)
{
    ctx_t *x = opaque;
    char what = d->env.data && strstr(d->env.data, "\"H\"")   ? 'H'
                : d->env.data && strstr(d->env.data, "\"X\"") ? 'X'
                                                              : 'F';
    if (what == 'H' && ++x->h_calls <= 2)
        return OUTBOX_ERR_INVALID_ARG; /* retried after consumer_retry_backoff, doubling */
    if (what == 'X') {
        x->x_calls++;
        tu_sleep_ms(400); /* H's retry falls due meanwhile */
    }
    if (what == 'F')
        x->f_calls++;
    if (x->n < (int)sizeof(x->order) - 1)
        x->order[x->n++] = what;
    return OUTBOX_OK;
}

static outbox_consumer_t *consumer(const tn_server_t *s, const char *name)
{
    outbox_conf_t *conf = outbox_conf_new();
    const char *kv[] = {"consumer_retry_backoff",
                        "300ms",
                        "consumer_retry_backoff_max",
                        "5s",
                        "nats_nak_delay",
                        "300ms",
                        "nats_ack_wait",
                        "10s",
                        "nats_fetch_batch",
                        "10",
                        "log_level",
                        "warn",
                        NULL};
    for (int i = 0; kv[i]; i += 2)
        tu_conf_set(conf, kv[i], kv[i + 1]);
    char err[512];
    const char *topics[] = {"orders"};
    outbox_consumer_t *c =
        outbox_consumer_new(s->url, "shipping", name, topics, 1, conf, err, sizeof(err));
    CHECK(c, "consumer_new: %s", err);
    outbox_conf_destroy(conf);
    return c;
}

static void publish(jsCtx *js, const char *id, const char *key, const char *what)
{
    char body[256];
    int len = snprintf(body, sizeof(body),
                       "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"/test\","
                       "\"type\":\"Placed\",\"subject\":\"%s\",\"data\":{\"what\":\"%s\"}}",
                       id, key, what);
    jsErrCode jerr = 0;
    jsPubAck *pa = NULL;
    natsStatus st = js_Publish(&pa, js, "orders.Placed", body, len, NULL, &jerr);
    CHECK(st == NATS_OK, "publish %s: %s (%d)", what, natsStatus_GetText(st), (int)jerr);
    jsPubAck_Destroy(pa);
}

int main(void)
{
    tn_require();
    tn_server_t srv = {0};
    tn_start(&srv);
    ctx_t x = {0};

    outbox_consumer_t *c = consumer(&srv, "shipping-1");
    outbox_consumer_poll(c, 100, handler, &x); /* creates the stream and the durable */
    jsCtx *js = NULL;
    natsConnection *nc = tn_connect(&srv, &js);
    publish(js, KEY_ID(1), "k", "H");
    publish(js, KEY_ID(2), "x", "X");
    publish(js, KEY_ID(3), "k", "F");

    /* H fails and holds k; X is applied; F waits behind H. */
    long long end = tu_now_ms() + tu_ms(10000);
    while (x.x_calls == 0) {
        outbox_consumer_poll(c, 200, handler, &x);
        CHECK(tu_now_ms() < end, "X not handled");
    }
    CHECK(x.h_calls == 1 && x.f_calls == 0, "H called %d times, F %d", x.h_calls, x.f_calls);
    /* H is back (its retry was due during X) and fails again: 600 ms now. */
    while (x.h_calls < 2) {
        outbox_consumer_poll(c, 20, handler, &x);
        CHECK(tu_now_ms() < end, "H not retried");
    }
    CHECK(x.f_calls == 0, "F overtook H in the first instance");
    printf("instance 1: H failed twice, X applied, F held; restarting the consumer\n");
    outbox_consumer_destroy(c);

    c = consumer(&srv, "shipping-2");
    while (x.n < 3) {
        outbox_consumer_poll(c, 100, handler, &x);
        CHECK(tu_now_ms() < end, "after the restart: applied \"%s\"", x.order);
    }
    CHECK(!strcmp(x.order, "XHF"), "applied in the order \"%s\", want \"XHF\" (F before H?)",
          x.order);
    printf("instance 2: H applied before F (order %s)\n", x.order);

    outbox_consumer_destroy(c);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    tn_cleanup(&srv);
    printf("PASS nats_consumer_restart_order\n");
    return 0;
}
