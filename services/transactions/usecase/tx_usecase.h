/*
 * transactions-service use cases. Depend only on the store port
 * (port/tx_port.h):
 *
 *   tx_create        validate, then the PENDING transaction + TransactionCreated
 *   tx_get, tx_balance  read back
 *   tx_on_user_created  UserCreated -> open the user's account (once)
 *   tx_process          TransactionCreated -> apply once: COMPLETED or FAILED,
 *                       with a TransactionCompleted / TransactionFailed event
 */
#ifndef TX_USECASE_H
#define TX_USECASE_H

#include "port/tx_port.h"

#define TX_TOPIC "transactions"
#define TX_SOURCE "/transactions"
#define TX_USERS_TOPIC "users"
#define TX_AMOUNT_MAX 1000000000000000LL /* 1e15 minor units */
#define TX_DESCRIPTION_MAX 500           /* bytes */

typedef struct tx_create_in_s {
    int64_t amount;          /* > 0 */
    const char *description; /* may be NULL: "" */
    const char *from_user;   /* NULL: deposit */
    const char *to_user;     /* NULL: withdrawal */
} tx_create_in_t;

typedef struct tx_create_out_s {
    tx_store_result_t status;
    int invalid; /* 1: bad input, message and field say why (status unset) */
    char field[16];
    char id[TX_ID_LEN + 1];
    char message[512];
    tx_replay_t replay; /* TX_STORE_REPLAY; free(replay.body) */
} tx_create_out_t;

void tx_create(const tx_store_t *store, const tx_create_in_t *in, const tx_idem_t *idem,
               tx_create_out_t *out);

/* Reads a transaction (out->json, malloc'd, on TX_STORE_OK) / a user's
 * balance. tx_id and user_id must be UUIDs (the HTTP layer checks). */
tx_store_result_t tx_get(const tx_store_t *store, const char *tx_id, tx_view_t *out);
tx_store_result_t tx_balance(const tx_store_t *store, const char *user_id, int64_t *balance);

/* What a consumer should do with the message. */
typedef enum {
    TX_MSG_DONE = 0, /* applied, duplicate or not ours: acknowledge */
    TX_MSG_REJECT,   /* can never succeed (malformed): dead-letter */
    TX_MSG_DB_DOWN,  /* own database unreachable: retry, no attempt charged */
    TX_MSG_RETRY     /* failed this time: retry later */
} tx_msg_verdict_t;

/* A received event, as the consumer adapter hands it over. */
typedef struct tx_msg_s {
    const char *id;      /* message (event) id: the inbox key */
    const char *type;    /* CloudEvents type */
    const char *subject; /* aggregate id */
    const char *data;    /* JSON text or NULL */
    const char *traceparent;
} tx_msg_t;

tx_msg_verdict_t tx_on_user_created(const tx_store_t *store, const tx_msg_t *m);
tx_msg_verdict_t tx_process(const tx_store_t *store, const tx_msg_t *m);

#endif
