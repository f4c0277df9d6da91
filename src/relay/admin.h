/* The admin API and dashboard served by the metrics server. See admin.c. */
#ifndef OUTBOX_RELAY_ADMIN_H
#define OUTBOX_RELAY_ADMIN_H

#include <pthread.h>
#include <stdint.h>

#include "core/conf.h"
#include "relay/relay_int.h"

#define OUTBOX_ADMIN_SAMPLE_S 2   /* seconds between throughput samples */
#define OUTBOX_ADMIN_SAMPLES 450  /* 15 minutes of them */
#define OUTBOX_ADMIN_DLQ_ROWS 100 /* dead letters listed on the page */

typedef struct outbox_admin_sample_s {
    double t; /* wall clock, seconds */
    uint64_t published, failed, dead;
} outbox_admin_sample_t;

typedef struct outbox_admin_s {
    outbox_relay_t *relay;
    int loopback;    /* the admin address is 127.0.0.0/8 */
    char token[256]; /* admin_token ("" = none); never logged */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t thread;
    int started, stopping;
    outbox_admin_sample_t samples[OUTBOX_ADMIN_SAMPLES];
    int first, n;
} outbox_admin_t;

/** Starts the sampler. */
outbox_err_t outbox__admin_init(outbox_admin_t *a, outbox_relay_t *relay, int loopback,
                                char *errstr, size_t errstr_size);
/** Stops the sampler. No-op when init failed. */
void outbox__admin_term(outbox_admin_t *a);
/** The dashboard page (static storage). */
const char *outbox__admin_html(size_t *len);
/** The /api/status document (caller frees); store is the metrics server's
 *  session, used only when db_up. NULL when out of memory. */
char *outbox__admin_status_json(outbox_admin_t *a, outbox_store_t *store, int db_up,
                                const outbox_store_stats_t *st, const char *addr, int broker_up);
/** 0 if an action request may proceed, else the HTTP status with *why. */
int outbox__admin_authorize(const outbox_admin_t *a, const char *authorization,
                            const char *content_type, const char *origin, const char *host,
                            const char **why);
/** Handles POST /api/consumer-dlq/requeue ({"id": N}); like outbox__admin_requeue. */
int outbox__admin_consumer_requeue(outbox_admin_t *a, outbox_store_t *store, const char *body,
                                   size_t len, char **reply);

/** Handles POST /api/dlq/requeue with its JSON body; returns the HTTP status
 *  and a JSON reply in *reply (caller frees). */
int outbox__admin_requeue(outbox_admin_t *a, outbox_store_t *store, const char *body, size_t len,
                          char **reply);

#endif
