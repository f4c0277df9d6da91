/* Redis URLs, shared by the Redis sink, the Redis consumer and outboxctl:
 *   redis://[[user]:password@]host[:port][/db]
 *   redis+pubsub://...   (same, Pub/Sub instead of Streams) */
#ifndef OUTBOX_CORE_REDIS_URL_H
#define OUTBOX_CORE_REDIS_URL_H

#include <stddef.h>

#include "outbox/outbox.h"

typedef struct outbox__redis_url_s {
    char host[256];     /* default 127.0.0.1 */
    int port;           /* default 6379 */
    int db;             /* default 0 */
    char password[256]; /* "" when none */
    int pubsub;         /* 1 for redis+pubsub:// */
} outbox__redis_url_t;

/** Parses url into *u. OUTBOX_ERR_CONFIG with a message (never showing the
 *  password) for anything that is not a Redis URL with a valid port. */
outbox_err_t outbox__redis_url_parse(const char *url, outbox__redis_url_t *u, char *errstr,
                                     size_t errstr_size);

#endif
