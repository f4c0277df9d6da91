/*
 * Every URL a configuration value can hold, through every parser that
 * reads one: redis:// and redis+pubsub:// (core/redis_url.c), amqp(s)://
 * (broker/amqp.c on rabbitmq-c), nats:// (broker/nats.c), kafka://
 * (broker/kafka.c), the sinks opened from a URL without connecting
 * (Redis, NATS, AMQP, HTTP webhook, OpenSearch), the store registry
 * (mem:, sqlite:, a PostgreSQL conninfo or URI), and the redaction that
 * keeps passwords out of logs (core/log.c, sink_common.h).
 *
 * Input: the URL (cut at a NUL byte, as a C string). Whenever a parser
 * finds a password (ours, or the reference libraries' for the schemes
 * they serve: libpq for database URLs, libcurl for http(s)), the
 * redacted form must not show it.
 */
#include <curl/curl.h>
#include <libpq-fe.h>
#include <string.h>

#include "broker/amqp.h"
#include "broker/kafka.h"
#include "broker/nats.h"
#include "core/log.h"
#include "core/redis_url.h"
#include "core/util.h"
#include "fuzz_common.h"
#include "sink/sink.h"
#include "sink/sink_common.h"
#include "store/store.h"

extern const outbox_sink_ops_t outbox__sink_redis_ops, outbox__sink_nats_ops, outbox__sink_amqp_ops,
    outbox__sink_http_ops, outbox__sink_opensearch_ops;

static outbox_conf_t *g_conf;

/* pw, found in url by a parser, must not be in shown. Decidable when pw
 * is there literally, once, and is not made of the mask's stars. */
static void check_hidden(const char *url, const char *pw, const char *shown, const char *who)
{
    if (!pw || strlen(pw) < 3 || strspn(pw, "*") == strlen(pw))
        return;
    const char *first = strstr(url, pw);
    if (!first || strstr(first + 1, pw))
        return;
    FUZZ_CHECK(!strstr(shown, pw), "%s password \"%s\" shown in \"%s\"", who, pw, shown);
}

static void check_sink(const outbox_sink_ops_t *ops, const char *url)
{
    char err[1024];
    outbox_sink_t *s = outbox__sink_new_with(ops, url, g_conf, "fuzz", err, sizeof(err));
    if (s)
        outbox__sink_destroy(s);
    else
        FUZZ_CHECK(err[0], "%s sink refused the URL without a reason", ops->name);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_conf)
        g_conf = outbox_conf_new();
    char *url = fuzz_str(data, size);
    char shown[4096], origin[4096], err[1024];
    outbox__redact_url(url, shown, sizeof(shown));
    outbox__url_origin(url, origin, sizeof(origin));
    outbox__url_scheme_is(url, "redis");

    outbox__redis_url_t r;
    if (outbox__redis_url_parse(url, &r, err, sizeof(err)) == OUTBOX_OK) {
        FUZZ_CHECK(r.host[0] && r.port > 0 && r.port <= 65535 && r.db >= 0 && r.db <= 65535,
                   "redis %s:%d/%d", r.host, r.port, r.db);
        check_hidden(url, r.password, shown, "redis");
    } else {
        check_hidden(url, r.password, err, "redis (its error)");
    }

    outbox__amqp_url_t a;
    if (outbox__amqp_url_parse(&a, url, err, sizeof(err)) == OUTBOX_OK) {
        FUZZ_CHECK(a.ci.host && a.ci.vhost && a.ci.port > 0, "amqp without host or vhost");
        /* rabbitmq-c's default is "guest": only a password the URL gave counts */
        if (strchr(url, '@')) {
            check_hidden(url, a.ci.password, shown, "amqp");
            check_hidden(url, a.ci.password, a.shown, "amqp (its shown URL)");
        }
        outbox__amqp_url_term(&a);
    }

    outbox__nats_url_t n;
    if (outbox__nats_parse_url(url, &n, err, sizeof(err)) == OUTBOX_OK) {
        FUZZ_CHECK(n.nservers >= 1, "nats without a server");
        for (int i = 0; i < n.nservers; i++)
            FUZZ_CHECK(!strncmp(n.servers[i], "nats://", 7) || !strncmp(n.servers[i], "tls://", 6),
                       "nats server %s", n.servers[i]); /* tls:// from nats+tls:// */
        check_hidden(url, n.password, shown, "nats");
    }

    rd_kafka_conf_t *kc = NULL;
    if (outbox__kafka_conf_new(url, "fuzz", &kc, err, sizeof(err)) == OUTBOX_OK) {
        char pw[512];
        size_t pl = sizeof(pw);
        if (rd_kafka_conf_get(kc, "sasl.password", pw, &pl) == RD_KAFKA_CONF_OK)
            check_hidden(url, pw, shown, "kafka");
        rd_kafka_conf_destroy(kc);
    }

    /* libpq reads a database URL (conninfo or URI) */
    char *pqerr = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &pqerr);
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (!strcmp(o->keyword, "password"))
            check_hidden(url, o->val, shown, "libpq");
    PQconninfoFree(opts);
    PQfreemem(pqerr);

    /* libcurl reads the http(s) and opensearch+http(s) URLs */
    const char *plus = strchr(url, '+');
    const char *curl_url_text = !strncasecmp(url, "opensearch+", 11) && plus ? plus + 1 : url;
    CURLU *u = curl_url();
    char *cpw = NULL;
    if (u && curl_url_set(u, CURLUPART_URL, curl_url_text, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_PASSWORD, &cpw, 0) == CURLUE_OK) {
        check_hidden(url, cpw, shown, "curl");
        check_hidden(url, cpw, origin, "curl (origin)");
    }
    curl_free(cpw);
    curl_url_cleanup(u);

    check_sink(&outbox__sink_redis_ops, url);
    check_sink(&outbox__sink_nats_ops, url);
    check_sink(&outbox__sink_amqp_ops, url);
    check_sink(&outbox__sink_http_ops, url);
    check_sink(&outbox__sink_opensearch_ops, url);
    outbox__sink_supported(url);
    outbox__store_supported(url);
    outbox__store_watchable(url);
    outbox__store_table_valid(url);
    free(url);
    return 0;
}
