/* AMQP sink and consumer without a broker: both schemes are registered,
 * open is lazy (a relay starts while RabbitMQ is down), a closed port is
 * OUTBOX_ERR_BROKER for publish, ping and poll, a malformed URL is a
 * configuration error, and the password never appears in an error message
 * or a log line. */
#include <string.h>
#include <unistd.h>

#include "core/message.h"
#include "outbox/consumer.h"
#include "sink/sink.h"
#include "testutil.h"

#define SECRET "s3cretPW"

static void no_secret(const char *what, const char *s)
{
    CHECK(!strstr(s, SECRET), "%s shows the password: %s", what, s);
}

static outbox_err_t never(const outbox_delivery_t *d, void *opaque)
{
    (void)d;
    (void)opaque;
    CHECK(0, "handler called without a broker");
    return OUTBOX_OK;
}

int main(void)
{
    char err[512], url[128], logpath[] = "/tmp/amqp_url_log.XXXXXX";
    int fd = mkstemp(logpath);
    CHECK(fd >= 0, "mkstemp");
    close(fd);
    CHECK(freopen(logpath, "w", stderr), "freopen stderr");

    CHECK(outbox__sink_supported("amqp://h/") && outbox__sink_supported("amqps://h/"),
          "amqp schemes not registered");
    outbox_conf_t *conf = outbox_conf_new();
    CHECK(outbox_conf_set(conf, "publish_timeout", "1s", err, sizeof(err)) == OUTBOX_OK, "%s", err);

    /* Malformed URL: configuration error, redacted. */
    outbox_sink_t *s =
        outbox__sink_new("amqp://bob:" SECRET "@127.0.0.1:notaport/", conf, "t", err, sizeof(err));
    CHECK(!s, "a malformed URL was accepted");
    no_secret("bad-URL error", err);
    CHECK(strstr(err, "bob:****@"), "bad-URL error does not show the redacted URL: %s", err);
    /* Port 0: rabbitmq-c takes it; found by fuzz/fuzz_url.c. */
    s = outbox__sink_new("amqp://bob:" SECRET "@127.0.0.1:0/", conf, "t", err, sizeof(err));
    CHECK(!s && strstr(err, "port 0"), "port 0 accepted: %s", s ? "" : err);
    no_secret("port-0 error", err);

    /* Nothing listens: open succeeds (lazy), publish/ping fail as BROKER. */
    int port = tu_free_port();
    snprintf(url, sizeof(url), "amqp://bob:" SECRET "@127.0.0.1:%d/orders", port);
    s = outbox__sink_new(url, conf, "worker-t", err, sizeof(err));
    CHECK(s, "open must not need the broker: %s", err);
    CHECK(s->ops->ping(s, err, sizeof(err)) == OUTBOX_ERR_BROKER, "ping of a closed port");
    no_secret("ping error", err);
    CHECK(strstr(err, "bob:****@127.0.0.1"), "ping error without the redacted URL: %s", err);
    outbox_msg_t m;
    memset(&m, 0, sizeof(m));
    snprintf(m.id, sizeof(m.id), "0190a0b0-0000-7000-8000-000000000001");
    m.topic = "orders";
    m.type = "OrderCreated";
    m.key = "o-1";
    m.source = "/test";
    m.payload = "{}";
    m.time = "2026-11-22T10:00:00Z";
    m.envelope = "{}";
    m.envelope_len = 2;
    outbox_pub_result_t res;
    memset(&res, 0, sizeof(res));
    CHECK(s->ops->publish(s, &m, 1, &res) == OUTBOX_ERR_BROKER && res.err == OUTBOX_ERR_BROKER,
          "publish to a closed port must be OUTBOX_ERR_BROKER");
    no_secret("publish error", res.errstr);
    outbox__sink_destroy(s);

    /* Consumer: lazy too. */
    const char *topics[] = {"orders"};
    outbox_consumer_t *c = outbox_consumer_new(url, "g", "g-1", topics, 1, conf, err, sizeof(err));
    CHECK(c, "consumer open must not need the broker: %s", err);
    CHECK(outbox_consumer_poll(c, 10, never, NULL) == OUTBOX_ERR_BROKER, "poll of a closed port");
    no_secret("consumer error", outbox_consumer_errstr(c));
    CHECK(strstr(outbox_consumer_errstr(c), "bob:****@"), "consumer error: %s",
          outbox_consumer_errstr(c));
    outbox_consumer_destroy(c);
    outbox_conf_destroy(conf);

    fflush(stderr);
    FILE *f = fopen(logpath, "r");
    CHECK(f, "reopen log");
    char line[4096];
    while (fgets(line, sizeof(line), f))
        CHECK(!strstr(line, SECRET), "a log line shows the password: %s", line);
    fclose(f);
    unlink(logpath);
    printf("PASS amqp_url_redaction: lazy open, OUTBOX_ERR_BROKER on a closed port, config error "
           "on a bad URL, "
           "password never shown\n");
    return 0;
}
