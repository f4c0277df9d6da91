/* AMQP over TLS (amqps://): the relay publishes through a TLS listener whose
 * certificate is signed by a throwaway CA given with amqp_ca_file, and the
 * outbox consumer reads back over TLS too. Without the CA the broker's
 * certificate is refused (OUTBOX_ERR_BROKER naming the TLS failure). */
#include "amqptest.h"
#include "sink/sink.h"

#define N 200
#define TOPIC "secure"

static ta_seen_t seen;

static outbox_err_t handler(const outbox_delivery_t *d, void *opaque)
{
    (void)opaque;
    ta_seen_add(&seen, ta_seq(d->env.data));
    return OUTBOX_OK;
}

int main(void)
{
    if (access("/usr/bin/openssl", X_OK) != 0)
        tu_skip("openssl is needed to make the test certificates");
    PGconn *db;
    const char *ci = ta_setup_db("amqp_tls", &db);
    ta_start_opts(1);
    const char *url = ta_server.tls_url;
    char err[512];

    /* Without the CA: refused. */
    outbox_conf_t *plain = outbox_conf_new();
    ta_conf_set(plain, "publish_timeout", "3s");
    outbox_sink_t *s = outbox__sink_new(url, plain, "t", err, sizeof(err));
    CHECK(s, "sink_new: %s", err);
    CHECK(s->ops->ping(s, err, sizeof(err)) == OUTBOX_ERR_BROKER, "TLS without the CA must fail");
    printf("without amqp_ca_file: %s\n", err);
    outbox__sink_destroy(s);
    outbox_conf_destroy(plain);

    /* With it: the consumer connects (the TLS listener may open a moment
     * after the plain one), the relay publishes, all arrive. */
    outbox_conf_t *cconf = outbox_conf_new();
    ta_conf_set(cconf, "amqp_ca_file", ta_server.ca_file);
    const char *topics[] = {TOPIC};
    outbox_consumer_t *cons =
        outbox_consumer_new(url, "audit", "audit-1", topics, 1, cconf, err, sizeof(err));
    CHECK(cons, "consumer_new: %s", err);
    ta_seen_init(&seen, N);
    long long end = tu_now_ms() + 20000;
    outbox_err_t perr;
    while ((perr = outbox_consumer_poll(cons, 10, handler, NULL)) != OUTBOX_OK && tu_now_ms() < end)
        tu_sleep_ms(200);
    CHECK(perr == OUTBOX_OK, "TLS consumer: %s", outbox_consumer_errstr(cons));

    ta_enqueue(db, TOPIC, 0, N, 10, 50, NULL);
    outbox_conf_t *conf = ta_relay_conf(ci, url, 2);
    ta_conf_set(conf, "amqp_ca_file", ta_server.ca_file);
    outbox_relay_t *relay = ta_relay_start(conf);
    ta_wait_drained(db, 30000);
    outbox_relay_destroy(relay);

    end = tu_now_ms() + 20000;
    while (seen.total < N && tu_now_ms() < end)
        CHECK(outbox_consumer_poll(cons, 200, handler, NULL) == OUTBOX_OK, "poll: %s",
              outbox_consumer_errstr(cons));
    int missing = ta_seen_missing(&seen, N);
    CHECK(missing == 0 && seen.dups == 0, "over TLS: got %ld, missing %d, duplicates %ld",
          seen.total, missing, seen.dups);
    outbox_consumer_destroy(cons);
    outbox_conf_destroy(cconf);
    ta_seen_term(&seen);
    PQfinish(db);
    printf("PASS amqp_tls: %d events published and consumed over amqps:// verified with "
           "amqp_ca_file; refused "
           "without it\n",
           N);
    return 0;
}
