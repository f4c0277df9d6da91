/*
 * POST /orders in batches: orders whose requests arrive together are
 * written in one transaction, a few statements for all of them instead of
 * four round trips each (see docs/ORDERS.md "Performance").
 *
 * A request thread with a checked order (create_order) hands it here. Up
 * to `slots` batches run at once, each on a pool session; a thread that
 * finds a slot free leads a batch: its own order first, then every order
 * waiting (at most order_batch), and when it is done it passes its slot to
 * the first order still waiting, whose thread leads the next batch. No
 * thread of our own, no timer: orders wait only while a batch runs.
 *
 * A batch does, per statement, what the one-order path does per order:
 *   1. BEGIN, every key's lock (pg_try_advisory_xact_lock), then, in a
 *      second statement so that its snapshot follows the locks, every key's
 *      record: a key held elsewhere is in flight (409), a recorded one
 *      replays or mismatches (422).
 *   2. The orders and their items, the skus checked per order (an unknown
 *      one: 422, nothing written for that order).
 *   3. The events and the key records, then COMMIT.
 * Two orders with one key never share a batch (an advisory lock is
 * re-entrant within a session, so the second would not see the first as in
 * flight): the second waits for a later batch, where it replays.
 *
 * A statement refused before COMMIT (or a key recorded by someone who did
 * not lock it) rolls the batch back and every order of it goes the
 * one-order way, on its own (ORDERS_JOB_ALONE), so one bad order cannot
 * fail the others. A connection lost before COMMIT wrote nothing: every
 * order answers 503 database-unavailable, as it would alone. A COMMIT
 * whose outcome is unknown is reported as such for every order it carried.
 * A lone order first lets the threads ready to run go once (sched_yield),
 * then, still alone, goes the one-order way, holding its slot meanwhile:
 * orders that come then queue up, which is how batches form without a
 * timer.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orders.h"

static struct {
    pthread_mutex_t lock;
    orders_job_t *head, *tail; /* orders waiting for a batch */
    int running;               /* batches being led (slots taken) */
} g = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* ---- The statements ---- */

/* $1 scope, $2 keys in batch order: each key's lock, by ord. */
static const char lock_sql[] =
    "SELECT k.ord, pg_try_advisory_xact_lock(hashtextextended($1 || E'\\n' || k.key, 0))"
    "  FROM unnest($2::text[]) WITH ORDINALITY AS k(key, ord) ORDER BY k.ord";

/* $1 scope, $2 keys: the unexpired records, one index probe per key. The
 * LIMIT keeps the lookup a subquery run per key (not pulled up into a
 * join), so whatever plan the session keeps, prepared once, is an index
 * probe of (scope, key) per key: as a join, a plan made while the table was
 * empty or its statistics came from another load read every record of the
 * scope, the keys only a filter (auto_explain: 7-13 ms a batch, 850 rows
 * removed by the filter, after a pgbench run and a TRUNCATE), and planned
 * anew at every batch it cost 0.12 ms of planning a batch (2% of the whole
 * system's CPU at 5,000 orders/s, pg_stat_statements track_planning). */
static const char lookup_sql[] =
    "SELECT k.ord, i.fingerprint, i.status, i.content_type, i.body"
    "  FROM unnest($2::text[]) WITH ORDINALITY AS k(key, ord)"
    "  CROSS JOIN LATERAL (SELECT r.fingerprint, r.status, r.content_type, r.body"
    "                        FROM outbox_http_idempotency r"
    "                       WHERE r.scope = $1 AND r.key = k.key AND r.expires_at > now()"
    "                       LIMIT 1) i";

/* $1 order ids, $2 users, $3 amounts, $4 items (each a JSON array of
 * {sku, quantity}, skus unique): create_sql for many orders. One row per
 * order by ord: created_at (NULL when a sku is unknown), the first unknown
 * sku, how many. */
