/* The consumer poison scenario, the same for every broker (poisonlib.c):
 *
 *   1. The relay publishes 1,000 events over 20 keys; one (the 501st, key
 *      k-0) is poison: the handler fails it every time. The consumer's
 *      database goes through a TCP proxy (tests/orders/pgproxy.c).
 *      a. consumer_max_attempts 1000: while the poison is retried, every
 *         event not behind it (its key; on Kafka its partition) is applied
 *         and none behind it is: the group is not stalled, order is kept;
 *         the attempt count on record equals the handler's calls.
 *      b. The consumer is restarted with consumer_max_attempts 3: the count
 *         survived, the next failure dead-letters the poison (body byte for
 *         byte, one error history entry per attempt), its key flows again
 *         -> 999 effects applied once each, in per-key order; outboxctl
 *         consumer-dlq lists and shows it.
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
    /** After the publish: how many events wait behind the poison (Kafka:
     *  every later record of its partition, read back). NULL: its key's
     *  later events (the broker keeps per-key order only). */
    int (*behind)(void *arg, int poison_seq);
    void *arg;
} pl_broker_t;

/** Runs the scenario; fails the test (exit 1) on any violation. */
void pl_run(const char *test_name, const pl_broker_t *b);

#endif
