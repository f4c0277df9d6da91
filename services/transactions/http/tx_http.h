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

/* Reads a POST /api/v1/transactions body (a JSON object) into *in
 * (strings borrowed from doc): 0, or -1 with the field at fault and a
 * sentence for the client (static strings). The use case checks the rest. */
int tx_http_parse_create(const json_t *doc, tx_create_in_t *in, const char **field,
                         const char **msg);

/* Route table; opaque is the tx_http_app_t. */
extern const outbox_http_route_t tx_routes[];

#endif