static const char create_many_sql[] =
    "WITH req AS MATERIALIZED (SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[],"
    "                          $4::text[]) WITH ORDINALITY AS r(id, user_id, amount, items, ord)),"
    " it AS MATERIALIZED (SELECT r.ord, r.id, i.sku, i.quantity FROM req r,"
    "        json_to_recordset(r.items::json) AS i(sku text, quantity int)),"
    " missing AS MATERIALIZED (SELECT it.ord, min(it.sku) AS sku, count(*) AS n FROM it"
    "        LEFT JOIN inventory v ON v.sku = it.sku WHERE v.sku IS NULL GROUP BY it.ord),"
    " o AS (INSERT INTO orders (id, user_id, amount)"
    "       SELECT r.id, r.user_id, r.amount FROM req r"
    "        WHERE NOT EXISTS (SELECT 1 FROM missing m WHERE m.ord = r.ord) ORDER BY r.ord"
    "       RETURNING id, created_at),"
    " ins AS (INSERT INTO order_items (order_id, sku, quantity)"
    "         SELECT it.id, it.sku, it.quantity FROM it JOIN o ON o.id = it.id)"
    " SELECT r.ord, to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
    "        m.sku, coalesce(m.n, 0)"
    "   FROM req r LEFT JOIN o ON o.id = r.id LEFT JOIN missing m ON m.ord = r.ord ORDER BY r.ord";

/* $1 event ids, $2 order ids (the key), $3 payloads, $4 traceparents: the
 * OrderCreated events, as outbox_enqueue writes each. %s: the hint. */
#define EVENTS_SQL                                                                                 \
    "INSERT INTO \"outbox\" (id, topic, type, key, payload, headers, traceparent, source, "        \
    "priority)"                                                                                    \
    " SELECT e.id, '" ORDERS_TOPIC                                                                 \
    "', 'OrderCreated', e.key, e.payload::json, NULL, e.tp, '" ORDERS_SOURCE "', 0"                \
    "   FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY"               \
    "        AS e(id, key, payload, tp, ord) ORDER BY e.ord"
static const char events_sql[] = EVENTS_SQL;
static const char events_hint_sql[] = EVENTS_SQL " RETURNING pg_notify('outbox_wakeup', '')";

/* $1 scope, $2 keys, $3 fingerprints, $4 bodies, $5 retention (ms): the key
 * records (201, application/json), as outbox__idem_store writes each; the
 * keys written come back (one missing: recorded meanwhile). */
static const char store_many_sql[] =
    "INSERT INTO outbox_http_idempotency AS k (scope, key, fingerprint, status, content_type,"
    " body, expires_at)"
    " SELECT $1, s.key, s.fp, 201, 'application/json', s.body,"
    "        now() + $5::bigint * interval '1 millisecond'"
    "   FROM unnest($2::text[], $3::text[], $4::text[]) AS s(key, fp, body)"
    " ON CONFLICT (scope, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,"
    "   status = EXCLUDED.status, content_type = EXCLUDED.content_type, body = EXCLUDED.body,"
    "   created_at = now(), expires_at = EXCLUDED.expires_at"
    " WHERE k.expires_at <= now()"
    " RETURNING k.key";

/* The statements, prepared once per session (orders_batch_prepare):
 * planned on every batch, they cost more than they saved. */
static const struct {
    const char *name, *sql;
} stmts[] = {{"orders_batch_lock_v1", lock_sql},
             {"orders_batch_lookup_v1", lookup_sql},
             {"orders_batch_create_v1", create_many_sql},
             {"orders_batch_events_v1", events_sql},
             {"orders_batch_events_hint_v1", events_hint_sql},
             {"orders_batch_store_v1", store_many_sql}};

int orders_batch_prepare(PGconn *c, char *err, size_t err_size)
{
    for (size_t i = 0; i < sizeof(stmts) / sizeof(stmts[0]); i++) {
        PGresult *r = PQprepare(c, stmts[i].name, stmts[i].sql, 0, NULL);
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK || (state && !strcmp(state, "42P05"));
        if (!ok)
            snprintf(err, err_size, "preparing %s: %s", stmts[i].name, PQresultErrorMessage(r));
        PQclear(r);
        if (!ok)
            return -1;
    }
    return 0;
}

/* The prepared name of sql. */
static const char *name_of(const char *sql)
{
    for (size_t i = 0; i < sizeof(stmts) / sizeof(stmts[0]); i++)
        if (stmts[i].sql == sql)
            return stmts[i].name;
    return NULL; /* BEGIN */
}

