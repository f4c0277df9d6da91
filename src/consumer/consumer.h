/*
 * Consumers: one file per broker, src/consumer/<name>.c defining
 *   const outbox_consumer_ops_t outbox__consumer_<name>_ops = {...};
 * The registry is generated from the file names at configure time
 * (CMakeLists.txt), like the sinks. An instance is used by one thread.
 */
#ifndef OUTBOX_CONSUMER_CONSUMER_H
#define OUTBOX_CONSUMER_CONSUMER_H

#include <stdint.h>

#include "outbox/consumer.h"
#include "store/store.h"

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

/* ------------------------------------------------------------------------ */
/* Poison handling (consumer_poison.c)                                       */

/** A key whose head message failed: the head is tried again at due_ms; the
 *  key's later messages wait behind it, and when the head is done they go
 *  one at a time in the order they were first seen (brokers that redeliver
 *  in any order, like JetStream after naks, cannot reorder them). A head
 *  that does not come back by expire_ms (another instance took it over) no
 *  longer holds the key. */
typedef struct outbox__hold_s {
    char *key, *msg_id;
    int64_t due_ms, expire_ms;
    int failures; /**< in memory, for the delay when attempts are not counted in a database */
    char **queue; /**< followers, first seen first */
    int nq, capq;
} outbox__hold_t;

typedef struct outbox__holds_s {
    outbox__hold_t *v;
    int n, cap;
} outbox__holds_t;

/** What a handler's result asks for. */
typedef enum {
    OUTBOX__FATE_DONE,       /**< OUTBOX_OK: acknowledge */
    OUTBOX__FATE_REJECT,     /**< OUTBOX_ERR_REJECTED: dead-letter now, acknowledge */
    OUTBOX__FATE_RETRY_FREE, /**< OUTBOX_ERR_DB: retry later, no attempt charged */
    OUTBOX__FATE_RETRY       /**< any other error: retry later, one attempt charged */
} outbox__fate_t;

outbox__fate_t outbox__consumer_fate(outbox_err_t rc);
/** 1 when a message that has now failed `attempts` times goes to the dead letters. */
int outbox__consumer_is_dead(outbox__fate_t fate, int attempts, int max_attempts);
/** Delay before the next attempt after `failures` failures (>= 1):
 *  base * 2^(failures-1), at most max. Deterministic (no jitter). */
int64_t outbox__consumer_retry_delay(int failures, int64_t base_ms, int64_t max_ms);

/** 0 if a message (key, msg_id) may be handled at now; else how many ms
 *  (>= 1) it has to wait: its key is held by an earlier failed message (it
 *  joins the key's queue), or it is that message and its retry is not due.
 *  Drops expired holds. */
int64_t outbox__holds_wait(outbox__holds_t *h, const char *key, const char *msg_id, int64_t now);
/** msg_id of key failed (or was not handled): unless another message holds
 *  key, it holds key until due_ms (expiring at expire_ms). Returns the hold
 *  (its failures counted up), or NULL on ENOMEM or when another message holds key. */
outbox__hold_t *outbox__holds_fail(outbox__holds_t *h, const char *key, const char *msg_id,
                                   int64_t now, int64_t due_ms, int64_t expire_ms);
/** msg_id is done (handled or dead-lettered): the first follower in the
 *  key's queue becomes the head (due now), or the key is free. */
void outbox__holds_release(outbox__holds_t *h, const char *key, const char *msg_id, int64_t now);
/** Forgets key's hold, its queue included (the key is free). */
void outbox__holds_drop(outbox__holds_t *h, const char *key);
void outbox__holds_term(outbox__holds_t *h);

/** Per consumer: the database session for attempts and dead letters, the
 *  holds and the database-outage pause. */
typedef struct outbox__poison_s {
    int enabled; /**< consumer_dead_letters on and a database configured */
    int max_attempts;
    int64_t backoff_ms, backoff_max_ms;
    char *db_url; /**< owned; never logged raw */
    outbox_store_t *store;
    int64_t store_retry_ms;
    int store_down;
    int tables_missing; /**< logged that the migrations are missing */
    int on_record;      /**< attempts of this group may be on record: clear them on success */
    int64_t on_record_check_ms;
    int64_t requeue_check_ms;
    int requeued; /**< the delivery being handled is a requeued dead letter */
    int db_failures;
    int64_t pause_until_ms; /**< the consumer's database is down: no handler calls before */
    outbox__holds_t holds;
} outbox__poison_t;

