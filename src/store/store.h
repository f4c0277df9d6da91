/*
 * Stores: everything the relay engine, /metrics and outboxctl ask of a
 * database, as one small ops table per back end (in the spirit of
 * sink/sink.h). The engine knows no SQL and no client library: it opens a
 * session per worker with outbox__store_open() and calls the ops below.
 *
 * Back ends, one folder each:
 *   src/store/pg/    PostgreSQL (libpq): any DATABASE_URL / conninfo
 *   src/store/mem/   in memory ("mem:NAME"): the engine's own tests, and
 *                    embedding without a database
 *
 * The producer and consumer entry points (outbox_enqueue,
 * outbox_inbox_record, outbox_migrate) take the caller's PGconn and belong
 * to the PostgreSQL store: writing the event in the caller's transaction is
 * the point of a transactional outbox.
 *
 * A session belongs to one thread; ops need not be thread-safe. Every op that
 * can fail returns outbox_err_t and fills errstr; OUTBOX_ERR_DB from any op
 * but the maintenance and status ones means the session is no longer usable
 * (the caller closes it and opens a new one later).
 */
#ifndef OUTBOX_STORE_STORE_H
#define OUTBOX_STORE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "core/message.h"
#include "outbox/outbox.h"

/** Keys hash to this many lanes; a lane is owned by one worker at a time. */
#define OUTBOX_LANES 64

typedef enum {
    OUTBOX_ACK_DELETE = 0, /**< an acknowledged event's row is deleted (default) */
    OUTBOX_ACK_MARK        /**< it gets status 'processed' and processed_at, and is
                                purged after processed_retention */
} outbox_ack_mode_t;

/** What a session is opened for. Strings are copied by outbox__store_open. */
typedef struct outbox_store_cfg_s {
    const char *url;     /**< DATABASE_URL, conninfo, or "mem:NAME" */
    const char *table;   /**< outbox table ("outbox"); dead letters in <table>_dead_letter */
    const char *appname; /**< session label (PostgreSQL application_name) */
    outbox_ack_mode_t ack_mode;
    int64_t tx_timeout_ms; /**< >0: the server ends any relay transaction step or idle
                                gap longer than this (backstop for the engine's bound) */
    int listen;            /**< subscribe to the wake-up hint (wait_for_work) */
    int generic_plans;     /**< plan each prepared statement once (the watcher) */
    int async_commit;      /**< the session's commits need not wait for durability: one lost
                                in a crash of the store is redone (published again) */
    int claims;            /**< a relay worker's session: plan the claim as a queue (an ordered
                                index scan that stops at its limit) */
    int ack_on_claim;      /**< the claim acknowledges what it hands out in the same
                                statement; the store undoes it at commit for the events
                                that were not acknowledged (store-specific; pg only) */
} outbox_store_cfg_t;

/** A claimed batch. msgs[] and their strings are owned by the batch. */
typedef struct outbox_batch_s {
    outbox_msg_t *msgs;
    size_t n;
    void *priv; /**< the store's own (e.g. the result set the strings point into) */
} outbox_batch_t;

/** Maintenance: what to purge and whether parked keys move (see maintain). */
typedef struct outbox_maint_s {
    int64_t dlq_retention_ms;   /**< 0: keep dead letters for ever */
    int64_t inbox_retention_ms; /**< 0: keep inbox records for ever */
    int64_t
        processed_retention_ms; /**< mark mode: purge processed rows older than this (0: never) */
    int park;                   /**< move pending events of dead-lettered keys to dead letters */
} outbox_maint_t;

typedef struct outbox_maint_result_s {
    long long dead_purged, inbox_purged, processed_purged, parked;
} outbox_maint_result_t;

/** Totals shown by outboxctl status and /metrics. */
typedef struct outbox_store_stats_s {
    long long pending;   /**< events not yet acknowledged */
    long long retrying;  /**< pending events with at least one failed attempt */
    long long dead;      /**< rows in the dead-letter table */
    long long processed; /**< mark mode: acknowledged rows kept */
    double oldest_age_s; /**< age of the oldest pending event (0 when none) */
} outbox_store_stats_t;

typedef struct outbox_topic_stats_s {
    const char *topic;
    long long pending, retrying;
    double oldest_age_s;
} outbox_topic_stats_t;

typedef struct outbox_lane_holder_s {
    const char *holder; /**< the session label of the worker holding the lanes */
    int pid;
    int count;
    const char *lanes; /**< "0,5,9" */
} outbox_lane_holder_t;

