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
 * Called once per message, in broker order per key. Its result says what
 * happens to the message:
 *
 *   OUTBOX_OK            done: the message is acknowledged (return it after
 *                        your transaction committed; inside a batch, after
 *                        your work: the batch's COMMIT comes first, see
 *                        outbox_consumer_set_batch()).
 *   OUTBOX_ERR_REJECTED  it can never succeed (e.g. a malformed payload):
 *                        dead-lettered now, acknowledged, the consumer moves on.
 *   OUTBOX_ERR_DB        your own database is unreachable or failed: retried
 *                        later WITHOUT charging an attempt (an outage never
 *                        dead-letters healthy messages); the whole consumer
 *                        pauses with backoff (at most 5 s) until a handler
 *                        call succeeds again.
 *   any other error      retried later, charging one attempt; after
 *                        consumer_max_attempts (default 10) failed attempts it
 *                        is dead-lettered and acknowledged.
 *
 * Retries wait consumer_retry_backoff, doubling per attempt up to
 * consumer_retry_backoff_max. A message waiting for its retry holds back
 * only the later messages of its own key (Redis Streams, RabbitMQ, NATS) or
 * of its partition (Kafka: offsets are per partition); every other key
 * keeps flowing. Dead-lettering it releases its key.
 *
 * Attempts and dead letters live in the consumer's own database: the
 * database_url of the conf given to outbox_consumer_new() (or DB_HOST and
 * friends; it must be set explicitly), tables outbox_consumer_attempt and
 * outbox_consumer_dead_letter, created by outbox_migrate() / outboxctl
 * migrate. The consumer opens its own session there. Without a configured
 * database (or with consumer_dead_letters=false, or while those tables are
 * missing) attempts are not counted and a failing or rejected message is
 * retried for ever, with backoff.
 * Dead letters are listed, shown, requeued and purged with
 * `outboxctl consumer-dlq` (docs/OPERATIONS.md); a requeued one is handed to
 * this handler again by a consumer of its group within about a second
 * (out of its key's order: its key moved on when it died).
 *
 * A message whose body is not a valid CloudEvents document is logged and
 * acknowledged without calling the handler (it can never succeed).
 */
typedef outbox_err_t (*outbox_consumer_handler_fn)(const outbox_delivery_t *d, void *opaque);

/**
 * Records why the handler is failing d (printf-style); the text goes into
 * the message's error history (and the dead letter's last_error) after
 * outbox_err_str() of the handler's result. Call it from the handler,
 * during the call for d, before returning an error; elsewhere it does
 * nothing. Texts longer than 1 KiB are cut.
 */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 2, 3)))
#endif
void outbox_delivery_set_error(const outbox_delivery_t *d, const char *fmt, ...);

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

/** What a batch hook is asked to do (outbox_consumer_set_batch()). The
 *  work of each handler call goes in a savepoint of its own, numbered from
 *  1 in each batch (savepoint names never repeat within a batch). */
typedef enum {
    OUTBOX_CONSUMER_BATCH_BEGIN,       /**< open the batch's transaction (BEGIN) */
    OUTBOX_CONSUMER_BATCH_SAVEPOINT,   /**< open savepoint n (SAVEPOINT), for the first handler
                                            call that works */
    OUTBOX_CONSUMER_BATCH_NEXT,        /**< a handler call succeeded in savepoint n - 1: keep its
                                            work, open savepoint n for the next one (RELEASE
                                            SAVEPOINT; SAVEPOINT) */
    OUTBOX_CONSUMER_BATCH_ROLLBACK_TO, /**< the handler failed: undo its work only (ROLLBACK TO
                                            SAVEPOINT n; it stays open, empty, for the next
                                            handler call) */
    OUTBOX_CONSUMER_BATCH_COMMIT,      /**< end the batch, keeping its work (COMMIT) */
    OUTBOX_CONSUMER_BATCH_ABORT        /**< end the batch, undoing all of it (ROLLBACK) */
} outbox_consumer_batch_op_t;

