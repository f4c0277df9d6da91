/*
 * The relay engine: W worker threads, each with its own store session and
 * broker connection. Each worker loops: keep its session, rebalance lanes
 * (lanes.c), probe the broker while it is down, run maintenance (worker-1),
 * and handle one batch after another (batch.c) while work is due; when idle,
 * wait for the store's wake-up hint, the poll interval, the next rebalance
 * or its earliest scheduled retry.
 *
 * The options are resolved once, here, into typed fields (relay_int.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/conf.h"
#include "core/log.h"
#include "core/util.h"
#include "relay/relay_int.h"

#define COMPONENT "relay"

/* ------------------------------------------------------------------------ */
/* Store session                                                             */

void outbox__relay_drop_session(outbox_worker_t *w, const char *why)
{
    outbox_relay_t *r = w->relay;
    if (w->store) {
        outbox__store_close(w->store); /* ends the session: its lanes are released */
        w->store = NULL;
        atomic_fetch_sub(&r->registered, 1);
    }
    w->nlanes = 0;
    atomic_store(&w->lanes_held, 0);
    atomic_store(&w->lane_mask, 0);
    if (!w->db_down) {
        w->db_down = 1;
        if (atomic_fetch_add(&r->db_down, 1) == 0)
            outbox__log(OUTBOX_LOG_ERROR, COMPONENT, "db_down", why, "worker", w->name, NULL);
    }
}

static int open_session(outbox_worker_t *w)
{
    outbox_relay_t *r = w->relay;
    char err[512], app[96];
    snprintf(app, sizeof(app), "outbox-relay %.40s %s", r->name, w->name);
    outbox_store_cfg_t cfg = {.url = r->o.database_url,
                              .table = r->o.table,
                              .appname = app,
                              .ack_mode = r->o.ack_mode,
                              .tx_timeout_ms = r->o.publish_timeout_ms,
                              .listen = r->o.notify,
                              .async_commit = !r->o.sync_ack,
                              /* the claim's custom plan took 0.7 ms to make,
                                 more than a small batch takes to run: plan once */
                              .generic_plans = 1,
                              .claims = 1,
                              .ack_on_claim = r->o.ack_on_claim};
    outbox_store_t *s = outbox__store_open(&cfg, err, sizeof(err));
    if (s && s->ops->register_worker(s, err, sizeof(err))) {
        outbox__store_close(s);
        s = NULL;
    }
    if (!s) {
        if (!w->db_down) {
            w->db_down = 1;
            if (atomic_fetch_add(&r->db_down, 1) == 0)
                outbox__log(OUTBOX_LOG_ERROR, COMPONENT, "db_down", err, "worker", w->name, NULL);
        }
        return -1;
    }
    w->store = s;
    if (atomic_fetch_add(&r->registered, 1) + 1 == r->nworkers)
        for (int i = 0; i < r->nworkers; i++) /* the last to register: the others wait for it */
            if (i != w->idx)
                (void)!write(r->workers[i].wake[1], "r", 1);
    w->nlanes = 0;
    w->next_rebalance_ms = 0;
    w->db_attempt = 0;
    if (w->db_down) {
        w->db_down = 0;
        if (atomic_fetch_sub(&r->db_down, 1) == 1)
            outbox__log(OUTBOX_LOG_INFO, COMPONENT, "db_up", "database connection restored",
                        "worker", w->name, NULL);
    }
    return 0;
}

static void wait_for_work(outbox_worker_t *w, int64_t timeout_ms)
{
    outbox_relay_t *r = w->relay;
    if (r->stop || timeout_ms <= 0)
        return;
    if (w->store) {
        w->store->ops->wait_for_work(w->store, w->wake[0], timeout_ms);
    } else {
        struct pollfd fd = {.fd = w->wake[0], .events = POLLIN};
        poll(&fd, 1, (int)(timeout_ms > 60000 ? 60000 : timeout_ms));
    }
}

/* Empties the worker's wake pipe: what the watcher said so far is about to
 * be looked at by the claim that follows. */
static void drain_wake(outbox_worker_t *w)
{
    char buf[64];
    while (!w->relay->stop && read(w->wake[0], buf, sizeof(buf)) > 0) {
    }
}

