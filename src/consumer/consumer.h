/*
 * Consumers: one file per broker, src/consumer/<name>.c defining
 *   const outbox_consumer_ops_t outbox__consumer_<name>_ops = {...};
 * The registry is generated from the file names at configure time
 * (CMakeLists.txt), like the sinks. An instance is used by one thread.
 */
#ifndef OUTBOX_CONSUMER_CONSUMER_H
#define OUTBOX_CONSUMER_CONSUMER_H

#include "outbox/consumer.h"

typedef struct outbox_consumer_ops_s {
    const char *name;
    const char *const *schemes; /**< URL schemes handled, NULL-terminated */
    /** Parses c->url and prepares c->state; must not fail because the broker is down. */
    outbox_err_t (*open)(outbox_consumer_t *c, char *errstr, size_t errstr_size);
    /** See outbox_consumer_poll(). Use outbox__consumer_dispatch() to parse
     *  the body and call the handler. Fill c->errstr on errors. */
    outbox_err_t (*poll)(outbox_consumer_t *c, int timeout_ms, outbox_consumer_handler_fn fn,
                         void *opaque);
    void (*close)(outbox_consumer_t *c);
} outbox_consumer_ops_t;

struct outbox_consumer_s {
    const outbox_consumer_ops_t *ops;
    char *url;          /**< owned; may hold a password: never log it raw */
    char *group, *name; /**< owned */
    char **topics;      /**< owned */
    int ntopics;
    outbox_conf_t *conf; /**< owned copy */
    void *state;
    char errstr[512];
};

/**
 * Parses body as a structured-mode CloudEvents document (or, when attrs is
 * not NULL, as binary mode: attrs is a NULL-terminated list of alternating
 * "ce_<attr>"/value pairs and body is the data), then calls fn.
 * Returns fn's result; an unparseable message is logged and reported as
 * OUTBOX_OK so that the caller acknowledges (drops) it.
 */
outbox_err_t outbox__consumer_dispatch(outbox_consumer_t *c, const char *topic, const char *body,
                                       size_t len, const char *const *attrs, int redelivered,
                                       outbox_consumer_handler_fn fn, void *opaque);

#endif
