/* cars-service internals: shared state of the API, the search side, the
 * projection consumer and main. See docs/CARS.md. */
#ifndef CARS_CARS_H
#define CARS_CARS_H

#include <jansson.h>
#include <stdint.h>

#include "kit/kit.h"
#include "outbox/outbox.h"

#define CARS_TOPIC "cars"
#define CARS_SOURCE "/cars"
#define CARS_SEARCH_GROUP "car-search" /* consumer group and inbox name */

/* The payload's schema version. Bump it when the event data changes shape;
 * the projection reads the fields it knows from any version >= 1. */
#define CARS_SCHEMA_VERSION 1

/* Publishing priority (outbox_event_t.priority; higher is claimed first
 * across keys, per-key order is kept whatever the priority). */
#define CARS_PRIO_URGENT 10 /* a price change or a delete */
#define CARS_PRIO_NORMAL 5  /* a registration, another update */
#define CARS_PRIO_IMPORT 0  /* POST /cars/import: behind everything else */

#define CARS_IMPORT_MAX 1000 /* cars per POST /cars/import */

/* Embedded services/cars/migrations/ and search_migrations/ (generated). */
extern const outbox_migration_t cars_migrations[];
extern const outbox_migration_t cars_search_migrations[];

typedef struct cars_app_s {
    outbox_conf_t *conf;          /* owned by main */
    outbox_dbpool_t *pool;        /* primary database: cars + outbox */
    outbox_dbpool_t *search_pool; /* search database (postgres search), or NULL */
    char os_url[1024];            /* OpenSearch base URL "http(s)://host:port" or "" */
    char os_index[256];           /* OpenSearch index of the cars documents */
} cars_app_t;

/* ---- car.c: the car's fields, validated ---- */

typedef struct car_s {
    char vin[18];
    char make[65], model[65];
    int year;
    long long price;
    unsigned has; /* CAR_HAS_* bits: fields present in the request */
} car_t;

#define CAR_HAS_VIN 0x01
#define CAR_HAS_MAKE 0x02
#define CAR_HAS_MODEL 0x04
#define CAR_HAS_YEAR 0x08
#define CAR_HAS_PRICE 0x10
#define CAR_HAS_ALL 0x1f

/** The check digit (position 9) that vin's other 16 characters call for:
 *  '0'..'9' or 'X'; 0 when vin is not 17 valid VIN characters. */
char cars_vin_check_digit(const char *vin);

/**
 * Reads the car fields of the JSON object obj into *car. required: the
 * CAR_HAS_* bits that must be present (all of them to register; none for an
 * update, which then needs at least one). Returns 0, or -1 with a sentence
 * for the client in why (prefixed with where, e.g. "cars[3]: ", if where).
 */
int cars_car_parse(const json_t *obj, unsigned required, const char *where, car_t *car, char *why,
                   size_t why_size);

/** Highest model year accepted: next year (models come out early). */
int cars_year_max(void);

/* ---- api.c / search.c: the route table (opaque is the cars_app_t) ---- */
extern const outbox_http_route_t cars_routes[];
void cars_search(outbox_http_req_t *req, outbox_http_resp_t *resp, void *opaque);
/**
 * Checks the search query q (1..200 bytes of UTF-8) and writes its words
 * (letters and digits; bytes >= 0x80 count as letters, for UTF-8 text) as
 * "w1:* & w2:*" (fmt_pg: a tsquery) or "w1* w2*" (an OpenSearch
 * simple_query_string) into out (MAX_Q * 3 + 64 bytes is enough), at most
 * 16 of them. Returns the number of words, or 0 with a sentence for the
 * client in why.
 */
int cars_search_words(const char *q, int fmt_pg, char *out, size_t out_size, char *why,
                      size_t why_size);

/* ---- projection.c: the car-search consumer ---- */
typedef struct cars_projection_s cars_projection_t;
/** Starts consumer_threads threads writing the search database. */
cars_projection_t *cars_projection_start(const outbox_conf_t *conf, const char *search_url,
                                         char *errstr, size_t errstr_size);
/** Asks the threads to stop, joins them and frees everything. NULL: no-op.
 *  A thread still running timeout_ms later (> 0; <= 0 waits for ever) is
 *  left: -1, nothing freed, and the caller ends the process. */
int cars_projection_stop(cars_projection_t *p, int64_t timeout_ms);

#endif
