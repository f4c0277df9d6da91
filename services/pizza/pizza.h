/* The pizza pipeline (seed 004): what its four programs share.
 *
 *   pizza-api       POST /pizza: the order in pizza_orders and its
 *                   PizzaOrderPlaced event in pizza_order_outbox, one
 *                   transaction.
 *   pizza-job       the library's relay on pizza_order_outbox (ack_mode=mark):
 *                   for each pending event, payment and delivery, then the
 *                   event to the Redis stream pizza-orders; the row is marked.
 *   pizza-consumer  reads pizza-orders and logs each order once (inbox).
 *   pizza-client    random orders at a rate or count.
 * See docs/PIZZA.md. */
#ifndef PIZZA_PIZZA_H
#define PIZZA_PIZZA_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kit/kit.h"
#include "outbox/outbox.h"

#define PIZZA_TOPIC "pizza-orders"       /* Redis stream the job publishes to */
#define PIZZA_TABLE "pizza_order_outbox" /* the pipeline's own outbox table */
#define PIZZA_EVENT_TYPE "PizzaOrderPlaced"
#define PIZZA_SOURCE "/pizza"
#define PIZZA_CONSUMER "pizza-consumer" /* consumer group and inbox name */

/* Embedded services/pizza/migrations/ (generated). */
extern const outbox_migration_t pizza_migrations[];

/* A program option of the pipeline's own (not in the library's table):
 * read from env, then from --name VALUE / --name=VALUE, which are removed
 * from argv so the rest goes to outbox_kit_conf_load. */
typedef struct pizza_opt_s {
    const char *name; /* flag without "--", e.g. "payment-delay" */
    const char *env;  /* e.g. "PIZZA_PAYMENT_DELAY" */
    const char *def;
    const char *help;
    const char *value; /* after pizza_opts_take: env, flag or def (borrowed) */
} pizza_opt_t;

/* Fills opts[i].value and removes the flags it used from argv (*argc
 * shrinks). Returns 0, or -1 with errstr when a flag lacks its value. */
int pizza_opts_take(pizza_opt_t *opts, int n, int *argc, char **argv, char *errstr,
                    size_t errstr_size);
/* Prints the options as --help lines. */
void pizza_opts_help(FILE *fp, const pizza_opt_t *opts, int n);
/* A duration ("250ms", "2s", "1m", a bare number is ms) into *ms; -1 if bad. */
int pizza_parse_ms(const char *s, int64_t *ms);
/* A fraction 0..1 into *v; -1 if bad. */
int pizza_parse_rate(const char *s, double *v);

/* The order POST /pizza takes (and the usage text shows). */
#define PIZZA_EXAMPLE                                                                              \
    "{\"flavor\":\"Pepperoni\",\"size\":\"Large\",\"quantity\":2,\"price\":19.99,"                 \
    "\"address\":\"123 Main St\",\"user_name\":\"Alice\"}"

/* A POST /pizza body, checked: the text parameters of the INSERT. The
 * strings are borrowed from the body (size: our own spelling). */
typedef struct pizza_order_s {
    const char *flavor, *size, *address, *user_name;
    char quantity[16], price[32];
} pizza_order_t;

/* Checks the body doc (a JSON object): 0 with *o filled, or -1 with a
 * sentence for the client in why. */
int pizza_order_check(const json_t *doc, pizza_order_t *o, char *why, size_t why_size);

/* Connects to the database, retrying for up to 30 s unless *stop; logs as
 * component. NULL when it gave up. */
PGconn *pizza_connect(const outbox_conf_t *conf, const char *component, const char *appname,
                      volatile sig_atomic_t *stop);
/* The library's schema, pizza_order_outbox and the pipeline's own tables.
 * Every program runs it at start (safe concurrently). 0 or -1 (logged). */
int pizza_migrate(PGconn *c, const char *component);

#endif