/* ------------------------------------------------------------------------ */
/* The watcher (poll_min_interval > 0): one thread with its own session that
 * looks at the newest due events and wakes only the workers whose lanes have
 * some, so producers that send no wake-up hint (plain SQL) see millisecond
 * latency without every worker claiming in a loop. It looks every
 * poll_min_interval while events keep coming (a new one within the last
 * WATCH_HOT_MS), skipping the look while no worker is idle (busy workers
 * claim again by themselves), and backs off (doubling, up to WATCH_IDLE_MS or
 * poll_interval if shorter) once they stop: an idle relay costs 20 indexed
 * reads of an empty index range a second. Events that are due but not
 * claimable (their key waits for a retry or is dead-lettered) wake nobody
 * twice: without progress they count as old. */
#define WATCH_HOT_MS 1000
#define WATCH_IDLE_MS 50 /* the longest wait between looks: the first event after a pause */

static void *watcher_main(void *arg)
{
    outbox_relay_t *r = arg;
    const outbox_relay_opts_t *o = &r->o;
    outbox_store_t *s = NULL;
    int64_t wait = o->poll_min_ms, last_seq = 0, last_fresh_ms = 0, seq_seen = -1;
    uint64_t progress_seen = atomic_load(&r->progress);
    int attempt = 0, down = 0;
    char err[512];
    outbox__thread_name("relay-watch");
    while (!r->stop) {
        struct pollfd fd = {.fd = r->stop_pipe[0], .events = POLLIN};
        if (poll(&fd, 1, (int)(wait > 60000 ? 60000 : wait)) > 0 || r->stop)
            break;
        if (atomic_load(&r->idle_workers) == 0) {
            /* All busy: they claim again by themselves. Its session is
             * opened only once some worker is idle: a relay that starts on
             * a backlog opens no third session while its workers drain. */
            wait = o->poll_min_ms;
            continue;
        }
        if (!s) {
            char app[96];
            snprintf(app, sizeof(app), "outbox-relay %.40s watcher", r->name);
            outbox_store_cfg_t cfg = {.url = o->database_url,
                                      .table = o->table,
                                      .appname = app,
                                      .ack_mode = o->ack_mode,
                                      .tx_timeout_ms = o->publish_timeout_ms,
                                      .generic_plans = 1};
            s = outbox__store_open(&cfg, err, sizeof(err));
            if (!s) {
                if (!down++)
                    outbox__log(OUTBOX_LOG_WARN, COMPONENT, "watcher_down", err, NULL);
                wait = outbox__backoff_ms(++attempt, o->backoff_base_ms, o->poll_ms);
                continue;
            }
            attempt = down = 0;
        }
        uint64_t mask = 0;
        int64_t max_seq = 0, seq_now = 0, now0 = outbox__now_ms();
        /* While events keep coming (or a worker just made progress) look at
         * the table every time; when all is quiet, only once the table's
         * seq counter moved (a new row, committed or about to be). */
        int hot = now0 - last_fresh_ms < WATCH_HOT_MS || atomic_load(&r->progress) != progress_seen;
        atomic_fetch_add(&r->watch_probes, 1);
        if (s->ops->newest_due(s, hot ? -1 : seq_seen, &mask, &max_seq, &seq_now, err,
                               sizeof(err))) {
            if (!down++)
                outbox__log(OUTBOX_LOG_WARN, COMPONENT, "watcher_failed", err, NULL);
            outbox__store_close(s); /* reconnects on the next look */
            s = NULL;
            wait = o->poll_ms; /* the workers' own polling covers meanwhile */
            continue;
        }
        down = 0;
        if (seq_now > seq_seen) {
            if (seq_seen >= 0)
                last_fresh_ms = now0; /* rows were added: hot from here */
            seq_seen = seq_now;
        }
        uint64_t progress = atomic_load(&r->progress);
        int fresh = max_seq > last_seq, moving = progress != progress_seen;
        int64_t now = outbox__now_ms();
        if (fresh) {
            last_seq = max_seq;
            last_fresh_ms = now;
        }
        progress_seen = progress;
        if (mask && (fresh || moving)) {
            for (int i = 0; i < r->nworkers; i++) {
                if (atomic_load(&r->workers[i].lane_mask) & mask) {
                    (void)!write(r->workers[i].wake[1], "w", 1);
                    atomic_fetch_add(&r->watch_wakeups, 1);
                }
            }
            wait = o->poll_min_ms;
        } else if (now - last_fresh_ms < WATCH_HOT_MS) {
            wait = o->poll_min_ms; /* events keep coming: look again soon */
        } else {
            int64_t most = o->poll_ms < WATCH_IDLE_MS ? o->poll_ms : WATCH_IDLE_MS;
            wait = wait * 2 > most ? most : wait * 2;
        }
    }
    outbox__store_close(s);
    atomic_fetch_sub(&r->running, 1);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Maintenance (worker-1): no table grows without bound. Delivered rows are  */
/* deleted at acknowledgement (or, in mark mode, purged after their          */
/* retention); dead letters and inbox records older than theirs are purged.  */

static void maintenance(outbox_worker_t *w)
{
    outbox_relay_t *r = w->relay;
    outbox_maint_result_t out;
    char err[512];
    if (w->store->ops->maintain(w->store, &r->o.maint, &out, err, sizeof(err))) {
        outbox__log(OUTBOX_LOG_WARN, COMPONENT, "maintenance_failed", err, "worker", w->name, NULL);
        return;
    }
    const struct {
        long long n;
        const char *what;
    } done[] = {{out.dead_purged, "expired dead letters purged"},
                {out.inbox_purged, "expired inbox records purged"},
                {out.processed_purged, "expired processed events purged"},
                {out.parked, "events of dead-lettered keys parked"}};
    for (size_t i = 0; i < sizeof(done) / sizeof(done[0]); i++) {
        if (done[i].n <= 0)
            continue;
        char rows[24];
        snprintf(rows, sizeof(rows), "%lld", done[i].n);
        outbox__log(OUTBOX_LOG_INFO, COMPONENT, i == 3 ? "parked" : "purged", done[i].what,
                    "worker", w->name, "rows", rows, NULL);
    }
}

/* Worker-1, between batches: VACUUM of the table once the relay has handed
 * out vacuum_after events since the last one, at most once a second, when
 * its last batch was not full (the relay keeps up with its producers). A
 * delete (or a mark) leaves a dead row version; the claim's index scan
 * starts at the oldest seq, so it steps over every dead entry of the
 * acknowledged events, and producers' inserts split pages full of them,
 * until a vacuum reclaims them. Autovacuum looks at most once a minute
 * (autovacuum_naptime): at 2,500 acknowledgements a second that is 150,000
 * dead rows. Measured (docs/BENCHMARKS.md, F6): POST /orders with relay and
 * consumers 1,059-1,142 orders/s without, 1,222-1,226 with a VACUUM every
 * 5 s. A failure (e.g. the relay's role does not own the table) is logged
 * and VACUUM waits ten minutes before the next try. */
static void maybe_vacuum(outbox_worker_t *w, int64_t now)
{
    outbox_relay_t *r = w->relay;
    if (r->o.vacuum_after <= 0 || !w->store->ops->vacuum || now < w->vacuum_at_ms ||
        atomic_load(&r->unvacuumed) < r->o.vacuum_after)
        return;
    /* Not while draining a backlog (full batches): a VACUUM then reads the
     * whole backlog (measured: 300,000 events drained 5-8% slower with one
     * a second), and the dead rows wait behind the claims anyway. Any
     * worker's: one whose lanes ran dry first is not the end of the drain
     * (measured: a VACUUM near the end of a 100k drain, 6% of PostgreSQL's
     * CPU, while two workers were still claiming full batches). */
    for (int i = 0; i < r->nworkers; i++)
        if (atomic_load(&r->workers[i].claim_n) >= r->o.batch_size)
            return;
    long long n = atomic_exchange(&r->unvacuumed, 0);
    char err[512];
    int64_t t0 = outbox__now_ms();
    if (w->store->ops->vacuum(w->store, err, sizeof(err)) != OUTBOX_OK) {
        outbox__log(OUTBOX_LOG_WARN, COMPONENT, "vacuum_failed", err, "worker", w->name, "next_try",
                    "10m", NULL);
        w->vacuum_at_ms = now + 600000;
        return;
    }
    w->vacuum_at_ms = now + 1000;
    char events[24], ms[24];
    snprintf(events, sizeof(events), "%lld", n);
    snprintf(ms, sizeof(ms), "%lld", (long long)(outbox__now_ms() - t0));
    outbox__log(OUTBOX_LOG_DEBUG, COMPONENT, "vacuumed", "outbox table vacuumed", "worker", w->name,
                "events", events, "ms", ms, NULL);
}

/* ------------------------------------------------------------------------ */
/* Worker thread                                                             */

static outbox_sink_t *open_sink(outbox_worker_t *w, char *err, size_t err_size)
{
    outbox_relay_t *r = w->relay;
    if (r->sink_ops)
        return outbox__sink_new_with(r->sink_ops, r->sink_url, r->conf, w->name, err, err_size);
    return outbox__sink_new(r->sink_url, r->conf, w->name, err, err_size);
}

/* Probes a down broker when due; 1 while it is still down. */
static int broker_still_down(outbox_worker_t *w, int64_t now)
{
    outbox_relay_t *r = w->relay;
    char err[512];
    if (!atomic_load(&w->sink_down))
        return 0;
    if (now < w->next_probe_ms) {
        wait_for_work(w, w->next_probe_ms - now);
        return 1;
    }
    if (w->sink->ops->ping(w->sink, err, sizeof(err)) != OUTBOX_OK) {
        w->next_probe_ms =
            outbox__now_ms() +
            outbox__backoff_ms(++w->sink_attempt, r->o.backoff_base_ms, r->o.probe_max_ms);
        return 1;
    }
    atomic_store(&w->sink_down, 0);
    if (atomic_fetch_sub(&r->broker_down, 1) == 1)
        outbox__log(OUTBOX_LOG_INFO, COMPONENT, "broker_up", "broker reachable again; resuming",
                    "worker", w->name, NULL);
    return 0;
}

/* Idle: sleep until a wake-up hint, the poll interval, the next rebalance or
 * this worker's earliest scheduled retry. */
static void idle(outbox_worker_t *w)
{
    int64_t now = outbox__now_ms(), wait = w->relay->o.poll_ms;
    if (w->next_rebalance_ms - now < wait)
        wait = w->next_rebalance_ms - now;
    if (w->next_retry_ms) {
        if (w->next_retry_ms <= now) {
            w->next_retry_ms = 0; /* due now: claim again at once */
            wait = 1;
        } else if (w->next_retry_ms - now < wait) {
            wait = w->next_retry_ms - now + 5;
        }
    }
    atomic_fetch_add(&w->relay->idle_workers, 1);
    wait_for_work(w, wait > 0 ? wait : 1);
    atomic_fetch_sub(&w->relay->idle_workers, 1);
}

/* Adaptive claiming (with the watcher): after a partial batch of k events,
 * the next claim starts no sooner than poll_min_interval x k/2 after the
 * last one, at most PACE_MAX_MS (or 4 x poll_min_interval if longer).
 * Below about 2 events per poll_min_interval per worker this is
 * poll_min_interval itself, so latency stays the watcher's; above, the gap
 * grows with the rate until it reaches the cap, cutting the claim
 * transactions a busy relay runs: each deletes rows producers are still
 * inserting beside (the same heap and index pages), which costs producers
 * the most when they write the fastest. Measured with 32 producers
 * committing as fast as they can (bench_latency, medians of 3 rounds
 * against the same producers with no wake-up at all): a cap of 4 ms left
 * plain-SQL producers 0.87-0.89 of their rate (255 claims/s), 16 ms
 * 0.94-1.00 (100-113), 32 ms 0.99 (55), outbox_enqueue's 0.97 (59). The
 * price: above about 2 events per millisecond per worker an event waits
 * up to the cap. A full batch claims again at once. */
#define PACE_MAX_MS 32

static void pace(outbox_worker_t *w)
{
    const outbox_relay_opts_t *o = &w->relay->o;
    if (o->poll_min_ms <= 0 || w->claim_n <= 2 || w->claim_n >= o->batch_size)
        return;
    int64_t cap = PACE_MAX_MS / o->poll_min_ms > 4 ? PACE_MAX_MS / o->poll_min_ms : 4;
    int64_t k = w->claim_n / 2 > cap ? cap : w->claim_n / 2;
    int64_t wait = w->claim_at_ms + o->poll_min_ms * k - outbox__now_ms();
    if (wait > 0 && !w->relay->stop) {
        struct pollfd fd = {.fd = w->relay->stop_pipe[0], .events = POLLIN};
        poll(&fd, 1, (int)wait);
    }
}

static void *worker_main(void *arg)
{
    outbox_worker_t *w = arg;
    outbox_relay_t *r = w->relay;
    const outbox_relay_opts_t *o = &r->o;
    int64_t start_ms = outbox__now_ms();
    char err[512];
    w->next_maintenance_ms = start_ms; /* due now, once the backlog allows */

    outbox__thread_name("relay-w%d", w->idx + 1);
    outbox__log(OUTBOX_LOG_INFO, COMPONENT, "worker_started", "worker started", "worker", w->name,
                NULL);
    w->sink = open_sink(w, err, sizeof(err));
    if (!w->sink) {
        outbox__log(OUTBOX_LOG_ERROR, COMPONENT, "sink_failed", err, "worker", w->name, NULL);
        int none = 0; /* the first worker to fail says why; fatal is written once */
        if (atomic_compare_exchange_strong(&r->fatal_state, &none, 1)) {
            snprintf(r->fatal, sizeof(r->fatal), "%s", err);
            atomic_store(&r->fatal_state, 2);
        }
        r->stop = 1;
        (void)!write(r->stop_pipe[1], "x", 1);
    }

    while (!r->stop) {
        if (!w->store && open_session(w)) {
            wait_for_work(w,
                          outbox__backoff_ms(++w->db_attempt, o->backoff_base_ms,
                                             o->backoff_max_ms > 5000 ? 5000 : o->backoff_max_ms));
            continue;
        }
        /* Wait for this relay's own workers to register (up to 2s) so the
         * first lane split already counts all of them. */
        if (atomic_load(&r->registered) < r->nworkers && outbox__now_ms() - start_ms < 2000) {
            wait_for_work(w, 2);
            continue;
        }
        int64_t now = outbox__now_ms();
        if (now >= w->next_rebalance_ms) {
            if (outbox__relay_rebalance(w))
                continue;
            w->next_rebalance_ms = now + o->rebalance_ms;
        }
        if (broker_still_down(w, now))
            continue;
        /* Maintenance waits for a claim that took less than a full batch
         * (the relay keeps up), unless it is a whole interval late: at a
         * start with a backlog its purges came before worker-1's first
         * claim (bench_drain, 10,000 events: worker-1 began 3-8 ms after
         * worker-2). */
        int keeping_up = w->claim_at_ms && w->claim_n < o->batch_size;
        if (w->idx == 0 && now >= w->next_maintenance_ms &&
            (keeping_up || now >= w->next_maintenance_ms + o->maintenance_ms)) {
            maintenance(w);
            w->next_maintenance_ms = now + o->maintenance_ms;
        }
        if (w->idx == 0)
            maybe_vacuum(w, now);
        pace(w);
        drain_wake(w);
        w->claim_at_ms = outbox__now_ms();
        int rc = w->nlanes ? outbox__relay_batch(w) : 0;
        w->claim_n = rc > 0 ? rc : 0;
        if (rc > 0) {
            atomic_fetch_add(&r->progress, 1);
            atomic_fetch_add(&r->unvacuumed, rc);
        }
        if (rc == 0 || (rc > 0 && rc <= 2 && rc < o->batch_size && o->poll_min_ms > 0))
            idle(w);
        /* A full batch: more may be waiting, claim again at once. A partial
         * one took what there was. With the watcher on, a trickle (one or
         * two events) waits for its word (within poll_min_interval of new
         * events) instead of claiming a few events per transaction in a
         * loop, which costs producers the most when they write the fastest.
         * More than that means events keep coming: pace() spaces the next
         * claim by itself, and the watcher has nothing to look for (it only
         * looks while some worker is idle). rc < 0: the session was dropped
         * or the broker is down, handled above. */
    }

    if (w->store) {
        outbox__store_close(w->store); /* ends the session: lanes are released */
        w->store = NULL;
        atomic_fetch_sub(&r->registered, 1);
    }
    outbox__sink_destroy(w->sink);
    w->sink = NULL;
    outbox__log(OUTBOX_LOG_INFO, COMPONENT, "worker_stopped", "worker stopped", "worker", w->name,
                NULL);
    atomic_fetch_sub(&r->running, 1);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Public API                                                                */

static void close_pipes(outbox_relay_t *r)
{
    for (int i = 0; i < r->nworkers && r->workers; i++) {
        if (r->workers[i].wake[0] >= 0)
            close(r->workers[i].wake[0]);
        if (r->workers[i].wake[1] >= 0)
            close(r->workers[i].wake[1]);
    }
    close(r->stop_pipe[0]);
    close(r->stop_pipe[1]);
}

/* Resolves the configuration into typed fields, once. */
static outbox_err_t resolve_opts(outbox_relay_t *r, const outbox_conf_t *conf, char *errstr,
                                 size_t errstr_size)
{
    outbox_relay_opts_t *o = &r->o;
    o->workers = (int)outbox__conf_int(conf, "workers");
    o->batch_size = (int)outbox__conf_int(conf, "batch_size");
    o->max_attempts = (int)outbox__conf_int(conf, "max_attempts");
    o->notify = outbox__conf_bool(conf, "notify");
    o->sync_ack = outbox__conf_bool(conf, "synchronous_ack");
    o->ack_on_claim = outbox__conf_bool(conf, "ack_on_claim");
    o->park = !strcmp(outbox__conf_str(conf, "dlq_mode"), "park");
    o->ack_mode =
        !strcmp(outbox__conf_str(conf, "ack_mode"), "mark") ? OUTBOX_ACK_MARK : OUTBOX_ACK_DELETE;
    o->poll_ms = outbox__conf_ms(conf, "poll_interval");
    o->poll_min_ms = outbox__conf_ms(conf, "poll_min_interval");
    o->publish_timeout_ms = outbox__conf_ms(conf, "publish_timeout");
    o->backoff_base_ms = outbox__conf_ms(conf, "backoff_base");
    o->backoff_max_ms = outbox__conf_ms(conf, "backoff_max");
    o->probe_max_ms = outbox__conf_ms(conf, "broker_probe_max");
    o->rebalance_ms = outbox__conf_ms(conf, "rebalance_interval");
    o->maintenance_ms = outbox__conf_ms(conf, "maintenance_interval");
    o->vacuum_after = outbox__conf_int(conf, "vacuum_after");
    o->maint.dlq_retention_ms = outbox__conf_ms(conf, "dlq_retention");
    o->maint.inbox_retention_ms = outbox__conf_ms(conf, "inbox_retention");
    o->maint.processed_retention_ms =
        o->ack_mode == OUTBOX_ACK_MARK ? outbox__conf_ms(conf, "processed_retention") : 0;
    o->maint.park = o->park;
    o->database_url = outbox__conf_database_url(conf);
    o->table = outbox__conf_str(conf, "outbox_table");
    o->fault_ack_delay_ms = outbox__conf_ms(conf, "fault_ack_delay");
    o->fault_poison_type = outbox__conf_str(conf, "fault_poison_type");
    if (!*o->fault_poison_type)
        o->fault_poison_type = NULL;
    if (!outbox__store_table_valid(o->table))
        return outbox__err(
            OUTBOX_ERR_CONFIG, errstr, errstr_size,
            "outbox_table \"%.60s\": use lower-case letters, digits and _ (at most 48 bytes)",
            o->table);
    if (!outbox__store_supported(o->database_url))
        return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                           "database_url: no store serves it");
    const char *rate = outbox__conf_str(conf, "fault_publish_fail_rate");
    char *end;
    o->fault_fail_rate = strtod(rate, &end);
    if (end == rate || *end || o->fault_fail_rate < 0 || o->fault_fail_rate > 1)
        return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                           "fault_publish_fail_rate: \"%s\" is not a number between 0 and 1", rate);
    return OUTBOX_OK;
}