/* Runs n statements in one round trip; 0, or -1 with err set (results
 * cleared). */
static int pipeline(PGconn *c, int n, const char *const *sqls, const int *np,
                    const char *const *const *params, PGresult **res, const ExecStatusType *want,
                    char *err, size_t err_size)
{
    const char *names[4] = {NULL, NULL, NULL, NULL};
    for (int i = 0; i < n && i < 4; i++)
        names[i] = name_of(sqls[i]);
    if (outbox_kit_db_pipeline(c, n, names, sqls, np, params, res)) {
        snprintf(err, err_size, "%s", PQerrorMessage(c));
        return -1;
    }
    for (int i = 0; i < n; i++)
        if (PQresultStatus(res[i]) != want[i]) {
            snprintf(err, err_size, "%s",
                     res[i] ? PQresultErrorMessage(res[i]) : PQerrorMessage(c));
            for (int k = 0; k < n; k++) {
                PQclear(res[k]);
                res[k] = NULL;
            }
            return -1;
        }
    return 0;
}

/* The ord column of row r (1-based) as an index into a batch of n, or -1. */
static int ord_of(const PGresult *r, int row, int n)
{
    int ord = atoi(PQgetvalue(r, row, 0));
    return ord >= 1 && ord <= n ? ord - 1 : -1;
}

/* Steps 1 and 2 and 3 for jobs[0..n), n >= 2, on c (idle). Returns 0 with
 * every outcome set and the transaction open for COMMIT, or -1 (the caller
 * rolls back and sends every job the one-order way). */
