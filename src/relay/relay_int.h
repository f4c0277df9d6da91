/* Relay internals: the relay handle, its workers and its resolved options.
 * The engine reaches the database only through store/store.h and the broker
 * only through sink/sink.h. */
#ifndef OUTBOX_RELAY_INT_H
#define OUTBOX_RELAY_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "outbox/outbox.h"
#include "sink/sink.h"
#include "store/store.h"

typedef struct outbox_relay_s outbox_relay_t;

/** The configuration, resolved once at outbox_relay_new into typed fields. */
typedef struct outbox_relay_opts_s {
    int workers, batch_size, max_attempts;
    int notify, park, sync_ack, ack_on_claim;
    outbox_ack_mode_t ack_mode;
    int64_t poll_ms, poll_min_ms, publish_timeout_ms, backoff_base_ms, backoff_max_ms, probe_max_ms;
    int64_t rebalance_ms, maintenance_ms;
    long long vacuum_after; /* events acknowledged between two VACUUMs of the table (0: off) */
    outbox_maint_t maint;   /* retentions and park */
    const char *database_url, *table; /* borrowed from the relay's conf */
    /* testing only */
    double fault_fail_rate;
    const char *fault_poison_type; /* NULL when unset */
    int64_t fault_ack_delay_ms;
} outbox_relay_opts_t;

/* Counters one worker writes and the metrics endpoint reads, lock-free: a
 * worker appends a topic's slot and then publishes the new count. */
#define OUTBOX_METRIC_TOPICS 64
enum { OUTBOX_M_PUBLISHED, OUTBOX_M_FAILED, OUTBOX_M_RETRIED, OUTBOX_M_DEAD, OUTBOX_M__COUNT };
#define OUTBOX_BATCH_BUCKETS 12
typedef struct outbox_worker_metrics_s {
    struct {
        char topic[128];
        _Atomic uint64_t v[OUTBOX_M__COUNT];
    } topics[OUTBOX_METRIC_TOPICS];
    _Atomic int ntopics;
    _Atomic uint64_t other[OUTBOX_M__COUNT]; /* topics beyond the table */
    _Atomic uint64_t buckets[OUTBOX_BATCH_BUCKETS], batches, batch_us;
} outbox_worker_metrics_t;

typedef struct outbox_worker_s {
    outbox_relay_t *relay;
    int idx;       /* 0-based */
    char name[32]; /* "worker-1" */
    pthread_t thread;
    int thread_started;
    outbox_store_t *store; /* own session: lanes live and die with it */
    outbox_sink_t *sink;
    int lanes[OUTBOX_LANES];
    int nlanes;
    int64_t next_rebalance_ms;
    int db_down; /* state, for log-once-per-change */
    int db_attempt;
    int sink_attempt;
    _Atomic int sink_down; /* read by /metrics and /readyz */
    int64_t next_probe_ms;
    int64_t next_maintenance_ms; /* worker-1 only */
    int64_t vacuum_at_ms;        /* worker-1 only: when VACUUM may run next */
    int64_t next_retry_ms;       /* earliest retry scheduled by this worker (0: none) */
    int64_t claim_at_ms;         /* when the last claim started */
    _Atomic int claim_n;         /* events its last claim handed out (read by worker-1) */
    int wake[2]; /* readable: the watcher saw work in a lane of this worker, or stop */
    _Atomic uint64_t lane_mask; /* the lanes held, bit i = lane i (read by the watcher) */
    _Atomic uint64_t published, failed, batches;
    _Atomic int lanes_held;
    outbox_worker_metrics_t m;
} outbox_worker_t;

struct outbox_relay_s {
    outbox_conf_t *conf;
    outbox_relay_opts_t o;
    char name[128]; /* relay_name or host:pid */
    char sink_url[1024];
    const outbox_sink_ops_t *sink_ops; /* testing: overrides the URL's sink (NULL: by URL) */
    int nworkers;
    outbox_worker_t *workers;
    _Atomic int stop;  /* set by outbox_relay_stop (lock-free: async-signal-safe) */
    int stop_pipe[2];  /* readable once stop is requested (the watcher waits on it) */
    pthread_t watcher; /* poll_min_interval > 0: see watcher_main in relay.c */
    int watcher_started;
    _Atomic uint64_t progress;      /* batches that handled events, all workers */
    _Atomic long long unvacuumed;   /* events handed out since worker-1's last VACUUM */
    _Atomic int idle_workers;       /* workers waiting for work */
    _Atomic uint64_t watch_probes;  /* the watcher's looks at the table */
    _Atomic uint64_t watch_wakeups; /* workers it woke */
    _Atomic int registered;         /* workers that have registered their session */
    _Atomic int64_t live_at_ms;     /* when live_count was read (0: never) */
    _Atomic int live_count;         /* live workers of every relay on the table, as read then */
    _Atomic int running;            /* worker threads alive */
    _Atomic int broker_down;        /* relay-wide state: logged once per change */
    _Atomic int db_down;
    int started;
    struct outbox_metrics_s *metrics; /* NULL when metrics_addr is off */
    char fatal[512];                  /* why the relay stopped by itself: see fatal_state */
    _Atomic int fatal_state;          /* 0 none, 1 being written (first worker only), 2 set */
};

/* ---- src/relay/batch.c ---- */
/** One batch: claim, prepare, publish, settle. Returns events handled (>0),
 *  0 when nothing was due, -1 on a database error (session dropped), -2 when
 *  the broker is unreachable. */
int outbox__relay_batch(outbox_worker_t *w);

/* ---- src/relay/lanes.c ---- */
/** Takes or gives back lanes towards a fair share of the live workers.
 *  -1 on a database error (session dropped). */
int outbox__relay_rebalance(outbox_worker_t *w);

/* ---- src/relay/relay.c ---- */
/** Closes the worker's store session after err and logs db_down once. */
void outbox__relay_drop_session(outbox_worker_t *w, const char *err);

/* ---- src/relay/metrics.c ---- */
struct outbox_metrics_s;
struct outbox_metrics_s *outbox__metrics_start(outbox_relay_t *relay, const char *addr,
                                               int explicit_addr, char *errstr, size_t errstr_size);
void outbox__metrics_stop(struct outbox_metrics_s *m);
/** Counts n events of topic for worker w (lock-free; the worker's own thread). */
void outbox__metrics_count(outbox_worker_t *w, int what, const char *topic, uint64_t n);
void outbox__metrics_batch(outbox_worker_t *w, double seconds);

/** Testing: publish through ops instead of the sink the URL names (set
 *  before outbox_relay_start). */
void outbox__relay_set_sink_ops(outbox_relay_t *relay, const outbox_sink_ops_t *ops);

#endif
