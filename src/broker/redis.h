/* Redis client code shared by the Redis sink (src/sink/redis.c), the Redis
 * consumer (src/consumer/redis.c), outboxctl replay and the order service's
 * start-up check, on hiredis. URLs are parsed by core/redis_url.h. */
#ifndef OUTBOX_BROKER_REDIS_H
#define OUTBOX_BROKER_REDIS_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#include "core/redis_url.h"

/**
 * Connects to u->host:u->port, then sends AUTH u->password when it is set
 * and SELECT u->db when it is not 0. timeout_ms > 0 bounds the connect and
 * every command (also the caller's later ones: redisSetTimeout); <= 0 means
 * no bound. Returns the context (the caller owns it: redisFree), or NULL with
 * errstr saying which step failed and why, naming host:port but never the
 * password (an I/O failure says its errno text).
 */
redisContext *outbox__redis_connect(const outbox__redis_url_t *u, int64_t timeout_ms, char *errstr,
                                    size_t errstr_size);

/** The most elements a reply's array may declare (1,048,576): more is
 *  refused before anything is allocated. */
#define OUTBOX__REDIS_MAX_ELEMENTS (1 << 20)

/**
 * Makes reader (made with hiredis' default reply functions) refuse an array
 * that declares more than OUTBOX__REDIS_MAX_ELEMENTS elements: hiredis 0.14
 * allocates the declared count at once, so 12 bytes from the server
 * ("*300000000\r\n") asked for 2.4 GB. The reader then fails as it does
 * when out of memory ("Out of memory"), and the caller reconnects.
 * outbox__redis_connect does this for every context it makes.
 */
void outbox__redis_guard_reader(redisReader *reader);

#endif
