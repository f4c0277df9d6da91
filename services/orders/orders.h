/* orders-service internals: shared state of the API, the consumers and main. */
#ifndef ORDERS_ORDERS_H
#define ORDERS_ORDERS_H

#include <pthread.h>
#include <stdint.h>

#include "kit/kit.h"
#include "outbox/outbox.h"

#define ORDERS_TOPIC "orders"
#define ORDERS_SOURCE "/orders"
#define ORDERS_IDEM_SCOPE "orders"

/* Embedded services/orders/migrations/ (generated). */
extern const outbox_migration_t orders_migrations[];

typedef struct orders_app_s {
    outbox_conf_t *conf;   /* owned by main */
    outbox_dbpool_t *pool; /* request threads' connections */
    int64_t idem_retention_ms;
    int idem_required;
    int order_batch; /* order_batch: most orders in one transaction (1: batches off) */
    int batch_slots; /* batches written at once */
} orders_app_t;

/* One POST /orders, checked, handed to a batch (batch.c). */
typedef enum {
    ORDERS_JOB_ALONE = 0, /* not written: the request goes the one-order way */
    ORDERS_JOB_CREATED,
    ORDERS_JOB_REPLAY,
    ORDERS_JOB_IN_FLIGHT,
    ORDERS_JOB_MISMATCH,
    ORDERS_JOB_UNKNOWN_SKU,
    ORDERS_JOB_COMMIT_UNKNOWN,
    ORDERS_JOB_DB_DOWN /* the connection broke before COMMIT: nothing written */
} orders_job_outcome_t;

typedef struct orders_job_s {
    /* The request (create_order's, borrowed). */
    const char *key; /* "" without one */
    const char *fp;  /* the body's fingerprint */
    const char *user;
    long long amount;
    json_t *items;
    const char *items_text;
    const char *tp; /* a valid traceparent, or NULL */
    /* The outcome (batch.c). */
    orders_job_outcome_t outcome;
    char id[OUTBOX_UUID_STRLEN + 1];       /* CREATED, COMMIT_UNKNOWN */
    char event_id[OUTBOX_UUID_STRLEN + 1]; /* CREATED, COMMIT_UNKNOWN */
    char *body;                            /* CREATED: the 201 body; REPLAY: the stored one */
    size_t body_len;
    unsigned status;       /* REPLAY */
    char content_type[64]; /* REPLAY */
    char sku[72];          /* UNKNOWN_SKU: the first unknown sku */
    long long nmissing;    /* UNKNOWN_SKU */
    char err[256];         /* COMMIT_UNKNOWN, DB_DOWN */
    /* batch.c's own. */
    struct orders_job_s *next;
    int lead, woken;
    int holds_slot; /* ALONE, written the one-order way in its batch slot */
    pthread_mutex_t mu;
    pthread_cond_t cv;
} orders_job_t;

/* Writes job with the orders of concurrent requests in one transaction
 * (batch.c) and returns with job->outcome set; ORDERS_JOB_ALONE: not
 * written (batches off, a lone order, or the batch failed), the caller
 * goes the one-order way. */
void orders_batch_submit(orders_app_t *app, orders_job_t *job);
/* After an ORDERS_JOB_ALONE order is done: gives back the batch slot it
 * may hold (it was the only one waiting). */
void orders_batch_release(orders_job_t *job);

/* A PostgreSQL array literal of text being written (pgarray.c): zeroed to
 * start, p freed by the caller. */
typedef struct orders_arr_s {
    char *p;
    size_t n, cap;
    int count; /* elements so far */
    int nomem;
} orders_arr_t;
/* Appends one element: quoted, with '"' and '\' escaped (every other byte
 * as it is), or NULL. */
void orders_arr_add(orders_arr_t *b, const char *s);
/* The literal, closed ("{}" when empty), or NULL when out of memory. */
const char *orders_arr_end(orders_arr_t *b);

/* Prepares the statements of create_order and of the batches on c's
 * session unless it has them (api.c; outside a transaction). 0, or -1
 * with err set. */
int orders_prepare_session(PGconn *c, char *err, size_t err_size);
/* Makes the next orders_prepare_session on c prepare again (after a
 * statement failed: the session may have lost them). */
void orders_forget_session(const PGconn *c);
/* Prepares the batches' statements on c (batch.c). 0, or -1 with err set. */
int orders_batch_prepare(PGconn *c, char *err, size_t err_size);

/* The OrderCreated payload and the 201 body of a created order (api.c),
 * both malloc'd; items_text is the normalised items as compact JSON (what
 * json_dumps(items, JSON_COMPACT) writes). 0, or -1 when out of memory. */
int orders_created_texts(const char *id, const char *user, long long amount, const char *items_text,
                         const char *created, const char *event_id, char **payload, char **body);

/* The API's route table (api.c); opaque is the orders_app_t. */
extern const outbox_http_route_t orders_routes[];

/* Checks a POST /orders body (a JSON object): 0 with *user (borrowed from
 * doc), *amount and *items (a new array of {sku, quantity}, each sku
 * once), or -1 with a sentence for the client in why. */
int orders_validate(const json_t *doc, const char **user, long long *amount, json_t **items,
                    char *why, size_t why_size);
/* 1 for a W3C traceparent: 2 hex "-" 32 hex "-" 16 hex "-" 2 hex, lower
 * case, version not ff, ids not all zero; 0 otherwise or for NULL. */
int orders_traceparent_valid(const char *t);

/* The inventory and email consumers (consumers.c), one thread each. */
typedef struct orders_consumers_s orders_consumers_t;
orders_consumers_t *orders_consumers_start(const outbox_conf_t *conf, char *errstr,
                                           size_t errstr_size);
/* Asks the threads to stop, joins them and frees everything. A thread
 * still running after timeout_ms (> 0; <= 0 waits for ever) is left: the
 * call returns -1 without freeing, and the caller ends the process (the
 * thread's open transaction rolls back, its messages are delivered again). */
int orders_consumers_stop(orders_consumers_t *cs, int64_t timeout_ms);

#endif
