/* users-service HTTP adapter: POST /users -> the register use case. */
#ifndef USERS_HTTP_H
#define USERS_HTTP_H

#include "kit/kit.h"
#include "usecase/users_usecase.h"

typedef struct users_http_app_s {
    const users_deps_t *deps;
    outbox_dbpool_t *pool; /* for /readyz */
    int64_t idem_retention_ms;
    int idem_required;
} users_http_app_t;

/* Route table; opaque is the users_http_app_t. */
extern const outbox_http_route_t users_routes[];

#endif
