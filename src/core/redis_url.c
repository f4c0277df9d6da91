#include "core/redis_url.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/util.h"

outbox_err_t outbox__redis_url_parse(const char *url, outbox__redis_url_t *u, char *errstr,
                                     size_t errstr_size)
{
    memset(u, 0, sizeof(*u));
    if (url && (!strncasecmp(url, "rediss:", 7) || !strncasecmp(url, "rediss+pubsub:", 14)))
        return outbox__err(
            OUTBOX_ERR_CONFIG, errstr, errstr_size,
            "rediss:// (Redis over TLS) is not supported: the hiredis this is built with (Debian "
            "12: 0.14) has no TLS. Put a TLS tunnel (stunnel, spiped) next to the relay and use "
            "redis:// to it (docs/SECURITY.md)");
    const char *p = url ? strstr(url, "://") : NULL;
    if (!p || (strncasecmp(url, "redis:", 6) && strncasecmp(url, "redis+pubsub:", 13)))
        return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                           "a Redis URL must look like redis://[:password@]host[:port][/db]");
    u->pubsub = !strncasecmp(url, "redis+pubsub:", 13);
    p += 3;
    const char *at = strchr(p, '@');
    const char *slash = strchr(p, '/');
    if (at && (!slash || at < slash)) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pw = colon ? colon + 1 : p;
        snprintf(u->password, sizeof(u->password), "%.*s", (int)(at - pw), pw);
        p = at + 1;
        slash = strchr(p, '/');
    }
    const char *end = slash ? slash : p + strlen(p);
    const char *colon = memchr(p, ':', (size_t)(end - p));
    u->port = 6379;
    if (colon) {
        char *e;
        snprintf(u->host, sizeof(u->host), "%.*s", (int)(colon - p), p);
        long port = strtol(colon + 1, &e, 10);
        u->port = e == end && port > 0 && port <= 65535 ? (int)port : -1;
    } else {
        snprintf(u->host, sizeof(u->host), "%.*s", (int)(end - p), p);
    }
    if (!u->host[0])
        snprintf(u->host, sizeof(u->host), "127.0.0.1");
    if (u->port < 0)
        return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                           "Redis URL for host %s has a bad port", u->host);
    if (slash && slash[1]) {
        char *e;
        long db = strtol(slash + 1, &e, 10);
        if (*e || db < 0 || db > 65535)
            return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                               "Redis URL has a bad database number");
        u->db = (int)db;
    }
    return OUTBOX_OK;
}
