/*
 * The relay engine: W worker threads, each with its own PostgreSQL session
 * and broker connection.
 *
 * Per-key order with parallelism: keys hash to 64 lanes (a generated column
 * of the outbox table). A worker publishes only events of lanes it holds
 * through session advisory locks (OUTBOX_LOCK_NS_LANE, lane). Live workers
 * of every relay process register with another advisory lock; each worker
 * periodically takes or gives back lanes towards a fair share
 * ceil(64 / live workers). A dead process's session ends, its locks vanish,
 * and the survivors take its lanes at their next rebalance: no coordinator.
 *
 * A batch: BEGIN; claim due events of held lanes FOR UPDATE SKIP LOCKED in
 * seq order (a key whose earlier event is retrying or dead-lettered is
 * skipped); publish and wait for the broker's confirmation; delete the
 * confirmed, record attempts and backoff for the failed, move exhausted ones
 * to dead letters; COMMIT. A crash anywhere leaves unconfirmed events
 * pending, so they are published again (at least once).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/conf.h"
#include "core/keyset.h"
#include "core/log.h"
#include "core/util.h"
#include "relay/relay_int.h"

#define COMPONENT "relay"

static uint64_t hash_str(const char *s)
{
    return outbox__keyset_hash(s);
}

/* ------------------------------------------------------------------------ */
/* Waiting: for a NOTIFY, a stop request or a timeout.                       */

static void wait_for_work(outbox_worker_t *w, int64_t timeout_ms)
{
    outbox_relay_t *r = w->relay;
    if (r->stop || timeout_ms <= 0)
        return;
    struct pollfd fds[2];
    int nfds = 0;
    fds[nfds++] = (struct pollfd){.fd = r->stop_pipe[0], .events = POLLIN};
    if (w->conn && PQsocket(w->conn) >= 0)
        fds[nfds++] = (struct pollfd){.fd = PQsocket(w->conn), .events = POLLIN};
    if (timeout_ms > 60000)
        timeout_ms = 60000;
    int rc = poll(fds, (nfds_t)nfds, (int)timeout_ms);
    if (rc > 0 && nfds > 1 && (fds[1].revents & (POLLIN | POLLERR | POLLHUP))) {
        if (!PQconsumeInput(w->conn))
            return; /* broken: the next query notices and reconnects */
        PGnotify *n;
        while ((n = PQnotifies(w->conn)) != NULL)
            PQfreemem(n);
    }
}

/* ------------------------------------------------------------------------ */
/* Database session                                                          */

static void drop_conn(outbox_worker_t *w, const char *why)
{
    if (w->conn) {
        PQfinish(w->conn);
        w->conn = NULL;
    }
    if (w->registered)
        atomic_fetch_sub(&w->relay->registered, 1);
    w->registered = 0;
    w->nlanes = 0;
    atomic_store(&w->lanes_held, 0);
    if (!w->db_down) {
        w->db_down = 1;
        if (atomic_fetch_add(&w->relay->db_down, 1) == 0)
            outbox__log(OUTBOX_LOG_ERROR, COMPONENT, "db_down", why, "worker", w->name, NULL);
    }
}