typedef struct outbox_dead_letter_s {
    const char *id, *topic, *type, *key, *reason, *dead_at, *last_error;
    int attempts;
} outbox_dead_letter_t;

/** One event as outboxctl tail shows it (strings owned by the store until cb returns). */
typedef struct outbox_tail_event_s {
    int64_t seq;
    const char *id, *topic, *type, *key, *payload;
    const char *at; /**< processed_at (mark mode) or created_at, ISO 8601 UTC */
    int64_t at_us;  /**< the same, microseconds since the epoch */
} outbox_tail_event_t;
/** A message a consumer group failed to handle (src/consumer). Borrowed. */
typedef struct outbox_consumer_msg_s {
    const char *group, *message_id, *topic, *key, *type;
    const char *body; /**< as the broker delivered it (not NUL-terminated) */
    size_t body_len;
    const char *attrs; /**< binary mode: JSON array of ce_* names and values; else NULL */
} outbox_consumer_msg_t;

/** A consumer dead letter, as listed by outboxctl consumer-dlq and handed
 *  back to requeued consumers. */
typedef struct outbox_consumer_dead_s {
    long long id;
    const char *group, *message_id, *topic, *key, *type, *reason, *dead_at, *last_error;
    const char *requeued_at; /**< "" when not requeued */
    const char *body;        /**< bytes as delivered */
    size_t body_len;
    const char *attrs; /**< JSON text or NULL */
    int attempts;
} outbox_consumer_dead_t;

typedef struct outbox_store_s outbox_store_t;

