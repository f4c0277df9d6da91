/* AMQP sink, end to end against a real RabbitMQ: the relay publishes N
 * events (structured mode) and then NB more in binary mode; a raw
 * rabbitmq-c client reads a bound queue back and checks every message's
 * properties (message-id = event id, persistent, content type, type,
 * routing key, timestamp, traceparent and user headers) and CloudEvents
 * body, none missing, no duplicates, per-key order; the outbox consumer
 * (src/consumer/amqp.c) reads its own group queue and sees every event. */
#include <time.h>

#include "amqptest.h"

#define N 3000
#define NB 300
#define NKEYS 50
#define TOPIC "orders"
#define TRACEPARENT "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static char ids[N + NB][OUTBOX_UUID_STRLEN + 1];

typedef struct raw_check_s {
    ta_seen_t seen;
    int last_seq[NKEYS];
    long structured, binary;
} raw_check_t;

static void raw_cb(const amqp_envelope_t *env, void *opaque)
{
    raw_check_t *rc = opaque;
    const amqp_basic_properties_t *p = &env->message.properties;
    const char *body = env->message.body.bytes;
    size_t len = env->message.body.len;
    char ct[64] = "", mid[64] = "", type[64] = "", hv[128];
    CHECK(p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG, "no content-type");
    snprintf(ct, sizeof(ct), "%.*s", (int)p->content_type.len, (const char *)p->content_type.bytes);
    CHECK(p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG, "no message-id");
    snprintf(mid, sizeof(mid), "%.*s", (int)p->message_id.len, (const char *)p->message_id.bytes);
    CHECK(p->_flags & AMQP_BASIC_TYPE_FLAG, "no type");
    snprintf(type, sizeof(type), "%.*s", (int)p->type.len, (const char *)p->type.bytes);
    CHECK((p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG) && p->delivery_mode == 2,
          "message not persistent");
    CHECK((p->_flags & AMQP_BASIC_TIMESTAMP_FLAG) &&
              llabs((long long)p->timestamp - (long long)time(NULL)) < 3600,
          "timestamp missing or wrong");
    CHECK(!strcmp(type, "TestEvent"), "type property %s", type);
    CHECK(env->routing_key.len == 9 && !memcmp(env->routing_key.bytes, "TestEvent", 9),
          "routing key is not the type");
    CHECK(env->exchange.len == strlen(TOPIC) && !memcmp(env->exchange.bytes, TOPIC, strlen(TOPIC)),
          "exchange is not the topic");
    ta_header(&p->headers, "traceparent", hv, sizeof(hv));
    CHECK(!strcmp(hv, TRACEPARENT), "traceparent header \"%s\"", hv);
    ta_header(&p->headers, "tenant", hv, sizeof(hv));
    CHECK(!strcmp(hv, "acme"), "user header tenant \"%s\"", hv);

    int seq;
    if (!strcmp(ct, "application/cloudevents+json")) {
        outbox_envelope_t e;
        char err[256];
        CHECK(outbox_envelope_parse(body, len, &e, err, sizeof(err)) == OUTBOX_OK,
              "not CloudEvents: %s", err);
        CHECK(!strcmp(e.id, mid), "message-id %s != CloudEvents id %s", mid, e.id);
        CHECK(e.traceparent && !strcmp(e.traceparent, TRACEPARENT),
              "CloudEvents traceparent missing");
        seq = ta_seq(e.data);
        CHECK(seq >= 0 && seq < N + NB && !strcmp(ids[seq], e.id), "id %s is not event %d's", e.id,
              seq);
        char key[32];
        snprintf(key, sizeof(key), "k%d", seq % NKEYS);
        CHECK(e.subject && !strcmp(e.subject, key), "subject %s, want %s",
              e.subject ? e.subject : "-", key);
        outbox_envelope_term(&e);
        rc->structured++;
    } else {
        CHECK(!strcmp(ct, "application/json"), "content-type %s", ct);
        ta_header(&p->headers, "ce_id", hv, sizeof(hv));
        CHECK(!strcmp(hv, mid), "binary: ce_id %s != message-id %s", hv, mid);
        ta_header(&p->headers, "ce_specversion", hv, sizeof(hv));
        CHECK(!strcmp(hv, "1.0"), "binary: ce_specversion %s", hv);
        char data[64];
        snprintf(data, sizeof(data), "%.*s", (int)len, body);
        seq = ta_seq(data);
        CHECK(seq >= N && seq < N + NB && !strcmp(ids[seq], mid), "binary: body %s for id %s", data,
              mid);
        rc->binary++;
    }
    int k = seq % NKEYS;
    CHECK(seq > rc->last_seq[k], "key k%d out of order: %d after %d", k, seq, rc->last_seq[k]);
    rc->last_seq[k] = seq;
    ta_seen_add(&rc->seen, seq);
}

typedef struct cons_check_s {
    ta_seen_t seen;
    long binary_ok;
} cons_check_t;

