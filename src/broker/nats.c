/* NATS JetStream client code shared by the sink and the consumer (nats.c).
 * See broker/nats.h. */
#include "broker/nats.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/conf.h"
#include "core/log.h"
#include "core/util.h"

#define COMPONENT "nats"
#define DEFAULT_PORT 4222

void outbox__nats_errtext(natsStatus s, char *out, size_t out_size)
{
    natsStatus ls = NATS_OK;
    const char *last = nats_GetLastError(&ls);
    if (last && *last && ls == s)
        snprintf(out, out_size, "%s (%s)", natsStatus_GetText(s), last);
    else
        snprintf(out, out_size, "%s", natsStatus_GetText(s));
}

outbox_err_t outbox__nats_parse_url(const char *url, outbox__nats_url_t *u, char *errstr,
                                    size_t errstr_size)
{
    memset(u, 0, sizeof(*u));
    const char *p = url ? strstr(url, "://") : NULL;
    if (p && (!strncasecmp(url, "nats+tls://", 11) || !strncasecmp(url, "tls://", 6)))
        u->tls = 1;
    else if (!p || strncasecmp(url, "nats://", 7))
        return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                           "NATS URL must look like nats://[user:pass@]host:port[,host:port] "
                           "(nats+tls://... for TLS)");
    p += 3;
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        size_t ulen = colon ? (size_t)(colon - p) : (size_t)(at - p);
        if (ulen >= sizeof(u->user) || (colon && (size_t)(at - colon - 1) >= sizeof(u->password)))
            return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                               "NATS URL credentials are too long");
        memcpy(u->user, p, ulen);
        u->user[ulen] = '\0';
        if (colon) {
            memcpy(u->password, colon + 1, (size_t)(at - colon - 1));
            u->password[at - colon - 1] = '\0';
        }
        p = at + 1;
    }
    while (*p) {
        /* host, [v6]:port or host:port; a leading "nats://" (or, with TLS,
         * "tls://") per entry is accepted */
        if (!strncasecmp(p, "nats://", 7))
            p += 7;
        else if (u->tls && !strncasecmp(p, "tls://", 6))
            p += 6;
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *hend = slash ? slash : end;
        if (u->nservers == OUTBOX__NATS_MAX_SERVERS)
            return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                               "NATS URL lists more than %d servers", OUTBOX__NATS_MAX_SERVERS);
        const char *colon = NULL;
        for (const char *c = hend - 1; c >= p && *c != ']'; c--)
            if (*c == ':') {
                colon = c;
                break;
            }
        int port = DEFAULT_PORT;
        size_t hlen = (size_t)((colon ? colon : hend) - p);
        if (colon) {
            char *e;
            long v = strtol(colon + 1, &e, 10);
            if (e != hend || v <= 0 || v > 65535)
                return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                                   "NATS URL has a bad port in \"%.*s\"", (int)(hend - p), p);
            port = (int)v;
        }
        if (hlen == 0)
            return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                               "NATS URL has an empty host");
        if (hlen > 255)
            return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size, "NATS URL host is too long");
        snprintf(u->servers[u->nservers++], sizeof(u->servers[0]), "%s://%.*s:%d",
                 u->tls ? "tls" : "nats", (int)hlen, p, port);
        p = comma ? comma + 1 : end;
    }
    if (!u->nservers)
        return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size, "NATS URL names no server");
    return OUTBOX_OK;
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)closure;
    if (natsConnection_IsClosed(nc))
        return; /* closed on purpose */
    outbox__log(OUTBOX_LOG_WARN, COMPONENT, "disconnected", "NATS connection lost; reconnecting",
                NULL);
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    (void)closure;
    char url[300] = "";
    natsConnection_GetConnectedUrl(nc, url, sizeof(url));
    outbox__log(OUTBOX_LOG_INFO, COMPONENT, "reconnected", "NATS connection re-established",
                "server", url, NULL);
}

static void on_async_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
    (void)closure;
    (void)sub;
    outbox__log(OUTBOX_LOG_WARN, COMPONENT, "async_error", natsStatus_GetText(err), NULL);
}

