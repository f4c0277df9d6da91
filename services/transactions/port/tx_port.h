/*
 * transactions-service ports: what the use cases need from the outside, as
 * small ops tables. adapter/tx_pg.c implements the ledger store on
 * PostgreSQL + the outbox + the inbox; the use cases (usecase/) know only
 * these declarations.
 */
#ifndef TX_PORT_H
#define TX_PORT_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define TX_ID_LEN 36
/* A user id as the caller gives it: 1..64 printable ASCII bytes. A UUID names
 * the account opened from UserCreated; anything else names no account. */
#define TX_USER_ID_MAX 64

/* Outcomes shared by the store's calls. */
typedef enum {
    TX_STORE_OK = 0,        /* done (committed, or found) */
    TX_STORE_NOT_FOUND,     /* no such transaction / account */
    TX_STORE_DUPLICATE,     /* the message was handled before (inbox): nothing done */
    TX_STORE_REPLAY,        /* Idempotency-Key seen with the same request: stored answer */
    TX_STORE_KEY_IN_FLIGHT, /* a request with the same key is being processed */
    TX_STORE_KEY_REUSED,    /* the key was used with another request */
    TX_STORE_UNAVAILABLE,   /* the database is unreachable (or a transient conflict): retry */
    TX_STORE_FAILED,        /* the database returned an error: nothing written */
    TX_STORE_COMMIT_UNKNOWN /* the connection broke during COMMIT */
} tx_store_result_t;

/* A new transaction, PENDING, with its TransactionCreated event. */
typedef struct tx_new_s {
    char id[TX_ID_LEN + 1];
    int64_t amount;
    const char *description;
    const char *from_user; /* NULL: a deposit */
    const char *to_user;   /* NULL: a withdrawal */
    const char *event_payload;
} tx_new_t;

typedef struct tx_idem_s {
    const char *key; /* "" or NULL: none */
    const char *fingerprint;
    int64_t retention_ms;
    unsigned status;                    /* the answer to store ... */
    char *(*render)(const char *tx_id); /* ... its body (malloc'd) */
} tx_idem_t;

typedef struct tx_replay_s {
    unsigned status;
    char content_type[64];
    char *body; /* malloc'd; free() it */
    size_t body_len;
} tx_replay_t;

/* A transaction as read back: a JSON object text (malloc'd). */
typedef struct tx_view_s {
    char *json;
} tx_view_t;

/* What applying a transaction decided. */
typedef struct tx_outcome_s {
    int applied;      /* 1: decided now; 0: it was already decided (or is missing) */
    char status[16];  /* "COMPLETED" / "FAILED" ("" when missing) */
    char reason[256]; /* FAILED: why */
    int64_t amount;
    char from_user[TX_USER_ID_MAX + 1]; /* "" for a deposit */
    char to_user[TX_USER_ID_MAX + 1];   /* "" for a withdrawal */
} tx_outcome_t;

/* An outcome event to enqueue with the decision. */
typedef struct tx_event_s {
    const char *type; /* TransactionCompleted / TransactionFailed */
    char *payload;    /* malloc'd by the renderer */
} tx_event_t;

typedef struct tx_store_ops_s {
    /* The transaction, its event and the key's answer in one transaction. */
    tx_store_result_t (*create)(void *self, const tx_new_t *t, const tx_idem_t *idem,
                                tx_replay_t *replay, char *errstr, size_t errstr_size);
    tx_store_result_t (*get)(void *self, const char *tx_id, tx_view_t *out, char *errstr,
                             size_t errstr_size);
    tx_store_result_t (*balance)(void *self, const char *user_id, int64_t *balance, char *errstr,
                                 size_t errstr_size);
    /* Inbox record (consumer, message_id) + open the user's account, once. */
    tx_store_result_t (*open_account)(void *self, const char *consumer, const char *message_id,
                                      const char *user_id, char *errstr, size_t errstr_size);
    /* Inbox record + decide and apply the transaction (ledger rows, both
     * balances, status) + the outcome event from render(), in ONE database
     * transaction. out says what was decided. */
    tx_store_result_t (*apply)(void *self, const char *consumer, const char *message_id,
                               const char *tx_id, const char *traceparent,
                               int (*render)(const tx_outcome_t *o, tx_event_t *ev),
                               tx_outcome_t *out, char *errstr, size_t errstr_size);
} tx_store_ops_t;

typedef struct tx_store_s {
    const tx_store_ops_t *ops;
    void *self;
} tx_store_t;

#endif