static outbox_err_t handler(const outbox_delivery_t *d, void *opaque)
{
    cons_check_t *cc = opaque;
    int seq = ta_seq(d->env.data);
    CHECK(seq >= 0 && seq < N + NB, "consumer: bad data %s", d->env.data);
    CHECK(!strcmp(d->env.id, ids[seq]), "consumer: id %s is not event %d's", d->env.id, seq);
    CHECK(d->env.type && !strcmp(d->env.type, "TestEvent"), "consumer: type");
    CHECK(!strcmp(d->topic, TOPIC), "consumer: topic %s", d->topic);
    CHECK(!d->redelivered, "consumer: unexpected redelivery");
    if (seq >= N) {
        char key[32];
        snprintf(key, sizeof(key), "k%d", seq % NKEYS);
        CHECK(d->env.subject && !strcmp(d->env.subject, key), "binary consumer: subject");
        cc->binary_ok++;
    }
    ta_seen_add(&cc->seen, seq);
    return OUTBOX_OK;
}

int main(void)
{
    PGconn *db;
    const char *ci = ta_setup_db("amqp_publish_readback", &db);
    const char *url = ta_start();
    char err[512];

    /* Queues exist before anything is published (an exchange drops what no
     * queue is bound for). */
    amqp_connection_state_t raw = ta_raw_connect();
    ta_raw_queue(raw, "readback", TOPIC);
    const char *topics[] = {TOPIC};
    outbox_conf_t *cconf = outbox_conf_new();
    outbox_consumer_t *cons =
        outbox_consumer_new(url, "readers", "readers-1", topics, 1, cconf, err, sizeof(err));
    CHECK(cons, "consumer_new: %s", err);
    cons_check_t cc = {0};
    ta_seen_init(&cc.seen, N + NB);
    CHECK(outbox_consumer_poll(cons, 10, handler, &cc) == OUTBOX_OK, "first poll: %s",
          outbox_consumer_errstr(cons));

    /* Structured mode: N events, 4 workers. */
    ta_enqueue(db, TOPIC, 0, N, NKEYS, 100, ids);
    outbox_conf_t *conf = ta_relay_conf(ci, url, 4);
    ta_conf_set(conf, "amqp_mandatory", "true");
    long long t0 = tu_now_ms();
    outbox_relay_t *relay = ta_relay_start(conf);
    ta_wait_drained(db, 60000);
    long long ms = tu_now_ms() - t0;
    outbox_relay_destroy(relay);

    /* Binary mode: NB more. */
    conf = ta_relay_conf(ci, url, 2);
    ta_conf_set(conf, "content_mode", "binary");
    relay = ta_relay_start(conf);
    ta_enqueue(db, TOPIC, N, NB, NKEYS, 50, ids);
    ta_wait_drained(db, 30000);
    outbox_relay_destroy(relay);
    CHECK(tu_query_ll(db, "SELECT count(*) FROM outbox_dead_letter") == 0,
          "dead letters after a clean run");

    raw_check_t rc;
    memset(&rc, 0, sizeof(rc));
    for (int k = 0; k < NKEYS; k++)
        rc.last_seq[k] = -1;
    ta_seen_init(&rc.seen, N + NB);
    long got = ta_raw_drain(raw, "readback", 1000, raw_cb, &rc);
    int missing = ta_seen_missing(&rc.seen, N + NB);
    CHECK(missing == 0 && rc.seen.dups == 0 && got == N + NB,
          "raw readback: got %ld, missing %d, duplicates %ld", got, missing, rc.seen.dups);
    CHECK(rc.structured == N && rc.binary == NB, "structured %ld binary %ld", rc.structured,
          rc.binary);

    long long end = tu_now_ms() + 30000;
    while (cc.seen.total < N + NB && tu_now_ms() < end)
        CHECK(outbox_consumer_poll(cons, 200, handler, &cc) == OUTBOX_OK, "poll: %s",
              outbox_consumer_errstr(cons));
    missing = ta_seen_missing(&cc.seen, N + NB);
    CHECK(missing == 0 && cc.seen.dups == 0 && cc.binary_ok == NB,
          "consumer: got %ld, missing %d, duplicates %ld, binary %ld", cc.seen.total, missing,
          cc.seen.dups, cc.binary_ok);
    outbox_consumer_destroy(cons);
    outbox_conf_destroy(cconf);
    ta_seen_term(&cc.seen);
    ta_seen_term(&rc.seen);
    amqp_connection_close(raw, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(raw);
    PQfinish(db);
    printf("PASS amqp_publish_readback: %d structured events published with confirms in %lld ms "
           "(%.0f events/s, "
           "4 workers, default batch), %d binary; raw client and outbox consumer each saw all %d "
           "once, "
           "in key order\n",
           N, ms, N * 1000.0 / (double)(ms ? ms : 1), NB, N + NB);
    return 0;
}