outbox_relay_t *outbox_relay_new(outbox_conf_t *conf, char *errstr, size_t errstr_size)
{
    if (!conf) {
        outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size, "conf is NULL");
        return NULL;
    }
    outbox_relay_t *r = calloc(1, sizeof(*r));
    if (!r) {
        outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
        return NULL;
    }
    const char *sink = outbox__conf_str(conf, "sink");
    if (sink[0])
        snprintf(r->sink_url, sizeof(r->sink_url), "%s", sink);
    else
        snprintf(r->sink_url, sizeof(r->sink_url), "redis://%s",
                 outbox__conf_str(conf, "redis_addr"));
    if (!outbox__sink_supported(r->sink_url)) {
        char shown[256];
        outbox__redact_url(r->sink_url, shown, sizeof(shown));
        outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                    "sink \"%s\": unsupported URL scheme (supported: %s)", shown,
                    outbox__sink_schemes());
        free(r);
        return NULL;
    }
    /* Open (and close) the sink once so a bad URL or option fails here, with
     * its reason, rather than in every worker. Sinks connect lazily, so this
     * does not need the broker to be up. */
    outbox_sink_t *probe = outbox__sink_new(r->sink_url, conf, "relay", errstr, errstr_size);
    if (!probe || resolve_opts(r, conf, errstr, errstr_size)) {
        outbox__sink_destroy(probe);
        free(r);
        return NULL;
    }
    outbox__sink_destroy(probe);
    r->nworkers = r->o.workers;
    r->workers = calloc((size_t)r->nworkers, sizeof(*r->workers));
    if (!r->workers || pipe(r->stop_pipe)) {
        outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "cannot allocate relay: %s",
                    strerror(errno));
        free(r->workers);
        free(r);
        return NULL;
    }
    fcntl(r->stop_pipe[1], F_SETFL, O_NONBLOCK);
    const char *name = outbox__conf_str(conf, "relay_name");
    if (name[0]) {
        snprintf(r->name, sizeof(r->name), "%s", name);
    } else {
        char host[64] = "localhost";
        gethostname(host, sizeof(host) - 1);
        snprintf(r->name, sizeof(r->name), "%s:%d", host, (int)getpid());
    }
    for (int i = 0; i < r->nworkers; i++) {
        r->workers[i].wake[0] = r->workers[i].wake[1] = -1;
    }
    for (int i = 0; i < r->nworkers; i++) {
        if (pipe(r->workers[i].wake)) {
            outbox__err(OUTBOX_ERR_IO, errstr, errstr_size, "cannot create a pipe: %s",
                        strerror(errno));
            close_pipes(r);
            free(r->workers);
            free(r);
            return NULL;
        }
        fcntl(r->workers[i].wake[0], F_SETFL, O_NONBLOCK);
        fcntl(r->workers[i].wake[1], F_SETFL, O_NONBLOCK);
        r->workers[i].relay = r;
        r->workers[i].idx = i;
        snprintf(r->workers[i].name, sizeof(r->workers[i].name), "worker-%d", i + 1);
    }
    r->conf = conf; /* owned from here on; r->o borrows its strings */
    outbox__log_setup(outbox__conf_str(conf, "log_level"), outbox__conf_str(conf, "log_format"));
    return r;
}

