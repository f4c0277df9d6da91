/* Consuming events from a broker, chosen by URL like the sinks:
 * redis:// (Streams, consumer group), redis+pubsub://, kafka://, amqp://,
 * nats:// (JetStream durable consumer). Combine with outbox_inbox_record()
 * so each effect happens once per message id. */
#ifndef OUTBOX_CONSUMER_H
#define OUTBOX_CONSUMER_H

#include <stddef.h>

#include "outbox/envelope.h"
#include "outbox/outbox.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct outbox_consumer_s outbox_consumer_t;

/** One received message. Valid only during the handler call. */
typedef struct outbox_delivery_s {
    const char *topic; /**< stream / topic / queue / subject it came from */
    const char *body;  /**< raw body as received */
    size_t body_len;
    outbox_envelope_t env; /**< parsed CloudEvents attributes + data (structured or binary mode) */
    int redelivered;       /**< 1 if the broker says it delivered this before (when known) */
} outbox_delivery_t;

/**
 * Called once per message, in broker order per key. Return OUTBOX_OK to
 * acknowledge it (after your transaction committed); any other value leaves
 * it unacknowledged so the broker delivers it again later.
 * A message whose body is not a valid CloudEvents document is logged and
 * acknowledged without calling the handler (it can never succeed).
 */
typedef outbox_err_t (*outbox_consumer_handler_fn)(const outbox_delivery_t *d, void *opaque);

/**
 * Creates a consumer for url reading topics[0..ntopics).
 *   group: consumer group / durable / queue name shared by the instances
 *          that split the work (e.g. "inventory");
 *   name:  this instance's name within the group (e.g. "inventory-1").
 * conf is copied where needed; the caller keeps ownership of it and of the
 * strings. Connects lazily: a consumer starts while the broker is down.
 * NULL with errstr for an unsupported or malformed URL (OUTBOX_ERR_CONFIG's
 * reason) or ENOMEM. Each consumer is used by one thread at a time; run
 * several consumers (same group, different names) for parallelism.
 */
outbox_consumer_t *outbox_consumer_new(const char *url, const char *group, const char *name,
                                       const char *const *topics, int ntopics,
                                       const outbox_conf_t *conf, char *errstr, size_t errstr_size);

/**
 * Waits up to timeout_ms for messages and calls handler for each. Returns
 * OUTBOX_OK (possibly having handled none), or OUTBOX_ERR_BROKER when the
 * broker is unreachable (call again later; it reconnects). Messages left
 * unacknowledged by a crashed instance of the same group are taken over
 * (Redis: XAUTOCLAIM after min-idle; others: the broker's redelivery).
 * The handler runs on the calling thread. OUTBOX_ERR_INVALID_ARG without a
 * handler. One thread at a time per consumer.
 */
outbox_err_t outbox_consumer_poll(outbox_consumer_t *c, int timeout_ms,
                                  outbox_consumer_handler_fn handler, void *opaque);

/** Last error message of this consumer ("" if none). The string belongs to
 *  the consumer and changes with the next poll. */
const char *outbox_consumer_errstr(const outbox_consumer_t *c);

/** Closes the broker connection (unacknowledged messages are delivered again
 *  later, to this group) and frees c. outbox_consumer_destroy(NULL) is a
 *  no-op. Not while a poll on c is running. */
void outbox_consumer_destroy(outbox_consumer_t *c);

#ifdef __cplusplus
}
#endif
#endif