static int write_batch(orders_app_t *app, PGconn *c, orders_job_t **jobs, int n, char *err,
                       size_t err_size)
{
    int rc = -1;
    int *kidx = calloc((size_t)n, sizeof(int)); /* ord in the key arrays -> job */
    int *nidx = calloc((size_t)n, sizeof(int)); /* ord among the new orders -> job */
    orders_arr_t keys = {0}, ids = {0}, users = {0}, amounts = {0}, items = {0}, eids = {0},
                 eks = {0}, pays = {0}, tps = {0}, skeys = {0}, sfps = {0}, sbodies = {0};
    PGresult *res[3] = {NULL, NULL, NULL};
    if (!kidx || !nidx) {
        snprintf(err, err_size, "out of memory");
        goto out;
    }
    /* 1. BEGIN, the locks, the records. */
    int nk = 0;
    for (int i = 0; i < n; i++)
        if (jobs[i]->key[0]) {
            orders_arr_add(&keys, jobs[i]->key);
            kidx[nk++] = i;
        }
    const char *kp[2] = {ORDERS_IDEM_SCOPE, orders_arr_end(&keys)};
    if (!kp[1]) {
        snprintf(err, err_size, "out of memory");
        goto out;
    }
    {
        const char *sqls[3] = {"BEGIN", lock_sql, lookup_sql};
        const char *const *pp[3] = {NULL, kp, kp};
        int np[3] = {0, 2, 2};
        ExecStatusType want[3] = {PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_TUPLES_OK};
        if (pipeline(c, nk ? 3 : 1, sqls, np, pp, res, want, err, err_size))
            goto out;
    }
    for (int i = 0; i < n; i++)
        jobs[i]->outcome = ORDERS_JOB_CREATED; /* until found otherwise */
    if (nk) {
        if (PQntuples(res[1]) != nk) {
            snprintf(err, err_size, "batch key locks: %d rows for %d keys", PQntuples(res[1]), nk);
            goto out;
        }
        for (int row = 0; row < nk; row++) {
            int k = ord_of(res[1], row, nk);
            if (k < 0)
                goto shape;
            if (PQgetvalue(res[1], row, 1)[0] != 't')
                jobs[kidx[k]]->outcome = ORDERS_JOB_IN_FLIGHT; /* held by another request */
        }
        for (int row = 0; row < PQntuples(res[2]); row++) {
            int k = ord_of(res[2], row, nk);
            if (k < 0)
                goto shape;
            orders_job_t *j = jobs[kidx[k]];
            if (j->outcome == ORDERS_JOB_IN_FLIGHT)
                continue;
            if (strcmp(PQgetvalue(res[2], row, 1), j->fp) != 0) {
                j->outcome = ORDERS_JOB_MISMATCH;
                continue;
            }
            j->outcome = ORDERS_JOB_REPLAY;
            j->status = (unsigned)atoi(PQgetvalue(res[2], row, 2));
            snprintf(j->content_type, sizeof(j->content_type), "%s", PQgetvalue(res[2], row, 3));
            j->body_len = (size_t)PQgetlength(res[2], row, 4);
            if (!(j->body = malloc(j->body_len + 1))) {
                snprintf(err, err_size, "out of memory");
                goto out;
            }
            memcpy(j->body, PQgetvalue(res[2], row, 4), j->body_len + 1);
        }
    }
    for (int i = 0; i < 3; i++) {
        PQclear(res[i]);
        res[i] = NULL;
    }

    /* 2. The new orders and their items. */
    int nn = 0;
    for (int i = 0; i < n; i++) {
        orders_job_t *j = jobs[i];
        if (j->outcome != ORDERS_JOB_CREATED)
            continue;
        outbox_uuid_v7(j->id);
        char amt[24];
        snprintf(amt, sizeof(amt), "%lld", j->amount);
        orders_arr_add(&ids, j->id);
        orders_arr_add(&users, j->user);
        orders_arr_add(&amounts, amt);
        orders_arr_add(&items, j->items_text);
        nidx[nn++] = i;
    }
    if (nn) {
        const char *cp[4] = {orders_arr_end(&ids), orders_arr_end(&users), orders_arr_end(&amounts),
                             orders_arr_end(&items)};
        for (int i = 0; i < 4; i++)
            if (!cp[i]) {
                snprintf(err, err_size, "out of memory");
                goto out;
            }
        const char *sqls[1] = {create_many_sql};
        const char *const *pp[1] = {cp};
        int np[1] = {4};
        ExecStatusType want[1] = {PGRES_TUPLES_OK};
        if (pipeline(c, 1, sqls, np, pp, res, want, err, err_size))
            goto out;
        if (PQntuples(res[0]) != nn) {
            snprintf(err, err_size, "batch orders: %d rows for %d orders", PQntuples(res[0]), nn);
            goto out;
        }
    }
    int nev = 0, nstore = 0, hint = 0;
    for (int row = 0; row < (nn ? PQntuples(res[0]) : 0); row++) {
        int k = ord_of(res[0], row, nn);
        if (k < 0)
            goto shape;
        orders_job_t *j = jobs[nidx[k]];
        if (PQgetisnull(res[0], row, 1)) {
            j->outcome = ORDERS_JOB_UNKNOWN_SKU;
            snprintf(j->sku, sizeof(j->sku), "%s", PQgetvalue(res[0], row, 2));
            j->nmissing = atoll(PQgetvalue(res[0], row, 3));
            continue;
        }
        char *payload = NULL;
        outbox_uuid_v7(j->event_id);
        if (orders_created_texts(j->id, j->user, j->amount, j->items_text,
                                 PQgetvalue(res[0], row, 1), j->event_id, &payload,
                                 &j->body) != 0) {
            free(payload);
            snprintf(err, err_size, "out of memory");
            goto out;
        }
        j->body_len = strlen(j->body);
        orders_arr_add(&eids, j->event_id);
        orders_arr_add(&eks, j->id);
        orders_arr_add(&pays, payload);
        orders_arr_add(&tps, j->tp);
        free(payload);
        nev++;
        if (j->key[0]) {
            orders_arr_add(&skeys, j->key);
            orders_arr_add(&sfps, j->fp);
            orders_arr_add(&sbodies, j->body);
            nstore++;
        }
    }
    PQclear(res[0]);
    res[0] = NULL;

    /* 3. The events and the key records (COMMIT: the caller). */
    if (nev) {
        hint = outbox_kit_enqueue_hint(); /* as outbox_enqueue would send it (OUTBOX_NOTIFY) */
        char ret[24];
        snprintf(ret, sizeof(ret), "%lld", (long long)app->idem_retention_ms);
        const char *ep[4] = {orders_arr_end(&eids), orders_arr_end(&eks), orders_arr_end(&pays),
                             orders_arr_end(&tps)};
        const char *sp[5] = {ORDERS_IDEM_SCOPE, orders_arr_end(&skeys), orders_arr_end(&sfps),
                             orders_arr_end(&sbodies), ret};
        for (int i = 0; i < 5; i++)
            if ((i < 4 && !ep[i]) || !sp[i]) {
                snprintf(err, err_size, "out of memory");
                goto out;
            }
        const char *sqls[2] = {hint ? events_hint_sql : events_sql, store_many_sql};
        const char *const *pp[2] = {ep, sp};
        int np[2] = {4, 5};
        ExecStatusType want[2] = {hint ? PGRES_TUPLES_OK : PGRES_COMMAND_OK, PGRES_TUPLES_OK};
        if (pipeline(c, nstore ? 2 : 1, sqls, np, pp, res, want, err, err_size))
            goto out;
        if (nstore && PQntuples(res[1]) != nstore) {
            /* A key recorded without its lock: the one-order way says so. */
            snprintf(err, err_size, "batch key records: %d of %d written", PQntuples(res[1]),
                     nstore);
            goto out;
        }
    }
    rc = 0;
    goto out;
shape:
    snprintf(err, err_size, "batch: a row for no order of the batch");
out:
    for (int i = 0; i < 3; i++)
        PQclear(res[i]);
    orders_arr_t *all[] = {&keys, &ids,  &users, &amounts, &items, &eids,
                           &eks,  &pays, &tps,   &skeys,   &sfps,  &sbodies};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        free(all[i]->p);
    free(kidx);
    free(nidx);
    return rc;
}