static int connect_db(outbox_worker_t *w)
{
    outbox_relay_t *r = w->relay;
    char err[512], app[64], sql[256];
    snprintf(app, sizeof(app), "outbox-relay %.40s %s", r->name, w->name);
    w->conn = outbox__pg_connect(outbox__conf_database_url(r->conf), app, err, sizeof(err));
    if (!w->conn)
        goto fail;
    int64_t tx_limit = outbox__conf_ms(r->conf, "publish_timeout") + 5000;
    snprintf(sql, sizeof(sql),
             "SET idle_in_transaction_session_timeout = %lld; SET statement_timeout = %lld",
             (long long)tx_limit, (long long)tx_limit);
    if (outbox__pg_exec(w->conn, sql, err, sizeof(err)))
        goto fail;
    if (outbox__conf_bool(r->conf, "notify") &&
        outbox__pg_exec(w->conn, "LISTEN " OUTBOX_NOTIFY_CHANNEL, err, sizeof(err)))
        goto fail;
    snprintf(sql, sizeof(sql), "SELECT pg_advisory_lock(%d, pg_backend_pid())", OUTBOX_LOCK_NS_WORKER);
    if (outbox__pg_exec(w->conn, sql, err, sizeof(err)))
        goto fail;
    w->registered = 1;
    atomic_fetch_add(&r->registered, 1);
    w->nlanes = 0;
    w->next_rebalance_ms = 0;
    w->db_attempt = 0;
    if (w->db_down) {
        w->db_down = 0;
        if (atomic_fetch_sub(&r->db_down, 1) == 1)
            outbox__log(OUTBOX_LOG_INFO, COMPONENT, "db_up", "database connection restored", "worker",
                        w->name, NULL);
    }
    return 0;
fail:
    if (w->conn)
        PQfinish(w->conn);
    w->conn = NULL;
    if (!w->db_down) {
        w->db_down = 1;
        if (atomic_fetch_add(&r->db_down, 1) == 0)
            outbox__log(OUTBOX_LOG_ERROR, COMPONENT, "db_down", err, "worker", w->name, NULL);
    }
    return -1;
}

/* ------------------------------------------------------------------------ */
/* Lanes                                                                     */