/** A batch hook: does op on the session the handler uses (n: the savepoint
 *  of SAVEPOINT, NEXT and ROLLBACK_TO; 0 for the others) and returns
 *  OUTBOX_OK, or an error when it failed (OUTBOX_ERR_DB). NEXT may return
 *  before its answer comes (outbox_consumer_batch_pg does: the next
 *  statement on the session waits for it); if it failed, the transaction
 *  is aborted, savepoint n does not exist, and so the next ROLLBACK TO or
 *  the COMMIT fails. For OUTBOX_CONSUMER_BATCH_COMMIT, OUTBOX_OK only when
 *  the transaction is known to have committed: a COMMIT whose answer was
 *  lost is an error. */
typedef outbox_err_t (*outbox_consumer_batch_fn)(outbox_consumer_batch_op_t op, int n,
                                                 void *opaque);

/**
 * Opts c into batches: one database transaction per poll instead of one per
 * message, so one commit (one WAL flush) covers up to consumer_batch
 * messages. When a poll returns two messages or more, the consumer asks fn
 * to BEGIN, runs the work of each handler call inside a savepoint of its
 * own (opened by outbox_delivery_batched(); ROLLBACK TO it after any error:
 * a failing message undoes only its own work, the others of the batch still
 * commit), then COMMIT; it acknowledges the batch's messages to the broker
 * only after the COMMIT succeeded. The handler contract is unchanged,
 * except that inside a batch (outbox_delivery_batched() says so, called
 * before any database work) the handler neither begins nor commits: it does
 * its work, outbox_inbox_record() included, on the open transaction and
 * returns OUTBOX_OK. Retries, attempts, dead letters and the per-key rule
 * are as for single messages: a later message of a failed message's key is
 * not handed to the handler in the same batch.
 *
 * When the COMMIT fails or its outcome is unknown (connection lost), no
 * message of the batch is acknowledged: all are delivered again, and the
 * inbox turns the ones that did commit into duplicates. When BEGIN fails
 * the poll's messages go one by one, as without a batch (the handler then
 * opens its own transaction, sees the database down, and answers
 * OUTBOX_ERR_DB). A savepoint operation that fails ends the batch: it is
 * aborted and its messages are delivered again.
 *
 * Redis Streams only for now; the other consumers (and Redis Pub/Sub, and
 * requeued dead letters) keep calling the handler outside a batch. The
 * setting consumer_batch_transaction=false turns batches off. fn NULL turns
 * them off too. opaque is passed to fn; the caller keeps ownership. Not
 * while a poll on c is running.
 */
void outbox_consumer_set_batch(outbox_consumer_t *c, outbox_consumer_batch_fn fn, void *opaque);

/**
 * The most messages one batch takes (a poll reads no more while batches are
 * on): 48 by default, because each message's savepoint is a subtransaction
 * and past 64 in one transaction PostgreSQL's shared cache overflows and
 * every snapshot of the server gets slower. A handler that opens no
 * savepoint in a batch (it collects the messages and the hook applies them
 * in a few statements at the COMMIT, as docs/ORDERS.md describes) can take
 * up to consumer_batch; set it back to 0 (the default) before a poll whose
 * handler calls will open savepoints. Not while a poll on c is running.
 * Redis Streams consumers (the ones with batches).
 */
void outbox_consumer_set_batch_max(outbox_consumer_t *c, int max);

/**
 * A batch hook for PostgreSQL: opaque is a PGconn ** (the handler's
 * session, which the application may replace between polls). Runs BEGIN,
 * SAVEPOINT outbox_message_<n>, RELEASE SAVEPOINT + SAVEPOINT (sent without
 * waiting for the answer: it overlaps with the consumer's work on the next
 * message), ROLLBACK TO SAVEPOINT, COMMIT or ROLLBACK on it. OUTBOX_ERR_DB
 * without a usable session, when the statement fails, or when COMMIT did
 * not commit (the transaction had failed, or the answer was lost).
 */
outbox_err_t outbox_consumer_batch_pg(outbox_consumer_batch_op_t op, int n, void *opaque);

/**
 * Call from the handler before its database work: 1 when d's handler call
 * runs inside a batch (outbox_consumer_set_batch()); the first call for d
 * then opens d's savepoint on the batch's transaction, and the handler
 * must not BEGIN, COMMIT or ROLLBACK. 0 outside a batch (open your own
 * transaction), and outside the handler call for d. A handler that returns
 * without calling it (a message it ignores) costs no savepoint; it must
 * then not have touched the database. If the savepoint cannot be opened,
 * the batch is rolled back and delivered again whatever the handler does.
 */
int outbox_delivery_batched(const outbox_delivery_t *d);

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