/* Every job of a batch that cannot be written together goes alone. */
static void all_alone(orders_job_t **jobs, int n)
{
    for (int i = 0; i < n; i++) {
        orders_job_t *j = jobs[i];
        free(j->body);
        j->body = NULL;
        j->body_len = 0;
        j->outcome = ORDERS_JOB_ALONE;
    }
}

/* The connection broke before COMMIT: nothing was written, and the
 * database is what failed, so every order says so (503), as one alone
 * would. */
static void all_down(orders_job_t **jobs, int n, const char *err)
{
    all_alone(jobs, n);
    for (int i = 0; i < n; i++) {
        jobs[i]->outcome = ORDERS_JOB_DB_DOWN;
        snprintf(jobs[i]->err, sizeof(jobs[i]->err), "%s", err);
    }
}

static void run_batch(orders_app_t *app, orders_job_t **jobs, int n)
{
    char err[512];
    PGconn *c = outbox__dbpool_get(app->pool, 5000, err, sizeof(err));
    if (!c) {
        all_down(jobs, n, err);
        return;
    }
    if (orders_prepare_session(c, err, sizeof(err)) ||
        write_batch(app, c, jobs, n, err, sizeof(err))) {
        if (PQstatus(c) != CONNECTION_OK) {
            all_down(jobs, n, err);
            outbox__dbpool_put(app->pool, c);
            return;
        }
        outbox__log(OUTBOX_LOG_WARN, "orders", "batch_failed",
                    "a batch of orders could not be written together: each goes alone", "error",
                    err, NULL);
        orders_forget_session(c); /* prepared again at its next use */
        all_alone(jobs, n);
        outbox__dbpool_put(app->pool, c); /* rolls back */
        return;
    }
    switch (outbox_kit_db_commit(c, err, sizeof(err))) {
    case OUTBOX_KIT_COMMITTED:
        break;
    case OUTBOX_KIT_ROLLED_BACK: /* the server said so: nothing was written */
        outbox__log(OUTBOX_LOG_WARN, "orders", "batch_failed",
                    "a batch of orders was rolled back at COMMIT: each goes alone", "error", err,
                    NULL);
        all_alone(jobs, n);
        break;
    case OUTBOX_KIT_COMMIT_UNKNOWN:
        for (int i = 0; i < n; i++)
            if (jobs[i]->outcome == ORDERS_JOB_CREATED) {
                jobs[i]->outcome = ORDERS_JOB_COMMIT_UNKNOWN;
                snprintf(jobs[i]->err, sizeof(jobs[i]->err), "%s", err);
            }
        break;
    }
    outbox__dbpool_put(app->pool, c);
}