static int rebalance(outbox_worker_t *w)
{
    char err[512], sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
             " AND classid = %d AND objsubid = 2"
             " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
             OUTBOX_LOCK_NS_WORKER);
    PGresult *res = PQexec(w->conn, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(err, sizeof(err), "counting live workers: %s", PQerrorMessage(w->conn));
        PQclear(res);
        drop_conn(w, err);
        return -1;
    }
    int live = atoi(PQgetvalue(res, 0, 0));
    PQclear(res);
    if (live < 1)
        live = 1;
    int fair = (OUTBOX_LANES + live - 1) / live;
    int before = w->nlanes;

    while (w->nlanes > fair) { /* give back the surplus */
        int lane = w->lanes[--w->nlanes];
        snprintf(sql, sizeof(sql), "SELECT pg_advisory_unlock(%d, %d)", OUTBOX_LOCK_NS_LANE, lane);
        if (outbox__pg_exec(w->conn, sql, err, sizeof(err))) {
            drop_conn(w, err);
            return -1;
        }
    }
    if (w->nlanes < fair) {
        /* Free lanes (held by no session), in a per-worker order so workers
         * starting together do not all race for the same ones; then lock
         * them one at a time: a lane taken meanwhile by another worker just
         * fails pg_try_advisory_lock. */
        char off[16];
        snprintf(off, sizeof(off), "%d", (int)((hash_str(w->name) + (uint64_t)getpid() * 7) % OUTBOX_LANES));
        const char *params[1] = {off};
        snprintf(sql, sizeof(sql),
                 "SELECT l FROM generate_series(0, %d) AS l"
                 " WHERE l NOT IN (SELECT objid::int FROM pg_locks WHERE locktype = 'advisory'"
                 "                  AND classid = %d AND objsubid = 2 AND granted AND database ="
                 "                  (SELECT oid FROM pg_database WHERE datname = current_database()))"
                 " ORDER BY (l + $1::int) %% %d",
                 OUTBOX_LANES - 1, OUTBOX_LOCK_NS_LANE, OUTBOX_LANES);
        res = PQexecParams(w->conn, sql, 1, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            snprintf(err, sizeof(err), "listing free lanes: %s", PQerrorMessage(w->conn));
            PQclear(res);
            drop_conn(w, err);
            return -1;
        }
        for (int i = 0; i < PQntuples(res) && w->nlanes < fair; i++) {
            int lane = atoi(PQgetvalue(res, i, 0));
            snprintf(sql, sizeof(sql), "SELECT pg_try_advisory_lock(%d, %d)", OUTBOX_LOCK_NS_LANE, lane);
            PGresult *t = PQexec(w->conn, sql);
            if (PQresultStatus(t) != PGRES_TUPLES_OK) {
                snprintf(err, sizeof(err), "taking lane %d: %s", lane, PQerrorMessage(w->conn));
                PQclear(t);
                PQclear(res);
                drop_conn(w, err);
                return -1;
            }
            if (PQgetvalue(t, 0, 0)[0] == 't')
                w->lanes[w->nlanes++] = lane;
            PQclear(t);
        }
        PQclear(res);
    }
    atomic_store(&w->lanes_held, w->nlanes);
    if (w->nlanes != before) {
        char lanes[16], live_s[16];
        snprintf(lanes, sizeof(lanes), "%d", w->nlanes);
        snprintf(live_s, sizeof(live_s), "%d", live);
        outbox__log(OUTBOX_LOG_INFO, COMPONENT, "lanes_changed", "lane ownership changed", "worker",
                    w->name, "lanes", lanes, "live_workers", live_s, NULL);
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Batches                                                                   */

enum { MSG_SEND, MSG_FAILED, MSG_SKIPPED };

/* Returns events handled (>0), 0 when nothing was due, -1 on a database
 * error (connection dropped), -2 when the broker is unreachable. */
static int process_batch(outbox_worker_t *w)
{
    outbox_relay_t *r = w->relay;
    char err[512];
    int64_t t0 = outbox__now_ms();
    if (outbox__pg_exec(w->conn, "BEGIN", err, sizeof(err))) {
        drop_conn(w, err);
        return -1;
    }
    outbox_batch_t b;
    if (outbox__pg_claim(w->conn, w->lanes, w->nlanes, (int)outbox__conf_int(r->conf, "batch_size"),
                         &b, err, sizeof(err))) {
        drop_conn(w, err);
        return -1;
    }
    if (b.n == 0) {
        outbox__pg_batch_term(&b);
        if (outbox__pg_exec(w->conn, "COMMIT", err, sizeof(err))) {
            drop_conn(w, err);
            return -1;
        }
        return 0;
    }

    size_t n = b.n;
    outbox_pub_result_t *res = calloc(n, sizeof(*res));
    int *state = calloc(n, sizeof(*state));
    outbox_msg_t *send = calloc(n, sizeof(*send));
    size_t *send_idx = calloc(n, sizeof(*send_idx));
    int64_t *acked = calloc(n, sizeof(*acked));
    outbox__keyset_t failed_keys = {0};
    int rc = (int)n;
    if (!res || !state || !send || !send_idx || !acked || outbox__keyset_init(&failed_keys, n)) {
        outbox__log(OUTBOX_LOG_ERROR, COMPONENT, "nomem", "out of memory in batch", "worker", w->name, NULL);
        PQclear(PQexec(w->conn, "ROLLBACK"));
        rc = 0;
        goto done;
    }

    /* Envelopes and fault injection, in order; a key that fails here keeps
     * its later events of this batch unsent (they wait behind it). */
    size_t nsend = 0;
    for (size_t i = 0; i < n; i++) {
        outbox_msg_t *m = &b.msgs[i];
        if (outbox__keyset_has(&failed_keys, m->key)) {
            state[i] = MSG_SKIPPED;
            continue;
        }
        m->envelope = outbox__envelope_build(m, &m->envelope_len, res[i].errstr, sizeof(res[i].errstr));
        if (!m->envelope) {
            state[i] = MSG_FAILED;
            res[i].err = OUTBOX_ERR_REJECTED;
            outbox__keyset_add(&failed_keys, m->key);
            continue;
        }
        if ((r->fault_poison_type && *r->fault_poison_type && !strcmp(m->type, r->fault_poison_type)) ||
            (r->fault_fail_rate > 0 && outbox__rand01() < r->fault_fail_rate)) {
            state[i] = MSG_FAILED;
            res[i].err = OUTBOX_ERR_BROKER;
            snprintf(res[i].errstr, sizeof(res[i].errstr), "injected publish failure (testing)");
            outbox__keyset_add(&failed_keys, m->key);
            continue;
        }
        state[i] = MSG_SEND;
        send[nsend] = *m;
        send_idx[nsend++] = i;
    }

    if (nsend) {
        outbox_pub_result_t *sres = calloc(nsend, sizeof(*sres));
        if (!sres) {
            PQclear(PQexec(w->conn, "ROLLBACK"));
            rc = 0;
            goto done;
        }
        outbox_err_t perr = w->sink->ops->publish(w->sink, send, nsend, sres);
        if (perr != OUTBOX_OK) {
            /* Broker unreachable: nothing counts, nothing is charged an
             * attempt. Roll back and probe until it is back. */
            PQclear(PQexec(w->conn, "ROLLBACK"));
            if (!w->sink_down) {
                w->sink_down = 1;
                w->sink_attempt = 0;
                if (atomic_fetch_add(&r->broker_down, 1) == 0)
                    outbox__log(OUTBOX_LOG_ERROR, COMPONENT, "broker_down",
                                "broker unreachable: claiming stopped, probing with backoff; writes keep "
                                "being accepted into the outbox", "worker", w->name, "error", sres[0].errstr,
                                NULL);
            }
            w->next_probe_ms = outbox__now_ms() +
                               outbox__backoff_ms(++w->sink_attempt, outbox__conf_ms(r->conf, "backoff_base"),
                                                  outbox__conf_ms(r->conf, "broker_probe_max"));
            free(sres);
            rc = -2;
            goto done;
        }
        for (size_t j = 0; j < nsend; j++) {
            size_t i = send_idx[j];
            res[i] = sres[j];
            if (sres[j].err != OUTBOX_OK)
                state[i] = sres[j].not_sent ? MSG_SKIPPED : MSG_FAILED;
        }
        free(sres);
    }

    /* Acknowledge, retry, dead-letter. */
    int64_t ack_delay = outbox__conf_ms(r->conf, "fault_ack_delay");
    if (ack_delay > 0)
        outbox__sleep_ms(ack_delay, NULL); /* testing: published, not yet acknowledged */
    int nacked = 0;
    int64_t base = outbox__conf_ms(r->conf, "backoff_base"), max = outbox__conf_ms(r->conf, "backoff_max");
    int max_attempts = (int)outbox__conf_int(r->conf, "max_attempts");
    int park = !strcmp(outbox__conf_str(r->conf, "dlq_mode"), "park");
    outbox_err_t dberr = OUTBOX_OK;
    for (size_t i = 0; i < n && !dberr; i++) {
        outbox_msg_t *m = &b.msgs[i];
        if (state[i] == MSG_SKIPPED)
            continue;
        if (state[i] == MSG_SEND) {
            acked[nacked++] = m->seq;
            outbox__metrics_count(r->metrics, "published", m->topic, 1);
            continue;
        }
        atomic_fetch_add(&w->failed, 1);
        outbox__metrics_count(r->metrics, "failed", m->topic, 1);
        int attempt = m->attempts + 1;
        if (res[i].err == OUTBOX_ERR_REJECTED || attempt >= max_attempts) {
            const char *reason = res[i].err == OUTBOX_ERR_REJECTED ? "rejected" : "max_attempts";
            dberr = outbox__pg_dead_letter(w->conn, m->seq, reason, res[i].errstr, park, err, sizeof(err));
            outbox__metrics_count(r->metrics, "dead_lettered", m->topic, 1);
            char att[16];
            snprintf(att, sizeof(att), "%d", attempt);
            outbox__log(OUTBOX_LOG_WARN, COMPONENT, "dead_lettered", res[i].errstr, "worker", w->name,
                        "event_id", m->id, "topic", m->topic, "key", m->key, "attempts", att,
                        "reason", reason, NULL);
        } else {
            int64_t delay = outbox__backoff_ms(attempt, base, max);
            if (res[i].retry_after_ms > delay)
                delay = res[i].retry_after_ms;
            dberr = outbox__pg_fail(w->conn, m->seq, delay, res[i].errstr, err, sizeof(err));
            int64_t due = outbox__now_ms() + delay;
            if (!w->next_retry_ms || due < w->next_retry_ms)
                w->next_retry_ms = due;
            outbox__metrics_count(r->metrics, "retried", m->topic, 1);
            if (outbox__log_enabled(OUTBOX_LOG_DEBUG)) {
                char att[16], d[24];
                snprintf(att, sizeof(att), "%d", attempt);
                snprintf(d, sizeof(d), "%lld", (long long)delay);
                outbox__log(OUTBOX_LOG_DEBUG, COMPONENT, "publish_retry", res[i].errstr, "worker",
                            w->name, "event_id", m->id, "attempt", att, "delay_ms", d, NULL);
            }
        }
    }
    if (!dberr)
        dberr = outbox__pg_ack(w->conn, acked, nacked, err, sizeof(err));
    if (!dberr)
        dberr = outbox__pg_exec(w->conn, "COMMIT", err, sizeof(err));
    if (dberr) {
        /* Published but not acknowledged: they will be published again. */
        drop_conn(w, err);
        rc = -1;
        goto done;
    }
    atomic_fetch_add(&w->published, (uint64_t)nacked);
    atomic_fetch_add(&w->batches, 1);
    double secs = (double)(outbox__now_ms() - t0) / 1000.0;
    outbox__metrics_batch(r->metrics, secs);
    {
        char cnt[16], fl[16], ms[24];
        snprintf(cnt, sizeof(cnt), "%d", nacked);
        snprintf(fl, sizeof(fl), "%d", (int)n - nacked);
        snprintf(ms, sizeof(ms), "%lld", (long long)(outbox__now_ms() - t0));
        outbox__log(OUTBOX_LOG_INFO, COMPONENT, "batch_published", "published batch", "worker",
                    w->name, "published", cnt, "not_published", fl, "ms", ms, NULL);
    }

done:
    outbox__keyset_term(&failed_keys);
    free(res);
    free(state);
    free(send);
    free(send_idx);
    free(acked);
    outbox__pg_batch_term(&b);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Maintenance (worker-1): retention and park mode. No table grows without  */
/* bound: delivered rows are deleted at acknowledgement; dead letters and    */
/* inbox records older than their retention are purged here.                 */

static void maintenance(outbox_worker_t *w)
{
    outbox_relay_t *r = w->relay;
    char err[512], a[24], b[24];
    snprintf(a, sizeof(a), "%lld", (long long)outbox__conf_ms(r->conf, "dlq_retention"));
    snprintf(b, sizeof(b), "%lld", (long long)outbox__conf_ms(r->conf, "inbox_retention"));
    const char *p1[1] = {a}, *p2[1] = {b};
    static const char *const sql[] = {
        "DELETE FROM outbox_dead_letter WHERE $1::bigint > 0"
        " AND dead_at < now() - $1::bigint * interval '1 millisecond'",
        "DELETE FROM outbox_inbox WHERE $1::bigint > 0"
        " AND processed_at < now() - $1::bigint * interval '1 millisecond'",
    };
    for (int i = 0; i < 2; i++) {
        PGresult *res = PQexecParams(w->conn, sql[i], 1, NULL, i ? p2 : p1, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            snprintf(err, sizeof(err), "maintenance: %s", PQerrorMessage(w->conn));
            outbox__log(OUTBOX_LOG_WARN, COMPONENT, "maintenance_failed", err, "worker", w->name, NULL);
        } else if (atoi(PQcmdTuples(res)) > 0) {
            outbox__log(OUTBOX_LOG_INFO, COMPONENT, "purged", i ? "expired inbox records purged"
                                                                : "expired dead letters purged",
                        "worker", w->name, "rows", PQcmdTuples(res), NULL);
        }
        PQclear(res);
    }
    if (!strcmp(outbox__conf_str(r->conf, "dlq_mode"), "park")) {
        /* Events that arrived after their key was dead-lettered follow it. */
        PGresult *res = PQexec(w->conn,
                               "WITH moved AS (DELETE FROM outbox o WHERE EXISTS"
                               "   (SELECT 1 FROM outbox_dead_letter d WHERE d.key = o.key) RETURNING o.*)"
                               " INSERT INTO outbox_dead_letter (seq, id, topic, type, key, payload, headers,"
                               "   traceparent, source, created_at, attempts, last_error, errors, reason)"
                               " SELECT seq, id, topic, type, key, payload, headers, traceparent, source,"
                               "        created_at, attempts, last_error, errors, 'parked' FROM moved");
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            outbox__log(OUTBOX_LOG_WARN, COMPONENT, "maintenance_failed", PQerrorMessage(w->conn), "worker",
                        w->name, NULL);
        PQclear(res);
    }
}

/* ------------------------------------------------------------------------ */
/* Worker thread                                                             */

static void *worker_main(void *arg)
{
    outbox_worker_t *w = arg;
    outbox_relay_t *r = w->relay;
    int64_t poll_ms = outbox__conf_ms(r->conf, "poll_interval");
    int64_t rebalance_ms = outbox__conf_ms(r->conf, "rebalance_interval");
    int64_t base = outbox__conf_ms(r->conf, "backoff_base"), max = outbox__conf_ms(r->conf, "backoff_max");
    int64_t probe_max = outbox__conf_ms(r->conf, "broker_probe_max");
    int64_t start_ms = outbox__now_ms();
    char err[512];

    outbox__log(OUTBOX_LOG_INFO, COMPONENT, "worker_started", "worker started", "worker", w->name, NULL);
    w->sink = outbox__sink_new(r->sink_url, r->conf, w->name, err, sizeof(err));
    if (!w->sink) {
        outbox__log(OUTBOX_LOG_ERROR, COMPONENT, "sink_failed", err, "worker", w->name, NULL);
        if (!r->fatal[0])
            snprintf(r->fatal, sizeof(r->fatal), "%s", err);
        r->stop = 1;
        (void)!write(r->stop_pipe[1], "x", 1);
    }

    while (!r->stop) {
        if (!w->conn && connect_db(w)) {
            wait_for_work(w, outbox__backoff_ms(++w->db_attempt, base, max > 5000 ? 5000 : max));
            continue;
        }
        /* Wait for this relay's own workers to register (up to 2s) so the
         * first lane split already counts all of them. */
        if (atomic_load(&r->registered) < r->nworkers && outbox__now_ms() - start_ms < 2000) {
            wait_for_work(w, 20);
            continue;
        }
        int64_t now = outbox__now_ms();
        if (now >= w->next_rebalance_ms) {
            if (rebalance(w))
                continue;
            w->next_rebalance_ms = now + rebalance_ms;
        }
        if (w->sink_down) {
            if (now < w->next_probe_ms) {
                wait_for_work(w, w->next_probe_ms - now);
                continue;
            }
            if (w->sink->ops->ping(w->sink, err, sizeof(err)) != OUTBOX_OK) {
                w->next_probe_ms = outbox__now_ms() + outbox__backoff_ms(++w->sink_attempt, base, probe_max);
                continue;
            }
            w->sink_down = 0;
            if (atomic_fetch_sub(&r->broker_down, 1) == 1)
                outbox__log(OUTBOX_LOG_INFO, COMPONENT, "broker_up", "broker reachable again; resuming",
                            "worker", w->name, NULL);
        }
        if (w->idx == 0 && now >= w->next_maintenance_ms) {
            maintenance(w);
            w->next_maintenance_ms = now + outbox__conf_ms(r->conf, "maintenance_interval");
        }
        int rc = w->nlanes ? process_batch(w) : 0;
        if (rc > 0)
            continue; /* more may be waiting: claim again at once */
        if (rc == 0) {
            /* Idle: sleep until a NOTIFY, the poll interval, the next
             * rebalance or this worker's earliest scheduled retry. */
            int64_t now2 = outbox__now_ms(), wait = poll_ms;
            if (w->next_rebalance_ms - now2 < wait)
                wait = w->next_rebalance_ms - now2;
            if (w->next_retry_ms) {
                if (w->next_retry_ms <= now2) {
                    w->next_retry_ms = 0; /* due now: claim again at once */
                    wait = 1;
                } else if (w->next_retry_ms - now2 < wait)
                    wait = w->next_retry_ms - now2 + 5;
            }
            wait_for_work(w, wait > 0 ? wait : 1);
        }
    }

    if (w->conn) {
        PQfinish(w->conn); /* ends the session: lanes are released */
        w->conn = NULL;
    }
    if (w->registered)
        atomic_fetch_sub(&r->registered, 1);
    w->registered = 0;
    outbox__sink_destroy(w->sink);
    w->sink = NULL;
    outbox__log(OUTBOX_LOG_INFO, COMPONENT, "worker_stopped", "worker stopped", "worker", w->name, NULL);
    atomic_fetch_sub(&r->running, 1);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Public API                                                                */

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
        snprintf(r->sink_url, sizeof(r->sink_url), "redis://%s", outbox__conf_str(conf, "redis_addr"));
    if (!outbox__sink_supported(r->sink_url)) {
        char shown[256];
        outbox__redact_url(r->sink_url, shown, sizeof(shown));
        outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                    "sink \"%s\": unsupported URL scheme (supported: %s)", shown, outbox__sink_schemes());
        free(r);
        return NULL;
    }
    /* Open (and close) the sink once so a bad URL or option fails here, with
     * its reason, rather than in every worker. Sinks connect lazily, so this
     * does not need the broker to be up. */
    outbox_sink_t *probe = outbox__sink_new(r->sink_url, conf, "relay", errstr, errstr_size);
    if (!probe) {
        free(r);
        return NULL;
    }
    outbox__sink_destroy(probe);
    const char *rate = outbox__conf_str(conf, "fault_publish_fail_rate");
    char *end;
    r->fault_fail_rate = strtod(rate, &end);
    if (end == rate || *end || r->fault_fail_rate < 0 || r->fault_fail_rate > 1) {
        outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                    "fault_publish_fail_rate: \"%s\" is not a number between 0 and 1", rate);
        free(r);
        return NULL;
    }
    r->nworkers = (int)outbox__conf_int(conf, "workers");
    r->workers = calloc((size_t)r->nworkers, sizeof(*r->workers));
    if (!r->workers || pipe(r->stop_pipe)) {
        outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "cannot allocate relay: %s", strerror(errno));
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
        r->workers[i].relay = r;
        r->workers[i].idx = i;
        snprintf(r->workers[i].name, sizeof(r->workers[i].name), "worker-%d", i + 1);
    }
    r->conf = conf; /* owned from here on */
    outbox__log_setup(outbox__conf_str(conf, "log_level"), outbox__conf_str(conf, "log_format"));
    r->fault_poison_type = outbox__conf_str(conf, "fault_poison_type");
    return r;
}

