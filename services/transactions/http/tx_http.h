/* transactions-service HTTP adapter: the routes -> the use cases. */
#ifndef TX_HTTP_H
#define TX_HTTP_H

#include "kit/kit.h"
#include "usecase/tx_usecase.h"

typedef struct tx_http_app_s {
    tx_store_t store;      /* on the request pool */
    outbox_dbpool_t *pool; /* for /readyz */
    int64_t idem_retention_ms;
    int idem_required;
} tx_http_app_t;

/* Route table; opaque is the tx_http_app_t. */
extern const outbox_http_route_t tx_routes[];

#endif