outbox_err_t outbox__nats_connect(const outbox__nats_url_t *u, const char *who, int64_t timeout_ms,
                                  natsConnection **ncp, char *errstr, size_t errstr_size)
{
    natsOptions *o = NULL;
    const char *servers[OUTBOX__NATS_MAX_SERVERS];
    for (int i = 0; i < u->nservers; i++)
        servers[i] = u->servers[i];
    char name[96];
    snprintf(name, sizeof(name), "outbox %s", who ? who : "");
    natsStatus s = natsOptions_Create(&o);
    if (s == NATS_OK)
        s = natsOptions_SetServers(o, servers, u->nservers);
    if (s == NATS_OK && u->user[0] && u->password[0])
        s = natsOptions_SetUserInfo(o, u->user, u->password);
    else if (s == NATS_OK && (u->user[0] || u->password[0]))
        s = natsOptions_SetToken(o, u->user[0] ? u->user
                                               : u->password); /* nats://:token@ or nats://token@ */
    if (s == NATS_OK)
        s = natsOptions_SetName(o, name);
    if (s == NATS_OK && u->tls) {
        /* TLS required; nats.c verifies the chain and the URL's host name */
        s = natsOptions_SetSecure(o, true);
        if (s == NATS_OK && u->ca_file[0]) {
            s = natsOptions_LoadCATrustedCertificates(o, u->ca_file);
            if (s != NATS_OK) {
                char t[200];
                outbox__nats_errtext(s, t, sizeof(t));
                natsOptions_Destroy(o);
                return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                                   "nats_ca_file %s: cannot load CA certificates: %s", u->ca_file,
                                   t);
            }
        }
    }
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(o, timeout_ms > 0 ? timeout_ms : 2000);
    if (s == NATS_OK)
        s = natsOptions_SetAllowReconnect(o, true);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(o, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(o, 250);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectJitter(o, 100, 1000);
    if (s == NATS_OK)
        s = natsOptions_SetPingInterval(o, 10000);
    if (s == NATS_OK)
        s = natsOptions_SetMaxPingsOut(o, 2);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(o, on_disconnected, NULL);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(o, on_reconnected, NULL);
    if (s == NATS_OK)
        s = natsOptions_SetErrorHandler(o, on_async_error, NULL);
    if (s != NATS_OK) {
        natsOptions_Destroy(o);
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "NATS options: %s",
                           natsStatus_GetText(s));
    }
    *ncp = NULL;
    s = natsConnection_Connect(ncp, o);
    natsOptions_Destroy(o);
    if (s != NATS_OK) {
        char t[200];
        outbox__nats_errtext(s, t, sizeof(t));
        natsConnection_Destroy(*ncp);
        *ncp = NULL;
        return outbox__err(OUTBOX_ERR_BROKER, errstr, errstr_size,
                           "cannot connect to NATS at %s%s: %s", u->servers[0],
                           u->nservers > 1 ? " (and others)" : "", t);
    }
    return OUTBOX_OK;
}

void outbox__nats_stream_name(const char *topic, char *out, size_t out_size)
{
    size_t i = 0;
    for (; topic[i] && i + 1 < out_size; i++) {
        unsigned char c = (unsigned char)topic[i];
        out[i] = (c == '.' || c == '*' || c == '>' || c == '/' || c == '\\' || isspace(c))
                     ? '_'
                     : (char)toupper(c);
    }
    out[i] = '\0';
}

int outbox__nats_is_broker_status(natsStatus s)
{
    return s == NATS_TIMEOUT || s == NATS_NO_RESPONDERS || s == NATS_CONNECTION_CLOSED ||
           s == NATS_CONNECTION_DISCONNECTED || s == NATS_NO_SERVER || s == NATS_STALE_CONNECTION ||
           s == NATS_IO_ERROR || s == NATS_NOT_YET_CONNECTED || s == NATS_CONNECTION_AUTH_FAILED;
}

outbox_err_t outbox__nats_ensure_stream(jsCtx *js, const outbox_conf_t *conf, const char *topic,
                                        int64_t timeout_ms, char *errstr, size_t errstr_size)
{
    if (!outbox__conf_bool(conf, "nats_stream_create"))
        return OUTBOX_OK;
    char name[256], subj[512], t[256];
    outbox__nats_stream_name(topic, name, sizeof(name));
    snprintf(subj, sizeof(subj), "%s.>", topic);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = timeout_ms > 0 ? timeout_ms : 5000;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, js, name, &jo, &jerr);
    if (s == NATS_OK) {
        jsStreamInfo_Destroy(si);
        return OUTBOX_OK;
    }
    if (s != NATS_NOT_FOUND && jerr != JSStreamNotFoundErr) {
        outbox__nats_errtext(s, t, sizeof(t));
        return outbox__err(outbox__nats_is_broker_status(s) ? OUTBOX_ERR_BROKER : OUTBOX_ERR_CONFIG,
                           errstr, errstr_size, "JetStream stream lookup %s failed: %s%s", name, t,
                           s == NATS_NO_RESPONDERS ? " (is JetStream enabled on the server, -js?)"
                                                   : "");
    }
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    const char *subjects[1] = {subj};
    cfg.Name = name;
    cfg.Description = "created by outbox";
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = strcmp(outbox__conf_str(conf, "nats_stream_storage"), "memory")
                      ? js_FileStorage
                      : js_MemoryStorage;
    cfg.Replicas = outbox__conf_int(conf, "nats_stream_replicas");
    int64_t max_age = outbox__conf_ms(conf, "nats_stream_max_age");
    int64_t dup = outbox__conf_ms(conf, "nats_dup_window");
    if (max_age > 0 && dup > max_age)
        dup = max_age; /* the server refuses a window longer than the age limit */
    cfg.MaxAge = max_age * 1000000;
    cfg.Duplicates = dup * 1000000;
    si = NULL;
    jerr = 0;
    s = js_AddStream(&si, js, &cfg, &jo, &jerr);
    if (s == NATS_OK) {
        jsStreamInfo_Destroy(si);
        outbox__log(OUTBOX_LOG_INFO, COMPONENT, "stream_created", "created JetStream stream",
                    "stream", name, "subjects", subj, NULL);
        return OUTBOX_OK;
    }
    if (jerr == JSStreamSubjectOverlapErr || jerr == JSStreamNameExistErr)
        return OUTBOX_OK; /* another stream captures the subjects, or we raced another worker */
    outbox__nats_errtext(s, t, sizeof(t));
    return outbox__err(outbox__nats_is_broker_status(s) ? OUTBOX_ERR_BROKER : OUTBOX_ERR_CONFIG,
                       errstr, errstr_size,
                       "cannot create JetStream stream %s (subjects %s): %s (code %d)", name, subj,
                       t, (int)jerr);
}