typedef struct outbox_store_ops_s {
    const char *name; /**< "postgres", "mem" */
    /** 1 if this back end serves url. */
    int (*handles)(const char *url);
    /** Connects s (s->cfg is set); fills s->state. */
    outbox_err_t (*open)(outbox_store_t *s, char *errstr, size_t errstr_size);
    /** Ends the session: lanes it holds are released. Frees s->state. */
    void (*close)(outbox_store_t *s);
    /** Creates the schema this session's table needs (idempotent, concurrent-safe). */
    outbox_err_t (*migrate)(outbox_store_t *s, int *applied, char *errstr, size_t errstr_size);

    /* ---- one batch = one transaction: begin, claim, settle, commit ----
     * (begin may be sent with the claim, and ack with commit: PostgreSQL
     * needs two round trips per batch plus one per failed event) */
    outbox_err_t (*begin)(outbox_store_t *s, char *errstr, size_t errstr_size);
    /**
     * Claims up to limit due events of the given lanes, locked against other
     * sessions until commit/rollback. Order: events with priority > 0 that are
     * the oldest pending event of their key first (higher priority first), then
     * the rest in seq order. Per key, the events claimed are a prefix of its
     * pending events in seq order; a key whose earlier event is not due yet
     * (retrying) or is in the dead-letter table is skipped whole.
     */
    outbox_err_t (*claim)(outbox_store_t *s, const int *lanes, int nlanes, int limit,
                          outbox_batch_t *b, char *errstr, size_t errstr_size);
    /** Frees what claim put in b (b may be empty). This function can't fail. */
    void (*batch_term)(outbox_store_t *s, outbox_batch_t *b);
    /** Acknowledges (deletes or marks, per cfg.ack_mode) the events seqs[0..n).
     *  A back end may send it with commit (one round trip): then its errors
     *  surface from commit, which rolls both back. */
    outbox_err_t (*ack)(outbox_store_t *s, const int64_t *seqs, size_t n, char *errstr,
                        size_t errstr_size);
    /** Records a failed attempt: attempts+1, error kept in the history, due again
     *  delay_ms after the moment this call runs (not the transaction's start). */
    outbox_err_t (*retry_at)(outbox_store_t *s, int64_t seq, int64_t delay_ms, const char *error,
                             char *errstr, size_t errstr_size);
    /** Moves the event to dead letters with reason ("max_attempts", "rejected");
     *  with park, the later pending events of its key follow it ("parked"). */
    outbox_err_t (*dead_letter)(outbox_store_t *s, int64_t seq, const char *reason,
                                const char *error, int park, char *errstr, size_t errstr_size);
    /** Ends the batch. OUTBOX_ERR_DB: not committed, or the outcome is unknown
     *  (the connection broke during COMMIT): either way the events stay or
     *  become pending again and are published again (at least once). */
    outbox_err_t (*commit)(outbox_store_t *s, char *errstr, size_t errstr_size);
    /** Abandons the batch. This function can't fail (a broken session is
     *  noticed by the next op). */
    void (*rollback)(outbox_store_t *s);

    /* ---- lanes: ownership that dies with the session ---- */
    /** Registers this session as a live worker (until close). */
    outbox_err_t (*register_worker)(outbox_store_t *s, char *errstr, size_t errstr_size);
    /** Live workers of every relay process on this table. */
    outbox_err_t (*live_workers)(outbox_store_t *s, int *n, char *errstr, size_t errstr_size);
    /** Takes up to `want` of the lanes no session holds, trying them from
     *  lane `offset` on, wrapping; the lanes taken go to lanes[0..*n). One
     *  round trip (a lane taken meanwhile by another session is skipped). */
    outbox_err_t (*take_lanes)(outbox_store_t *s, int offset, int want, int *lanes, int *n,
                               char *errstr, size_t errstr_size);
    outbox_err_t (*release_lane)(outbox_store_t *s, int lane, char *errstr, size_t errstr_size);

    /** The relay's watcher (poll_min_interval > 0): the lanes of the newest
     *  due pending events (at most the 64 newest, by seq), as a mask (bit i:
     *  lane i), and the highest seq among them (0 if none), looked up only
     *  when the table's seq counter *seq_now (always set) is past gate (-1:
     *  always). No lock taken. Optional: NULL when the back end cannot tell. */
    outbox_err_t (*newest_due)(outbox_store_t *s, int64_t gate, uint64_t *lane_mask,
                               int64_t *max_seq, int64_t *seq_now, char *errstr,
                               size_t errstr_size);
    /** Sleeps until the wake-up hint (an event was written), stop_fd readable,
     *  or timeout_ms. This function can't fail. */
    void (*wait_for_work)(outbox_store_t *s, int stop_fd, int64_t timeout_ms);

    /* ---- maintenance and status (outside batches) ---- */
    outbox_err_t (*maintain)(outbox_store_t *s, const outbox_maint_t *in,
                             outbox_maint_result_t *out, char *errstr, size_t errstr_size);
    outbox_err_t (*stats)(outbox_store_t *s, outbox_store_stats_t *out, char *errstr,
                          size_t errstr_size);
    /** Reclaims the space of acknowledged events (PostgreSQL: VACUUM
     *  (SKIP_LOCKED) of the table; skipped when another vacuum runs).
     *  Optional: NULL when the back end needs none. */
    outbox_err_t (*vacuum)(outbox_store_t *s, char *errstr, size_t errstr_size);
    /** Calls cb once per topic with pending events, by topic name. */
    outbox_err_t (*topic_stats)(outbox_store_t *s,
                                void (*cb)(void *arg, const outbox_topic_stats_t *t), void *arg,
                                char *errstr, size_t errstr_size);
    /** Calls cb once per session holding lanes of this table. */
    outbox_err_t (*lane_holders)(outbox_store_t *s,
                                 void (*cb)(void *arg, const outbox_lane_holder_t *h), void *arg,
                                 char *errstr, size_t errstr_size);

    /**
     * outboxctl tail: up to limit events of topic (NULL = all topics) whose
     * time is at or after since_us (microseconds since the epoch), by that
     * time then seq. processed = 1: rows acknowledged in mark mode, by
     * processed_at; 0: pending rows, by created_at. *now_us gets the
     * database's clock (statement time), to start a cursor at "now".
     */
    outbox_err_t (*tail)(outbox_store_t *s, const char *topic, int processed, int64_t since_us,
                         int limit, void (*cb)(void *arg, const outbox_tail_event_t *e), void *arg,
                         int64_t *now_us, char *errstr, size_t errstr_size);

    /* ---- dead letters (outboxctl dlq) ---- */
    /** Oldest first; topic/key NULL = any. */
    outbox_err_t (*dlq_list)(outbox_store_t *s, const char *topic, const char *key, int limit,
                             void (*cb)(void *arg, const outbox_dead_letter_t *d), void *arg,
                             char *errstr, size_t errstr_size);
    /** The dead letter with its error history as pretty JSON (caller frees);
     *  OUTBOX_ERR_NOT_FOUND if there is none with that id. */
    outbox_err_t (*dlq_show)(outbox_store_t *s, const char *id, char **json, char *errstr,
                             size_t errstr_size);
    /** Back into the outbox at the head of its key, attempts reset, due now,
     *  with its parked followers; id NULL = all. */
    outbox_err_t (*dlq_requeue)(outbox_store_t *s, const char *id, long long *n, char *errstr,
                                size_t errstr_size);
    /** Deletes dead letters: the one with id, or (id NULL) those dead for at
     *  least older_than_ms (0 = all). */
    outbox_err_t (*dlq_purge)(outbox_store_t *s, const char *id, int64_t older_than_ms,
                              long long *n, char *errstr, size_t errstr_size);

    /* ---- consumer attempts and dead letters (src/consumer) ----
     * Tables outbox_consumer_attempt and outbox_consumer_dead_letter in the
     * consumer's own database; NULL in back ends without them. Each returns
     * OUTBOX_ERR_NOT_FOUND when the tables do not exist (migrations not
     * applied; the session stays usable), OUTBOX_ERR_DB on other failures. */
    /** Charges m one failed attempt (error kept in its history) and, when
     *  reject is set or the count reaches max_attempts, moves it to the dead
     *  letters (reason "rejected" / "max_attempts") in the same transaction
     *  (the rule of outbox__consumer_is_dead in src/consumer/consumer.h).
     *  *attempts gets the count, *dead 1 if it was dead-lettered. */
    outbox_err_t (*consumer_failed)(outbox_store_t *s, const outbox_consumer_msg_t *m,
                                    const char *error, int reject, int max_attempts, int *attempts,
                                    int *dead, char *errstr, size_t errstr_size);
    /** The message was handled: forgets its attempts, and its dead letter if
     *  that was requeued. */
    outbox_err_t (*consumer_done)(outbox_store_t *s, const char *group, const char *message_id,
                                  char *errstr, size_t errstr_size);
    /** *any = 1 if group has failed attempts on record. */
    outbox_err_t (*consumer_has_attempts)(outbox_store_t *s, const char *group, int *any,
                                          char *errstr, size_t errstr_size);
    /** Requeued dead letters of group (group NULL = any), oldest first, up
     *  to limit; with requeued_only 0, every dead letter (outboxctl list). */
    outbox_err_t (*cdl_list)(outbox_store_t *s, const char *group, const char *topic,
                             int requeued_only, int limit,
                             void (*cb)(void *arg, const outbox_consumer_dead_t *d), void *arg,
                             char *errstr, size_t errstr_size);
    /** One dead letter with its error history as pretty JSON (caller frees);
     *  OUTBOX_ERR_NOT_FOUND if there is none with that id. */
    outbox_err_t (*cdl_show)(outbox_store_t *s, long long id, char **json, char *errstr,
                             size_t errstr_size);
    /** Marks dead letters requeued (id, or id 0 = all of group, group NULL =
     *  every group) and resets their attempt counts. */
    outbox_err_t (*cdl_requeue)(outbox_store_t *s, long long id, const char *group, long long *n,
                                char *errstr, size_t errstr_size);
    /** Deletes dead letters: the one with id, or (id 0) those of group (NULL
     *  = any) dead for at least older_than_ms (0 = all). */
    outbox_err_t (*cdl_purge)(outbox_store_t *s, long long id, const char *group,
                              int64_t older_than_ms, long long *n, char *errstr,
                              size_t errstr_size);
} outbox_store_ops_t;

struct outbox_store_s {
    const outbox_store_ops_t *ops;
    outbox_store_cfg_t cfg; /**< owned copies of the strings */
    void *state;            /**< the back end's own */
};

/**
 * Opens a session on the back end that serves cfg->url. NULL with errstr set
 * when no back end serves it or the connection fails.
 */
outbox_store_t *outbox__store_open(const outbox_store_cfg_t *cfg, char *errstr, size_t errstr_size);
/** Closes the session and frees s. outbox__store_close(NULL) is a no-op. */
void outbox__store_close(outbox_store_t *s);
/** 1 if some back end serves url. */
int outbox__store_supported(const char *url);
/** 1 if the store serving url can tell the newest due events (the relay's watcher). */
int outbox__store_watchable(const char *url);
/** 1 if name is usable as an outbox table name: [a-z_][a-z0-9_]*, at most 48
 *  bytes, and not a name the library uses itself (pg_*, *_dead_letter,
 *  outbox_inbox, outbox_schema_migrations, outbox_http_idempotency). */
int outbox__store_table_valid(const char *name);

#endif