/* Takes the waiting orders after `first` into jobs (at most max in all),
 * none with a key already in the batch. Caller holds g.lock. */
static int take(orders_job_t *first, orders_job_t **jobs, int max)
{
    int n = 0;
    jobs[n++] = first;
    orders_job_t **link = &g.head, *prev = NULL;
    while (*link && n < max) {
        orders_job_t *j = *link;
        int dup = 0;
        for (int i = 0; i < n && j->key[0] && !dup; i++)
            dup = !strcmp(jobs[i]->key, j->key);
        if (dup) {
            prev = j;
            link = &j->next;
            continue;
        }
        *link = j->next; /* out of the queue, into the batch */
        if (g.tail == j)
            g.tail = prev;
        jobs[n++] = j;
    }
    return n;
}

static void wake(orders_job_t *j)
{
    pthread_mutex_lock(&j->mu);
    j->woken = 1;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

/* Passes the slot to the first order waiting, or frees it. */
static void release(void)
{
    pthread_mutex_lock(&g.lock);
    orders_job_t *next = g.head;
    if (next) { /* it leads the next batch, in this slot */
        g.head = next->next;
        if (!g.head)
            g.tail = NULL;
        next->lead = 1;
    } else {
        g.running--;
    }
    pthread_mutex_unlock(&g.lock);
    if (next)
        wake(next);
}

void orders_batch_release(orders_job_t *job)
{
    if (job->holds_slot) {
        job->holds_slot = 0;
        release();
    }
}

/* Leads one batch, own first, then passes the slot on. An order alone
 * goes the one-order way (cheaper for one: its statements are simpler) and
 * keeps the slot until it is done (orders_batch_release), so that orders
 * arriving meanwhile queue up for the next batch. */
static void lead(orders_app_t *app, orders_job_t *own)
{
    int max = app->order_batch;
    orders_job_t **jobs = calloc((size_t)max, sizeof(*jobs));
    pthread_mutex_lock(&g.lock);
    int n = jobs ? take(own, jobs, max) : 0;
    pthread_mutex_unlock(&g.lock);
    if (n == 1) {
        /* Alone: let the threads that are ready to run go first, once. Under
         * load they are mostly request threads about to queue an order, and
         * a batch costs the database much less per order than the one-order
         * way (measured at 32 connections, bench/orders_cpu.sh: the API's
         * sessions 120-126 -> 107-115 us an order, 5,284-5,346 -> 5,612-5,931
         * orders/s with relay and consumers). Idle, the yield returns at
         * once: no timer, no wait. */
        sched_yield();
        pthread_mutex_lock(&g.lock);
        n = take(own, jobs, max);
        pthread_mutex_unlock(&g.lock);
    }
    if (n == 1) {
        free(jobs);
        own->outcome = ORDERS_JOB_ALONE;
        own->holds_slot = 1;
        return;
    }
    if (!jobs) {
        own->outcome = ORDERS_JOB_ALONE;
    } else {
        run_batch(app, jobs, n);
        for (int i = 1; i < n; i++)
            wake(jobs[i]);
        free(jobs);
    }
    release();
}

void orders_batch_submit(orders_app_t *app, orders_job_t *job)
{
    job->outcome = ORDERS_JOB_ALONE;
    if (app->order_batch < 2 || !app->pool)
        return;
    job->next = NULL;
    job->lead = job->woken = job->holds_slot = 0;
    pthread_mutex_init(&job->mu, NULL);
    pthread_cond_init(&job->cv, NULL);
    pthread_mutex_lock(&g.lock);
    int leader = g.running < app->batch_slots;
    if (leader) {
        g.running++;
    } else {
        if (g.tail)
            g.tail->next = job;
        else
            g.head = job;
        g.tail = job;
    }
    pthread_mutex_unlock(&g.lock);
    if (!leader) {
        pthread_mutex_lock(&job->mu);
        while (!job->woken)
            pthread_cond_wait(&job->cv, &job->mu);
        pthread_mutex_unlock(&job->mu);
        leader = job->lead; /* the slot was passed to it: its order was not written yet */
    }
    if (leader)
        lead(app, job);
    pthread_cond_destroy(&job->cv);
    pthread_mutex_destroy(&job->mu);
}
