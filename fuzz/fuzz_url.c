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

enum { BY_REDIS, BY_AMQP, BY_NATS, BY_KAFKA, BY_LIBPQ, BY_CURL };

/* The password parser `by` reads from url into pw (pw[0] = 0 for none). */
static void password_of(int by, const char *url, char *pw, size_t size)
{
    char err[1024];
    pw[0] = 0;
    switch (by) {
    case BY_REDIS: {
        outbox__redis_url_t r;
        memset(&r, 0, sizeof(r));
        outbox__redis_url_parse(url, &r, err, sizeof(err));
        snprintf(pw, size, "%s", r.password);
        break;
    }
    case BY_AMQP: {
        outbox__amqp_url_t a;
        if (outbox__amqp_url_parse(&a, url, err, sizeof(err)) == OUTBOX_OK) {
            snprintf(pw, size, "%s", a.ci.password ? a.ci.password : "");
            outbox__amqp_url_term(&a);
        }
        break;
    }
    case BY_NATS: {
        outbox__nats_url_t n;
        if (outbox__nats_parse_url(url, &n, err, sizeof(err)) == OUTBOX_OK)
            snprintf(pw, size, "%s", n.password);
        break;
    }
    case BY_KAFKA: {
        rd_kafka_conf_t *kc = NULL;
        if (outbox__kafka_conf_new(url, "fuzz", &kc, err, sizeof(err)) == OUTBOX_OK) {
            size_t pl = size;
            if (rd_kafka_conf_get(kc, "sasl.password", pw, &pl) != RD_KAFKA_CONF_OK)
                pw[0] = 0;
            rd_kafka_conf_destroy(kc);
        }
        break;
    }
    case BY_LIBPQ: {
        char *pqerr = NULL;
        PQconninfoOption *opts = PQconninfoParse(url, &pqerr);
        for (PQconninfoOption *o = opts; o && o->keyword; o++)
            if (!strcmp(o->keyword, "password") && o->val)
                snprintf(pw, size, "%s", o->val);
        PQconninfoFree(opts);
        PQfreemem(pqerr);
        break;
    }
    case BY_CURL: {
        const char *plus = strchr(url, '+');
        const char *text = !strncasecmp(url, "opensearch+", 11) && plus ? plus + 1 : url;
        CURLU *u = curl_url();
        char *cpw = NULL;
        if (u && curl_url_set(u, CURLUPART_URL, text, 0) == CURLUE_OK &&
            curl_url_get(u, CURLUPART_PASSWORD, &cpw, 0) == CURLUE_OK)
            snprintf(pw, size, "%s", cpw);
        curl_free(cpw);
        curl_url_cleanup(u);
        break;
    }
    }
}

enum { SHOW_REDACTED, SHOW_ORIGIN, SHOW_REDIS_ERROR, SHOW_AMQP };

/* What the code under test shows of url, as kind `how` (the text checked). */
static void shown_of(int how, const char *url, char *out, size_t size)
{
    out[0] = 0;
    switch (how) {
    case SHOW_REDACTED:
        outbox__redact_url(url, out, size);
        break;
    case SHOW_ORIGIN:
        outbox__url_origin(url, out, size);
        break;
    case SHOW_REDIS_ERROR: {
        outbox__redis_url_t r;
        if (outbox__redis_url_parse(url, &r, out, size) == OUTBOX_OK)
            out[0] = 0;
        break;
    }
    case SHOW_AMQP: {
        outbox__amqp_url_t a;
        char err[1024];
        if (outbox__amqp_url_parse(&a, url, err, sizeof(err)) == OUTBOX_OK) {
            snprintf(out, size, "%s", a.shown);
            outbox__amqp_url_term(&a);
        }
        break;
    }
    }
}

/* pw, found in url by parser `by`, must not be in shown (url shown as
 * kind `how`). Decidable when pw is in url literally, once, is not made of
 * the mask's stars, and that one place is the password: written over with
 * other letters, the parser reads those letters as the password. (In
 * "password=a\ss" libpq reads "ass", which is in the keyword, not the
 * value.) And pw in shown must come from the password: with it written
 * over, the shown text no longer has pw (in "(invalid URL)" a password
 * "(in" is the message's own text). */
static void check_hidden(int by, int how, const char *url, const char *pw, const char *shown,
                         const char *who)
{
    size_t n = pw ? strlen(pw) : 0;
    if (n < 3 || strspn(pw, "*") == n || !strstr(shown, pw))
        return;
    const char *first = strstr(url, pw);
    if (!first || strstr(first + 1, pw))
        return;
    char fill = 0;
    for (const char *c = "ZQXJKV"; *c && !fill; c++)
        if (!strchr(url, *c))
            fill = *c;
    if (!fill)
        return;
    char *url2 = strdup(url), again[1024], shown2[4096];
    if (!url2)
        return;
    memset(url2 + (first - url), fill, n);
    password_of(by, url2, again, sizeof(again));
    int is_value = strlen(again) == n && strspn(again, (char[]){fill, 0}) == n;
    shown_of(how, url2, shown2, sizeof(shown2));
    free(url2);
    if (is_value)
        FUZZ_CHECK(strstr(shown2, pw), "%s password \"%s\" shown in \"%s\"", who, pw, shown);
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
        check_hidden(BY_REDIS, SHOW_REDACTED, url, r.password, shown, "redis");
    } else {
        check_hidden(BY_REDIS, SHOW_REDIS_ERROR, url, r.password, err, "redis (its error)");
    }

    outbox__amqp_url_t a;
    if (outbox__amqp_url_parse(&a, url, err, sizeof(err)) == OUTBOX_OK) {
        FUZZ_CHECK(a.ci.host && a.ci.vhost && a.ci.port > 0, "amqp without host or vhost");
        /* rabbitmq-c's default is "guest": only a password the URL gave counts */
        if (strchr(url, '@')) {
            check_hidden(BY_AMQP, SHOW_REDACTED, url, a.ci.password, shown, "amqp");
            check_hidden(BY_AMQP, SHOW_AMQP, url, a.ci.password, a.shown, "amqp (its shown URL)");
        }
        outbox__amqp_url_term(&a);
    }

    outbox__nats_url_t n;
    if (outbox__nats_parse_url(url, &n, err, sizeof(err)) == OUTBOX_OK) {
        FUZZ_CHECK(n.nservers >= 1, "nats without a server");
        for (int i = 0; i < n.nservers; i++)
            FUZZ_CHECK(!strncmp(n.servers[i], "nats://", 7) || !strncmp(n.servers[i], "tls://", 6),
                       "nats server %s", n.servers[i]); /* tls:// from nats+tls:// */
        check_hidden(BY_NATS, SHOW_REDACTED, url, n.password, shown, "nats");
    }

    /* librdkafka's sasl.password, libpq for a database URL (conninfo or
     * URI), libcurl for the http(s) and opensearch+http(s) URLs */
    char pw[1024];
    password_of(BY_KAFKA, url, pw, sizeof(pw));
    check_hidden(BY_KAFKA, SHOW_REDACTED, url, pw, shown, "kafka");
    password_of(BY_LIBPQ, url, pw, sizeof(pw));
    check_hidden(BY_LIBPQ, SHOW_REDACTED, url, pw, shown, "libpq");
    password_of(BY_CURL, url, pw, sizeof(pw));
    check_hidden(BY_CURL, SHOW_REDACTED, url, pw, shown, "curl");
    check_hidden(BY_CURL, SHOW_ORIGIN, url, pw, origin, "curl (origin)");

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