void outbox__relay_set_sink_ops(outbox_relay_t *r, const outbox_sink_ops_t *ops)
{
    if (r && !r->started)
        r->sink_ops = ops;
}

outbox_err_t outbox_relay_start(outbox_relay_t *r, char *errstr, size_t errstr_size)
{
    if (!r || r->started)
        return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
                           "relay is NULL or already started");
    const char *maddr = outbox__conf_str(r->conf, "metrics_addr");
    if (maddr[0] && strcmp(maddr, "off")) {
        r->metrics = outbox__metrics_start(r, maddr, outbox__conf_is_set(r->conf, "metrics_addr"),
                                           errstr, errstr_size);
        if (!r->metrics)
            return OUTBOX_ERR_IO;
    }
    r->started = 1;
    char shown[512];
    outbox__redact_url(r->sink_url, shown, sizeof(shown));
    char *q = strchr(shown, '?'); /* query strings may carry tokens */
    if (q)
        snprintf(q, sizeof(shown) - (size_t)(q - shown), "?...");
    char nw[16];
    snprintf(nw, sizeof(nw), "%d", r->nworkers);
    outbox__log(OUTBOX_LOG_INFO, COMPONENT, "relay_started", "Outbox worker started", "relay",
                r->name, "workers", nw, "sink", shown, NULL);
    for (int i = 0; i < r->nworkers; i++) {
        atomic_fetch_add(&r->running, 1);
        int rc = pthread_create(&r->workers[i].thread, NULL, worker_main, &r->workers[i]);
        if (rc) {
            atomic_fetch_sub(&r->running, 1);
            outbox_relay_stop(r);
            return outbox__err(OUTBOX_ERR_IO, errstr, errstr_size, "cannot start worker thread: %s",
                               strerror(rc));
        }
        r->workers[i].thread_started = 1;
    }
    if (r->o.poll_min_ms > 0 && outbox__store_watchable(r->o.database_url)) {
        atomic_fetch_add(&r->running, 1);
        int rc = pthread_create(&r->watcher, NULL, watcher_main, r);
        if (rc) {
            atomic_fetch_sub(&r->running, 1);
            outbox_relay_stop(r);
            return outbox__err(OUTBOX_ERR_IO, errstr, errstr_size,
                               "cannot start the watcher thread: %s", strerror(rc));
        }
        r->watcher_started = 1;
    }
    return OUTBOX_OK;
}

