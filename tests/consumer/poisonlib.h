/* The consumer poison scenario, the same for every broker (poisonlib.c):
 *
 *   1. The relay publishes 1,000 events over 20 keys; one (the 501st, key
 *      k-0) is poison: the handler fails it every time. The consumer's
 *      database goes through a TCP proxy (tests/orders/pgproxy.c).
 *      -> 999 effects applied once each, in per-key order; the poison is
 *         dead-lettered after consumer_max_attempts with its body byte for
 *         byte and its error history; outboxctl consumer-dlq lists and shows
 *         it; the group was never stalled (the 999 include its key's later
 *         events).
 *   2. The handler is fixed; outboxctl consumer-dlq requeue ID -> the
 *      consumer applies it: 1,000 effects, no dead letter left.
 *   3. 1,000 more events; after the handler applied 200 of them the proxy
 *      cuts the consumer's database for 10 s (every connection, new ones
 *      refused) while the consumer keeps polling.
 *      -> nothing dead-lettered, no attempt charged, and after the database
 *         is back all 2,000 effects applied exactly once, in per-key order.
 *
 * Each broker's test starts its server and calls pl_run(). */
#ifndef OUTBOX_TESTS_POISONLIB_H
#define OUTBOX_TESTS_POISONLIB_H

typedef struct pl_broker_s {
    const char *name;            /**< "redis", ... (logs) */
    const char *url;             /**< sink and consumer URL */
    const char *topic;           /**< unique per run where the broker is shared */
    const char *const *consumer; /**< extra consumer conf pairs, NULL-terminated (or NULL) */
    const char *const *relay;    /**< extra relay conf pairs (or NULL) */
} pl_broker_t;

/** Runs the scenario; fails the test (exit 1) on any violation. */
void pl_run(const char *test_name, const pl_broker_t *b);

#endif
