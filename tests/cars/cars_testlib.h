/* Helpers for the car-system tests: a private cars-service (fresh primary
 * and search databases, its own redis-server, free ports), valid VINs,
 * and search through the API. HTTP helpers come from tests/orders. */
#ifndef CARS_TESTLIB_H
#define CARS_TESTLIB_H

#include <libpq-fe.h>
#include <sys/types.h>

#include "orders_testlib.h"

typedef struct cars_svc_s {
    pid_t pid, redis_pid;
    int port, redis_port;
    char url[64];
    char redis_addr[64];
    char log[256];
    char db[1024];        /* primary: cars, outbox */
    char search_db[1024]; /* the projection's database */
} cars_svc_t;

/** Fresh databases t_<name> and t_<name>_search, a private redis-server,
 *  then cars-service with extra_env ("K=V", NULL-terminated, may be NULL);
 *  waits for /readyz. */
void cars_start(cars_svc_t *s, const char *name, char *const extra_env[]);
/** SIGTERM; checks a clean exit 0; then stops redis-server. */
void cars_teardown(cars_svc_t *s);

/** Writes a valid VIN (check digit computed) for serial into out[18];
 *  distinct serials (0..999999) give distinct VINs for one prefix
 *  (8 characters of [A-HJ-NPR-Z0-9], e.g. "1HGCM826"). */
void cars_vin(const char *prefix, int serial, char out[18]);

/** A car body {"vin","make","model","year","price"} (static storage). */
const char *cars_body(const char *vin, const char *make, const char *model, int year,
                      long long price);

/** POST /cars; returns the status and copies the id (or "") into id[37]. */
long cars_register(const cars_svc_t *s, const char *body, char id[37], http_resp_t *r);

/** GET /cars/search?q=<q> (q URL-encoded here); returns "total", or -1 on
 *  a non-200 answer (then r holds it). */
long long cars_search_total(const cars_svc_t *s, const char *q, http_resp_t *r);

/** Polls cars_search_total(q) until it equals want or timeout_ms passes;
 *  returns the last value. */
long long cars_wait_total(const cars_svc_t *s, const char *q, long long want, int timeout_ms);

#endif
