/* Relay internals: the relay handle and its workers. */
#ifndef OUTBOX_RELAY_INT_H
#define OUTBOX_RELAY_INT_H

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "outbox/outbox.h"
#include "sink/sink.h"
#include "store/pg/pg.h"

typedef struct outbox_relay_s outbox_relay_t;

typedef struct outbox_worker_s {
    outbox_relay_t *relay;
    int idx;                 /* 0-based */
    char name[32];           /* "worker-1" */
    pthread_t thread;
    int thread_started;
    PGconn *conn;            /* own session: lane locks live and die with it */
    outbox_sink_t *sink;
    int lanes[OUTBOX_LANES];
    int nlanes;
    int registered;          /* holds its NS_WORKER lock */
    int64_t next_rebalance_ms;
    int db_down;             /* state, for log-once-per-change */
    int db_attempt;
    int sink_down;
    int sink_attempt;
    int64_t next_probe_ms;
    int64_t next_maintenance_ms; /* worker-1 only */
    int64_t next_retry_ms;       /* earliest retry scheduled by this worker (0: none) */
    _Atomic uint64_t published, failed, batches;
    _Atomic int lanes_held;
} outbox_worker_t;

struct outbox_relay_s {
    outbox_conf_t *conf;
    char name[128];          /* relay_name or host:pid */
    char sink_url[1024];
    int nworkers;
    outbox_worker_t *workers;
    volatile int stop;       /* set by outbox_relay_stop (async-signal-safe) */
    int stop_pipe[2];        /* readable once stop is requested: wakes every worker */
    _Atomic int registered;  /* workers that have registered their session */
    _Atomic int running;     /* worker threads alive */
    _Atomic int broker_down; /* relay-wide state: logged once per change */
    _Atomic int db_down;
    int started;
    double fault_fail_rate;
    const char *fault_poison_type;
    struct outbox_metrics_s *metrics; /* NULL when metrics_addr is off */
    char fatal[512];         /* why the relay stopped by itself ("" if it did not) */
};

/* Metrics hooks (src/relay/metrics.c). All are no-ops when m is NULL. */
struct outbox_metrics_s;
struct outbox_metrics_s *outbox__metrics_start(outbox_relay_t *relay, const char *addr, char *errstr,
                                               size_t errstr_size);
void outbox__metrics_stop(struct outbox_metrics_s *m);
void outbox__metrics_count(struct outbox_metrics_s *m, const char *what, const char *topic, uint64_t n);
void outbox__metrics_batch(struct outbox_metrics_s *m, double seconds);

#endif
