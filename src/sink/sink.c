/* Sink registry: picks the ops table by URL scheme. The table itself is
 * generated at configure time from the files present in src/sink/. */
#include "sink/sink.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/conf.h"
#include "core/util.h"

/* Generated from the files in src/sink/ (see CMakeLists.txt), NULL-terminated. */
extern const outbox_sink_ops_t *const outbox__sink_registry[];

static const outbox_sink_ops_t *const *registry(void)
{
    return outbox__sink_registry;
}

static const outbox_sink_ops_t *find(const char *url)
{
    for (const outbox_sink_ops_t *const *o = registry(); *o; o++)
        for (const char *const *s = (*o)->schemes; *s; s++)
            if (outbox__url_scheme_is(url, *s))
                return *o;
    return NULL;
}

int outbox__sink_supported(const char *url)
{
    return find(url) != NULL;
}

static char schemes_buf[256];
static pthread_once_t schemes_once = PTHREAD_ONCE_INIT;

static void schemes_init(void)
{
    size_t n = 0;
    for (const outbox_sink_ops_t *const *o = registry(); *o; o++)
        for (const char *const *s = (*o)->schemes; *s && n < sizeof(schemes_buf); s++)
            n += (size_t)snprintf(schemes_buf + n, sizeof(schemes_buf) - n, "%s%s:", n ? ", " : "",
                                  *s);
}

const char *outbox__sink_schemes(void)
{
    pthread_once(&schemes_once, schemes_init);
    return schemes_buf;
}

int64_t outbox__sink_deadline(const outbox_sink_t *sink)
{
    int64_t cap = outbox__now_ms() + (sink->timeout_ms > 0 ? sink->timeout_ms : 0);
    return sink->deadline_ms > 0 && sink->deadline_ms < cap ? sink->deadline_ms : cap;
}

void outbox__sink_out_of_time(outbox_pub_result_t *res, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        res[i].err = OUTBOX_ERR_TIMEOUT;
        res[i].retry_after_ms = 0;
        res[i].not_sent = 1;
        snprintf(res[i].errstr, sizeof(res[i].errstr),
                 "not sent: the publish deadline passed before it was attempted");
    }
}

outbox_sink_t *outbox__sink_new(const char *url, const outbox_conf_t *conf, const char *owner,
                                char *errstr, size_t errstr_size)
{
    const outbox_sink_ops_t *ops = find(url);
    if (!ops) {
        outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                    "unsupported sink URL scheme in \"%.*s\" (supported: %s)",
                    url && strchr(url, ':') ? (int)(strchr(url, ':') - url) : 16, url ? url : "",
                    outbox__sink_schemes());
        return NULL;
    }
    return outbox__sink_new_with(ops, url, conf, owner, errstr, errstr_size);
}

outbox_sink_t *outbox__sink_new_with(const outbox_sink_ops_t *ops, const char *url,
                                     const outbox_conf_t *conf, const char *owner, char *errstr,
                                     size_t errstr_size)
{
    outbox_sink_t *s = calloc(1, sizeof(*s));
    if (!s || !(s->url = strdup(url))) {
        free(s);
        outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
        return NULL;
    }
    s->ops = ops;
    s->conf = conf;
    s->timeout_ms = outbox__conf_ms(conf, "publish_timeout");
    s->deadline_ms = INT64_MAX;
    snprintf(s->name, sizeof(s->name), "%s", owner ? owner : "sink");
    if (ops->open(s, errstr, errstr_size) != OUTBOX_OK) {
        free(s->url);
        free(s);
        return NULL;
    }
    return s;
}

void outbox__sink_destroy(outbox_sink_t *sink)
{
    if (!sink)
        return;
    if (sink->ops && sink->ops->close)
        sink->ops->close(sink);
    free(sink->url);
    free(sink);
}
