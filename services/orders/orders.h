/* orders-service internals: shared state of the API, the consumers and main. */
#ifndef ORDERS_ORDERS_H
#define ORDERS_ORDERS_H

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
} orders_app_t;

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
/* Asks the threads to stop, joins them and frees everything. */
void orders_consumers_stop(orders_consumers_t *cs);

#endif