void outbox_relay_stop(outbox_relay_t *r)
{
    if (!r)
        return;
    r->stop = 1;
    (void)!write(r->stop_pipe[1], "x", 1); /* async-signal-safe */
    for (int i = 0; i < r->nworkers; i++)
        (void)!write(r->workers[i].wake[1], "x", 1);
}

outbox_err_t outbox_relay_wait(outbox_relay_t *r, int timeout_ms)
{
    if (!r)
        return OUTBOX_ERR_INVALID_ARG;
    int64_t end = outbox__now_ms() + timeout_ms;
    while (atomic_load(&r->running) > 0) {
        if (timeout_ms >= 0 && outbox__now_ms() >= end)
            return OUTBOX_ERR_TIMEOUT;
        outbox__sleep_ms(10, NULL);
    }
    for (int i = 0; i < r->nworkers; i++) {
        if (r->workers[i].thread_started) {
            pthread_join(r->workers[i].thread, NULL);
            r->workers[i].thread_started = 0;
        }
    }
    if (r->watcher_started) {
        pthread_join(r->watcher, NULL);
        r->watcher_started = 0;
    }
    return OUTBOX_OK;
}

void outbox_relay_destroy(outbox_relay_t *r)
{
    if (!r)
        return;
    outbox_relay_stop(r);
    outbox_relay_wait(r, -1);
    outbox__metrics_stop(r->metrics);
    close_pipes(r);
    free(r->workers);
    outbox_conf_destroy(r->conf);
    free(r);
}

const char *outbox_relay_fatal(const outbox_relay_t *r)
{
    return r && atomic_load(&r->fatal_state) == 2 ? r->fatal : NULL;
}

int outbox_relay_worker_count(const outbox_relay_t *r)
{
    return r ? r->nworkers : 0;
}

outbox_err_t outbox_relay_worker_stats(const outbox_relay_t *r, int worker,
                                       outbox_worker_stats_t *out)
{
    if (!r || !out || worker < 0 || worker >= r->nworkers)
        return OUTBOX_ERR_INVALID_ARG;
    outbox_worker_t *w = &r->workers[worker];
    out->published = atomic_load(&w->published);
    out->failed = atomic_load(&w->failed);
    out->batches = atomic_load(&w->batches);
    out->lanes_held = atomic_load(&w->lanes_held);
    return OUTBOX_OK;
}