/** Per consumer: the application's batch hook (outbox_consumer_set_batch())
 *  and the batch open on the current poll. */
typedef struct outbox__batch_s {
    outbox_consumer_batch_fn fn; /**< NULL: no batches */
    void *opaque;
    int enabled; /**< consumer_batch_transaction */
    int max;     /**< most messages per batch (outbox_consumer_set_batch_max); 0: default */
    int open;    /**< a batch transaction is open: handler calls go in savepoints */
    int broken;  /**< a savepoint operation failed: the batch is aborted at its end */
    int sp;    /**< number of the open savepoint (empty: the next handler call works in it), 0: none
                  yet */
    int ndone; /**< messages of the open batch that are done (to acknowledge) */
    char **keys; /**< their keys (owned), for the holds when the batch is aborted */
    int nkeys, capkeys;
} outbox__batch_t;

struct outbox_consumer_s {
    const outbox_consumer_ops_t *ops;
    char *url;          /**< owned; may hold a password: never log it raw */
    char *group, *name; /**< owned */
    char **topics;      /**< owned */
    int ntopics;
    outbox_conf_t *conf; /**< owned copy */
    void *state;
    char errstr[512];
    outbox__poison_t poison;
    outbox__batch_t batch;
};

/** Sets up c->poison from c->conf. */
outbox_err_t outbox__poison_init(outbox_consumer_t *c, char *errstr, size_t errstr_size);
void outbox__poison_term(outbox_consumer_t *c);
/** Before a broker poll: while the consumer's database is down, waits (up
 *  to timeout_ms) and returns 1 (skip the broker poll); also hands
 *  requeued dead letters to fn, at most once a second. */
int outbox__poison_before_poll(outbox_consumer_t *c, int timeout_ms, outbox_consumer_handler_fn fn,
                               void *opaque);
/** Calls fn for a parsed delivery and applies the contract (holds,
 *  attempts, dead letters). attrs: binary-mode attributes (as for
 *  dispatch) or NULL. OUTBOX_OK: acknowledge. Otherwise leave the message
 *  unacknowledged and offer it again in *retry_in_ms (>= 1). */
outbox_err_t outbox__poison_handle(outbox_consumer_t *c, outbox_delivery_t *d,
                                   const char *const *attrs, outbox_consumer_handler_fn fn,
                                   void *opaque, int64_t *retry_in_ms);

/** Opens a batch for the nmsgs messages of one poll when the application
 *  gave a batch hook, batches are on and nmsgs >= 2. 1: open (the broker
 *  file then calls outbox__batch_end() after dispatching them, before
 *  acknowledging any); 0: handle them one by one (also when BEGIN failed). */
/* The most messages one batch transaction holds (a savepoint each): under
 * PostgreSQL's 64 cached subtransactions per backend. */
#define OUTBOX__BATCH_TX_MAX 48

int outbox__batch_begin(outbox_consumer_t *c, int nmsgs);
/** Ends the open batch: COMMIT, or ROLLBACK when a savepoint operation
 *  failed. OUTBOX_OK: committed, acknowledge the messages dispatch said
 *  OUTBOX_OK for. Any other value: acknowledge none of them (they are
 *  delivered again; the inbox makes the committed ones duplicates); the
 *  holds of their keys are dropped so they come back in their order. */
outbox_err_t outbox__batch_end(outbox_consumer_t *c);

/**
 * Parses body as a structured-mode CloudEvents document (or, when attrs is
 * not NULL, as binary mode: attrs is a NULL-terminated list of alternating
 * "ce_<attr>"/value pairs and body is the data), then hands it to fn
 * through outbox__poison_handle().
 * OUTBOX_OK: acknowledge (handled, dead-lettered, or unparseable: logged
 * and dropped). Any other value: leave it unacknowledged; the broker file
 * offers it again no sooner than *retry_in_ms (>= 1) from now and keeps
 * the later messages of its key (or partition) behind it. retry_in_ms may
 * be NULL.
 */
outbox_err_t outbox__consumer_dispatch(outbox_consumer_t *c, const char *topic, const char *body,
                                       size_t len, const char *const *attrs, int redelivered,
                                       outbox_consumer_handler_fn fn, void *opaque,
                                       int64_t *retry_in_ms);

#endif