outbox_err_t outbox_relay_start(outbox_relay_t *r, char *errstr, size_t errstr_size)
{
    if (!r || r->started)
        return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size, "relay is NULL or already started");
    const char *maddr = outbox__conf_str(r->conf, "metrics_addr");
    if (maddr[0] && strcmp(maddr, "off")) {
        r->metrics = outbox__metrics_start(r, maddr, errstr, errstr_size);
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
    outbox__log(OUTBOX_LOG_INFO, COMPONENT, "relay_started", "Outbox worker started", "relay", r->name,
                "workers", nw, "sink", shown, NULL);
    for (int i = 0; i < r->nworkers; i++) {
        atomic_fetch_add(&r->running, 1);
        if (pthread_create(&r->workers[i].thread, NULL, worker_main, &r->workers[i])) {
            atomic_fetch_sub(&r->running, 1);
            outbox_relay_stop(r);
            return outbox__err(OUTBOX_ERR_IO, errstr, errstr_size, "cannot start worker thread");
        }
        r->workers[i].thread_started = 1;
    }
    return OUTBOX_OK;
}

void outbox_relay_stop(outbox_relay_t *r)
{
    if (!r)
        return;
    r->stop = 1;
    (void)!write(r->stop_pipe[1], "x", 1); /* async-signal-safe */
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
    return OUTBOX_OK;
}

void outbox_relay_destroy(outbox_relay_t *r)
{
    if (!r)
        return;
    outbox_relay_stop(r);
    outbox_relay_wait(r, -1);
    outbox__metrics_stop(r->metrics);
    close(r->stop_pipe[0]);
    close(r->stop_pipe[1]);
    free(r->workers);
    outbox_conf_destroy(r->conf);
    free(r);
}

const char *outbox_relay_fatal(const outbox_relay_t *r)
{
    return r && r->fatal[0] ? r->fatal : NULL;
}

int outbox_relay_worker_count(const outbox_relay_t *r)
{
    return r ? r->nworkers : 0;
}

outbox_err_t outbox_relay_worker_stats(const outbox_relay_t *r, int worker, outbox_worker_stats_t *out)
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
