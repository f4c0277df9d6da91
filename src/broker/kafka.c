/* Kafka configuration shared by the sink and the consumer (librdkafka).
 * See broker/kafka.h. */
#include "broker/kafka.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/conf.h"
#include "core/log.h"
#include "core/util.h"

#define COMPONENT "kafka"

static int looks_secret(const char *name)
{
    return strstr(name, "password") || strstr(name, "secret") || strstr(name, "key") ||
           strstr(name, "token") || strstr(name, "jaas");
}

outbox_err_t outbox__kafka_conf_set(rd_kafka_conf_t *kc, const char *name, const char *value,
                                    char *errstr, size_t errstr_size)
{
    char kerr[512];
    if (rd_kafka_conf_set(kc, name, value, kerr, sizeof(kerr)) == RD_KAFKA_CONF_OK)
        return OUTBOX_OK;
    if (looks_secret(name))
        return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                           "Kafka: librdkafka rejected property \"%s\"", name);
    return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                       "Kafka: librdkafka rejected property \"%s\": %s", name, kerr);
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    /* librdkafka reports every failed connect at syslog "error"; the relay
     * and consumer log the outage themselves, so its lines are at most warn. */
    outbox_log_level_t l = level <= 4   ? OUTBOX_LOG_WARN
                           : level <= 6 ? OUTBOX_LOG_INFO
                                        : OUTBOX_LOG_DEBUG;
    if (fac && !strcmp(fac, "CONFWARN") && strstr(buf, "gapless"))
        l = OUTBOX_LOG_DEBUG; /* we set it on purpose; "experimental" is not news */
    if (!outbox__log_enabled(l))
        return;
    outbox__log(l, COMPONENT, "librdkafka", buf, "client", rk ? rd_kafka_name(rk) : "", "facility",
                fac, NULL);
}

outbox_err_t outbox__kafka_conf_new(const char *url, const char *client_id, rd_kafka_conf_t **out,
                                    char *errstr, size_t errstr_size)
{
    *out = NULL;
    const char *p = url ? strstr(url, "://") : NULL;
    if (!p || strncasecmp(url, "kafka", 5) != 0)
        return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                           "Kafka URL must look like kafka://host:port[,host:port]");
    p += 3;
    char user[256] = "", pass[256] = "", hosts[1024];
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (!colon)
            return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                               "Kafka URL credentials must be user:password@");
        snprintf(user, sizeof(user), "%.*s", (int)(colon - p), p);
        snprintf(pass, sizeof(pass), "%.*s", (int)(at - colon - 1), colon + 1);
        p = at + 1;
    }
    size_t hl = strcspn(p, "/?#");
    if (hl == 0 || hl >= sizeof(hosts))
        return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                           "Kafka URL has no broker list (kafka://host:port[,host:port])");
    memcpy(hosts, p, hl);
    hosts[hl] = '\0';
    /* Each entry must be host:port with a numeric port. */
    for (const char *h = hosts; *h;) {
        size_t el = strcspn(h, ",");
        const char *colon = NULL;
        for (size_t i = 0; i < el; i++)
            if (h[i] == ':')
                colon = h + i;
        int ok = colon && colon > h && colon + 1 < h + el;
        for (const char *d = colon ? colon + 1 : h; ok && d < h + el; d++)
            ok = isdigit((unsigned char)*d);
        if (!ok)
            return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                               "Kafka URL broker \"%.*s\" is not host:port", (int)el, h);
        h += el;
        if (*h == ',')
            h++;
    }

    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    if (!kc)
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    outbox_err_t err = outbox__kafka_conf_set(kc, "bootstrap.servers", hosts, errstr, errstr_size);
    if (!err && client_id && *client_id)
        err = outbox__kafka_conf_set(kc, "client.id", client_id, errstr, errstr_size);
    if (!err && user[0]) {
        err =
            outbox__kafka_conf_set(kc, "security.protocol", "sasl_plaintext", errstr, errstr_size);
        if (!err)
            err = outbox__kafka_conf_set(kc, "sasl.mechanisms", "PLAIN", errstr, errstr_size);
        if (!err)
            err = outbox__kafka_conf_set(kc, "sasl.username", user, errstr, errstr_size);
        if (!err)
            err = outbox__kafka_conf_set(kc, "sasl.password", pass, errstr, errstr_size);
    }
    /* Quick reconnects: a relay should notice a broker back within seconds. */
    if (!err)
        err = outbox__kafka_conf_set(kc, "reconnect.backoff.ms", "100", errstr, errstr_size);
    if (!err)
        err = outbox__kafka_conf_set(kc, "reconnect.backoff.max.ms", "2000", errstr, errstr_size);
    if (!err)
        err = outbox__kafka_conf_set(kc, "socket.keepalive.enable", "true", errstr, errstr_size);
    if (!err)
        err = outbox__kafka_conf_set(kc, "log.connection.close", "false", errstr, errstr_size);
    memset(pass, 0, sizeof(pass));
    if (err) {
        rd_kafka_conf_destroy(kc);
        return err;
    }
    rd_kafka_conf_set_log_cb(kc, log_cb);
    *out = kc;
    return OUTBOX_OK;
}

static void trim(char *s)
{
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    size_t i = 0;
    while (s[i] && isspace((unsigned char)s[i]))
        i++;
    if (i)
        memmove(s, s + i, n - i + 1);
}

outbox_err_t outbox__kafka_conf_apply_extra(rd_kafka_conf_t *kc, const outbox_conf_t *conf,
                                            char *errstr, size_t errstr_size)
{
    const char *p = outbox__conf_str(conf, "kafka_properties");
    while (*p) {
        char item[1024];
        size_t n = 0;
        for (; *p && *p != ','; p++) {
            if (*p == '\\' && p[1] == ',')
                p++;
            if (n + 1 >= sizeof(item))
                return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                                   "kafka_properties: an entry is longer than %zu bytes",
                                   sizeof(item) - 1);
            item[n++] = *p;
        }
        item[n] = '\0';
        if (*p == ',')
            p++;
        char *eq = strchr(item, '=');
        if (!eq) {
            trim(item);
            if (!item[0])
                continue; /* "a=b,,c=d" or a trailing comma */
            return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                               "kafka_properties: entry \"%.64s\" is not name=value", item);
        }
        *eq = '\0';
        char *val = eq + 1;
        trim(item);
        trim(val);
        outbox_err_t err = outbox__kafka_conf_set(kc, item, val, errstr, errstr_size);
        if (err)
            return err;
    }
    return OUTBOX_OK;
}

int outbox__kafka_err_is_transport(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__RESOLVE:
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT_QUEUE:
    case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
    case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
    case RD_KAFKA_RESP_ERR__FATAL:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
    case RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION:
        return 1;
    default:
        return 0;
    }
}
