/*
 * The PostgreSQL store's ops (store/store.h): every statement the relay,
 * /metrics and outboxctl run. Statements are built once per session with the
 * configured table's quoted name (checked against [a-z0-9_] first); every
 * value is a parameter.
 *
 * Lanes are session advisory locks (lane_ns, lane); live workers hold
 * (worker_ns, backend pid). The default table keeps the namespaces of
 * earlier versions; other tables get their own, so relays of two tables in
 * one database never share lanes.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/keyset.h"
#include "core/util.h"
#include "store/pg/pg.h"

/* The columns a dead letter takes from its outbox row, in table order. */
#define DL_COLS                                                                                    \
    "seq, id, topic, type, key, payload, headers, traceparent, source, created_at, priority"

enum { Q_CLAIM, Q_CLAIM_ACK, Q_ACK, Q_RETRY, Q_DEAD, Q_PARK_DEAD, Q_NEWEST, Q__COUNT };

typedef struct pg_store_s {
    PGconn *conn;
    int lane_ns, worker_ns;
    char table[64], dead[80], channel[64];
    char *sql[Q__COUNT];
    int prepared;       /* the statements are prepared (at their first use: the
                           tables may not exist when the session opens) */
    int begin_pending;  /* BEGIN goes out with the claim, in one round trip */
    char *ack_pending;  /* the acknowledged seqs ("{1,2}"): sent with COMMIT */
    int ack_on_claim;   /* claims with Q_CLAIM_ACK */
    int claim_acked;    /* the open transaction acknowledged every claimed event */
    size_t nclaimed;    /* events of the open transaction's claim */
    size_t nacked;      /* of which the engine acknowledged (pg_ack) */
    int64_t planned_ms; /* when the claim was last prepared (generic plans: see replan_claim) */
    int claims;         /* claims since then */
} pg_store_t;

#define ST(s) ((pg_store_t *)(s)->state)

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static char *fmt(const char *f, const struct pg_store_s *p);

/* Checks r's status is want: the result goes to *out (or is cleared); on
 * another status it is cleared and errstr says what failed. */
static outbox_err_t take_result(PGconn *c, PGresult *r, ExecStatusType want, PGresult **out,
                                const char *what, char *errstr, size_t errstr_size)
{
    if (PQresultStatus(r) != want) {
        outbox_err_t err = outbox__pg_err(c, r, errstr, errstr_size, what);
        PQclear(r);
        return err;
    }
    if (out)
        *out = r;
    else
        PQclear(r);
    return OUTBOX_OK;
}

/* Runs sql (with {T} and {D} replaced by the session's table names, if it
 * names them) and checks its status is want; the result goes to *out (or is
 * cleared). */
static outbox_err_t exec_params(outbox_store_t *s, const char *sql, int n,
                                const char *const *params, ExecStatusType want, PGresult **out,
                                const char *what, char *errstr, size_t errstr_size)
{
    PGconn *c = ST(s)->conn;
    char *text = NULL; /* a statement naming {T} or {D} is completed first */
    if (strchr(sql, '{') && !(sql = text = fmt(sql, ST(s))))
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    PGresult *r = n ? PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0) : PQexec(c, sql);
    free(text);
    return take_result(c, r, want, out, what, errstr, errstr_size);
}

/* One statement of a pipeline: sql (no parameters), or prepared statement
 * q with n parameters, or (n = PREPARE) the preparing of statement q. */
#define PREPARE (-1)
typedef struct step_s {
    const char *sql;
    int q, n;
    const char *const *params;
    ExecStatusType want;
    PGresult **out; /* receives the result (else it is cleared) */
    const char *what;
} step_t;

/* Undoes an ack_on_claim claim (its deletes or marks) and opens the
 * transaction again: the first steps of whatever follows it. The events'
 * lanes stay this worker's, so no other relay claims them in between. */
#define UNDO_STEPS                                                                                 \
    {"ROLLBACK", 0, 0, NULL, PGRES_COMMAND_OK, NULL, "undoing the claim's acknowledgement"},       \
    {                                                                                              \
        "BEGIN", 0, 0, NULL, PGRES_COMMAND_OK, NULL, "begin"                                       \
    }

/* Runs steps[0..n) in one round trip (libpq pipeline mode). The first step
 * that fails names the error; the rest are aborted by the server. */
static outbox_err_t pipeline(outbox_store_t *s, const step_t *steps, int n, char *errstr,
                             size_t errstr_size)
{
    PGconn *c = ST(s)->conn;
    if (!PQenterPipelineMode(c))
        return outbox__pg_err(c, NULL, errstr, errstr_size, "entering pipeline mode");
    for (int i = 0; i < n; i++) {
        char name[16];
        snprintf(name, sizeof(name), "outbox_q%d", steps[i].q);
        int sent = steps[i].n == PREPARE ? PQsendPrepare(c, name, ST(s)->sql[steps[i].q], 0, NULL)
                   : steps[i].sql
                       ? PQsendQueryParams(c, steps[i].sql, 0, NULL, NULL, NULL, NULL, 0)
                       : PQsendQueryPrepared(c, name, steps[i].n, steps[i].params, NULL, NULL, 0);
        if (!sent)
            return outbox__pg_err(c, NULL, errstr, errstr_size, steps[i].what);
    }
    if (!PQpipelineSync(c))
        return outbox__pg_err(c, NULL, errstr, errstr_size, "sending a pipeline");
    outbox_err_t err = OUTBOX_OK;
    for (int i = 0; i < n; i++) {
        PGresult *r = PQgetResult(c);
        if (!r)
            return err ? err : outbox__pg_err(c, NULL, errstr, errstr_size, steps[i].what);
        if (PQresultStatus(r) != steps[i].want) {
            if (!err)
                err = outbox__pg_err(c, r, errstr, errstr_size, steps[i].what);
            PQclear(r);
        } else if (steps[i].out) {
            *steps[i].out = r;
        } else {
            PQclear(r);
        }
        while ((r = PQgetResult(c)) != NULL) /* the end of this statement's results */
            PQclear(r);
    }
    PGresult *sync = PQgetResult(c);
    int synced = sync && PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
    PQclear(sync);
    if (!synced || !PQexitPipelineMode(c)) {
        for (int i = 0; i < n; i++)
            if (steps[i].out && *steps[i].out) {
                PQclear(*steps[i].out);
                *steps[i].out = NULL;
            }
        return err ? err : outbox__pg_err(c, NULL, errstr, errstr_size, "ending a pipeline");
    }
    return err;
}

/* Prepares the relay's statements once per session, in one round trip
 * (a pipeline): a relay starting 3 workers and a watcher at once waited
 * for 7 round trips each before its first claim. */
static outbox_err_t ensure_prepared(outbox_store_t *s, char *errstr, size_t errstr_size)
{
    pg_store_t *p = ST(s);
    if (p->prepared)
        return OUTBOX_OK;
    step_t steps[Q__COUNT];
    for (int q = 0; q < Q__COUNT; q++)
        steps[q] = (step_t){
            NULL, q, PREPARE, NULL, PGRES_COMMAND_OK, NULL, "preparing the relay's statements"};
    outbox_err_t err = pipeline(s, steps, Q__COUNT, errstr, errstr_size);
    if (err)
        return err;
    p->prepared = 1;
    p->planned_ms = outbox__now_ms();
    return OUTBOX_OK;
}

/* Runs steps in one pipeline, the relay's statements prepared first. */
static outbox_err_t run_steps(outbox_store_t *s, const step_t *steps, int n, char *errstr,
                              size_t errstr_size)
{
    outbox_err_t err = ensure_prepared(s, errstr, errstr_size);
    return err ? err : pipeline(s, steps, n, errstr, errstr_size);
}

/* "{1,2,3}" for a bigint[] / smallint[] parameter. Caller frees. Digits
 * are written by hand: this runs for every acknowledged batch. */
static char *int_array(const int64_t *v64, const int *v32, size_t n)
{
    outbox__buf_t b = {0};
    char *out = outbox__buf_reserve(&b, n * 21 + 2);
    if (!out)
        return NULL;
    char *p = out;
    *p++ = '{';
    for (size_t i = 0; i < n; i++) {
        long long v = v64 ? (long long)v64[i] : (long long)v32[i];
        unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
        char digits[20];
        int k = 0;
        do
            digits[k++] = (char)('0' + u % 10);
        while ((u /= 10) != 0);
        if (i)
            *p++ = ',';
        if (v < 0)
            *p++ = '-';
        while (k)
            *p++ = digits[--k];
    }
    *p++ = '}';
    *p = '\0';
    return b.p;
}

/* f with {T} replaced by the quoted table name and {D} by its dead-letter
 * table's. Caller frees; NULL on ENOMEM. */
static char *fmt(const char *f, const pg_store_t *p)
{
    outbox__buf_t b = {0};
    while (*f) {
        const char *t = strchr(f, '{');
        if (t && (t[1] == 'T' || t[1] == 'D') && t[2] == '}') {
            outbox__buf_add(&b, f, (size_t)(t - f));
            const char *name = t[1] == 'T' ? p->table : p->dead;
            outbox__buf_add(&b, name, strlen(name));
            f = t + 3;
        } else {
            size_t n = t ? (size_t)(t - f) + 1 : strlen(f);
            outbox__buf_add(&b, f, n);
            f += n;
        }
    }
    if (!b.p)
        outbox__buf_add(&b, "", 0);
    if (b.broken || !b.p) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

/* ------------------------------------------------------------------------ */
/* Session                                                                   */

static int pg_handles(const char *url)
{
    return strncmp(url, "mem:", 4) && strncmp(url, "sqlite:", 7);
}

/* The claim's candidates, $1 lanes, $2 limit: priority heads first (hi),
 * then seq order (lo), each row locked; cols are the columns each part
 * selects from o. A key's event qualifies only when no earlier event of the
 * key is pending and not yet due (lo) or pending at all (hi), and the key
 * has no dead letter (parked).
 *
 * lo's check is against w, the keys with an event waiting for its retry,
 * read once per claim from the due-time index (usually none), not probed
 * per candidate row: the claim is planned once per session (generic plan),
 * and planned on a nearly empty table the probe became a full scan of an
 * index per row; under the order load (measured with auto_explain) 71 rows
 * took 62 ms, 148 pages each, most of them dead entries. */
/* The key has no dead letter. Asked once per claim first (an InitPlan):
 * with no dead letter at all, the usual case, no candidate row probes the
 * dead-letter index (2 of the 8 buffer reads per claimed row, measured). */
#define NOT_PARKED                                                                                 \
    "(NOT EXISTS (SELECT 1 FROM {D}) OR NOT EXISTS (SELECT 1 FROM {D} d WHERE d.key = o.key))"
/* A one-time gate of the claim's rarely needed part, events with a priority
 * (hi): one probe of its partial index (pending_priority, empty unless some
 * pending event has a priority), and when it finds nothing hi's scan does not
 * run. Without it, planned on the small table a steady load leaves (few live
 * rows, many dead index entries until vacuum), hi walked the whole
 * pending_seq index on every claim, half a claim's buffers (orders-service
 * at 32 connections: 437 of 868 in one EXPLAIN; 7 with the gate). The same
 * gate on w (keys waiting for a retry) was no use: under load a few pending
 * rows are always "not due" by microseconds (their transaction began after
 * the claim's), and max(next_attempt_at) was planned as a walk of
 * pending_seq as well. */
#define SOME_PRIORITY                                                                              \
    "(SELECT EXISTS (SELECT 1 FROM {T} x WHERE x.status = 'pending' AND x.priority > 0))"
#define CLAIM_CTES(cols, lock)                                                                     \
    "WITH w AS MATERIALIZED ("                                                                     \
    "  SELECT key, min(seq) AS seq FROM {T}"                                                       \
    "   WHERE status = 'pending' AND next_attempt_at > now() GROUP BY key),"                       \
    " hi AS ("                                                                                     \
    "  SELECT " cols " FROM {T} o"                                                                 \
    "   WHERE " SOME_PRIORITY " AND o.lane = ANY($1::smallint[]) AND o.status = 'pending'"         \
    "     AND o.priority > 0"                                                                      \
    "     AND o.next_attempt_at <= now()"                                                          \
    "     AND NOT EXISTS (SELECT 1 FROM {T} p WHERE p.key = o.key AND p.seq < o.seq"               \
    "                      AND p.status = 'pending')"                                              \
    "     AND " NOT_PARKED "   ORDER BY o.priority DESC, o.seq LIMIT $2::int" lock "),"            \
    " lo AS ("                                                                                     \
    "  SELECT " cols " FROM {T} o"                                                                 \
    "   WHERE o.lane = ANY($1::smallint[]) AND o.status = 'pending'"                               \
    "     AND o.next_attempt_at <= now()"                                                          \
    "     AND NOT EXISTS (SELECT 1 FROM w WHERE w.key = o.key AND w.seq < o.seq)"                  \
    "     AND " NOT_PARKED "     AND o.seq NOT IN (SELECT seq FROM hi)"                            \
    "   ORDER BY o.seq LIMIT $2::int - (SELECT count(*) FROM hi)" lock ")"
/* Q_CLAIM holds its rows until the acknowledgement, a second statement:
 * locked, and skipped by any other session that locks rows to claim them.
 * Q_CLAIM_ACK takes no row lock before its DELETE or UPDATE, which locks
 * each row it changes anyway: a lane is claimed by one session at a time
 * (its advisory lock), so no other claim reads the same rows, and a row
 * another transaction changes meanwhile (worker-1 parking a key, outboxctl)
 * is waited for, then left out if it no longer qualifies (READ COMMITTED
 * rechecks it: its ctid is new or it is gone). The lock step wrote a WAL
 * record and dirtied the page once more per row: measured 22.4 -> 18.7 ms
 * for a 2,000-event claim (pgbench, 3 alternations). And where SKIP LOCKED
 * skipped a key's oldest event that another session merely held locked and
 * took the key's later ones, this waits (tests/relay/test_foreign_lock.c). */
#define CLAIM_LOCK " FOR UPDATE OF o SKIP LOCKED"
/* What the relay reads of a claimed event (pg_claim's column order). */
#define CLAIM_COLS                                                                                 \
    "o.seq, o.id, o.topic, o.type, o.key, o.source, o.payload, o.headers, o.traceparent,"          \
    " o.created_at AS t,"                                                                          \
    " o.attempts, o.priority"
/* Q_CLAIM_ACK (ack_on_claim): the claim that acknowledges in the same
 * statement, by the claimed rows' ctid (no second lookup): DELETE or UPDATE,
 * then this RETURNING. pg_commit undoes it for the events not published. */
#define CLAIM_ACK_HEAD                                                                             \
    CLAIM_CTES("o.ctid AS tid, o.seq, o.priority", "")                                             \
    ", c AS (SELECT tid, seq, priority, 0 AS part FROM hi"                                         \
    "        UNION ALL SELECT tid, seq, priority, 1 FROM lo) "
#define CLAIM_ACK_RETURNING " WHERE o.ctid = c.tid RETURNING " CLAIM_COLS ", c.part"

static const char *const sql_text[Q__COUNT] = {
    /* Q_CLAIM: $1 lanes, $2 limit. The locked rows' columns come straight
     * out of the two scans (no second lookup by seq). */
    CLAIM_CTES(CLAIM_COLS, CLAIM_LOCK) " SELECT *, 0 AS part FROM hi UNION ALL SELECT *, 1 FROM lo",
    /* Q_CLAIM_ACK: chosen at open with the ack mode. */
    NULL,
    /* Q_ACK: $1 seqs; the mark variant is chosen at open. */
    NULL,
    /* Q_RETRY: $1 seq, $2 delay ms, $3 error. Counted from this statement,
     * not the transaction's start: the failure is known now. Keeps the last
     * 20 errors as history. */
    "UPDATE {T} SET attempts = attempts + 1,"
    "       next_attempt_at = statement_timestamp() + $2::bigint * interval '1 millisecond',"
    "       last_error = $3,"
    "       errors = (CASE WHEN jsonb_array_length(errors) >= 20 THEN errors - 0 ELSE errors END)"
    "                || jsonb_build_array(jsonb_build_object('at', statement_timestamp(),"
    "                                     'attempt', attempts + 1, 'error', $3::text))"
    " WHERE seq = $1::bigint",
    /* Q_DEAD: $1 seq, $2 reason, $3 error. */
    "WITH dead AS (DELETE FROM {T} WHERE seq = $1::bigint RETURNING *)"
    " INSERT INTO {D} (" DL_COLS ", attempts, last_error, errors, reason)"
    " SELECT " DL_COLS ", attempts + 1, $3, errors || jsonb_build_array(jsonb_build_object("
    "        'at', statement_timestamp(), 'attempt', attempts + 1, 'error', $3::text)), $2"
    "   FROM dead",
    /* Q_PARK_DEAD: the same, and every later pending event of its key. */
    "WITH dead AS ("
    "  DELETE FROM {T} o USING {T} e"
    "   WHERE e.seq = $1::bigint AND o.key = e.key AND o.seq >= e.seq AND o.status = 'pending'"
    "  RETURNING o.*)"
    " INSERT INTO {D} (" DL_COLS ", attempts, last_error, errors, reason)"
    " SELECT " DL_COLS ","
    "        CASE WHEN seq = $1::bigint THEN attempts + 1 ELSE attempts END,"
    "        CASE WHEN seq = $1::bigint THEN $3 ELSE last_error END,"
    "        CASE WHEN seq = $1::bigint THEN errors || jsonb_build_array(jsonb_build_object("
    "             'at', statement_timestamp(), 'attempt', attempts + 1, 'error', $3::text)) ELSE "
    "errors END,"
    "        CASE WHEN seq = $1::bigint THEN $2 ELSE 'parked' END"
    "   FROM dead",
    /* Q_NEWEST: the watcher's probe, $1 the gate. A backward walk of the
     * pending-seq index (the newest events), no lock: lanes as a bit mask,
     * the highest seq, and the table's sequence. The walk runs only when the
     * sequence is past $1 (a one-time filter): an idle look reads one
     * sequence, not an index that may be full of dead entries until vacuum. */
    "SELECT coalesce(bit_or(1::bigint << lane), 0), coalesce(max(seq), 0),"
    "       (SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('{T}', 'seq')), 0))"
    "  FROM (SELECT lane, seq FROM {T}"
    "         WHERE (SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('{T}', 'seq')),"
    "                                0)) > $1::bigint"
    "           AND status = 'pending' AND next_attempt_at <= now()"
    "         ORDER BY seq DESC LIMIT 64) n",
};

static void quiet_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static outbox_err_t pg_open(outbox_store_t *s, char *errstr, size_t errstr_size)
{
    pg_store_t *p = calloc(1, sizeof(*p));
    if (!p)
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    s->state = p;
    p->ack_on_claim = s->cfg.ack_on_claim;
    const char *t = s->cfg.table;
    snprintf(p->table, sizeof(p->table), "\"%s\"", t);
    snprintf(p->dead, sizeof(p->dead), "\"%s_dead_letter\"", t);
    snprintf(p->channel, sizeof(p->channel), "%s_wakeup", t);
    if (!strcmp(t, "outbox")) {
        p->lane_ns = OUTBOX_LOCK_NS_LANE;
        p->worker_ns = OUTBOX_LOCK_NS_WORKER;
    } else {
        /* Re-hash until neither namespace is one of the default table's. */
        uint64_t h = outbox__keyset_hash(t);
        do {
            p->lane_ns = (int)(((uint32_t)h & 0x3ffffffeu) | 0x40000000u);
            p->worker_ns = p->lane_ns | 1;
            h = h * 1099511628211ULL + 1;
        } while (p->lane_ns == OUTBOX_LOCK_NS_LANE || p->lane_ns == OUTBOX_LOCK_NS_WORKER ||
                 p->worker_ns == OUTBOX_LOCK_NS_LANE || p->worker_ns == OUTBOX_LOCK_NS_WORKER);
    }
    for (int q = 0; q < Q__COUNT; q++) {
        const char *text = sql_text[q];
        int mark = s->cfg.ack_mode == OUTBOX_ACK_MARK;
        if (q == Q_ACK)
            text = mark
                       ? "UPDATE {T} SET status = 'processed', processed_at = statement_timestamp()"
                         " WHERE seq = ANY($1::bigint[])"
                       : "DELETE FROM {T} WHERE seq = ANY($1::bigint[])";
        else if (q == Q_CLAIM_ACK)
            text = mark ? CLAIM_ACK_HEAD
                       "UPDATE {T} o SET status = 'processed',"
                       " processed_at = statement_timestamp() FROM c" CLAIM_ACK_RETURNING
                        : CLAIM_ACK_HEAD "DELETE FROM {T} o USING c" CLAIM_ACK_RETURNING;
        if (!(p->sql[q] = fmt(text, p)))
            goto nomem;
    }
    p->conn = outbox__pg_connect(s->cfg.url, s->cfg.appname, errstr, errstr_size);
    if (!p->conn)
        goto fail;
    PQsetNoticeProcessor(p->conn, quiet_notice, NULL);
    /* The session's settings, sent as one string: one round trip at every
     * start of every worker (each was one before, then the timeouts one). */
    char set[640];
    size_t n = 0;
    /* A transaction left open by a stalled worker (or a statement that
     * hangs) ends after publish_timeout: its claim goes back to the
     * queue. An integer of ours: nothing to quote. */
    if (s->cfg.tx_timeout_ms > 0)
        n += (size_t)snprintf(set + n, sizeof(set) - n,
                              "SET idle_in_transaction_session_timeout = %lld;"
                              " SET statement_timeout = %lld; ",
                              (long long)s->cfg.tx_timeout_ms, (long long)s->cfg.tx_timeout_ms);
    /* The claim reads created_at as text (rfc3339_utc): in UTC, ISO form.
     * And no JIT: compiled again at every execution, it cost a 2,000-event
     * claim 50 ms for a statement that runs in 10 (measured: a plan whose
     * estimate crossed jit_above_cost, 60 ms against 12 ms with jit off). */
    n += (size_t)snprintf(set + n, sizeof(set) - n,
                          "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET jit = off;");
    /* Acknowledgements need not wait for the WAL flush: one lost in a server
     * crash leaves its event pending, published again (at least once). */
    if (s->cfg.async_commit)
        n += (size_t)snprintf(set + n, sizeof(set) - n, " SET synchronous_commit = off;");
    /* The watcher runs one small statement many times a second: plan it
     * once. A custom plan per execution looks at the index ends
     * (get_actual_variable_range), which after a large drain walks every
     * dead entry until vacuum: measured 2 ms of planning for a 0.2 ms look. */
    if (s->cfg.generic_plans)
        n += (size_t)snprintf(set + n, sizeof(set) - n,
                              " SET plan_cache_mode = force_generic_plan;");
    /* Planned on a nearly empty table, the claim preferred a bitmap scan of
     * the due-time index: under a steady load (measured: 14,000 dead
     * entries between autovacuums) every claim then visited every dead
     * row's heap page, 2-15 ms for 3 events, and a bitmap scan never marks
     * an index entry dead. A plain index scan marks them (kill_prior_tuple),
     * so the next claim steps over them in the index alone. Measured with
     * orders-service at 32 connections: 0.45 -> 0.57 of the write path's
     * ceiling.
     * And no sequential scan where an index serves: planned on an empty
     * table, reading w (the keys waiting for a retry) by a scan of the whole
     * table looked as cheap as the due-time index; with a backlog of a
     * million it would read every row on every claim. */
    if (s->cfg.claims)
        n += (size_t)snprintf(set + n, sizeof(set) - n,
                              " SET enable_bitmapscan = off; SET enable_seqscan = off;");
    /* LISTEN takes no parameter: the channel is the table name, checked
     * against [a-z0-9_] by outbox__store_open, plus "_wakeup". */
    if (s->cfg.listen)
        n += (size_t)snprintf(set + n, sizeof(set) - n, " LISTEN \"%s\";", p->channel);
    if (n >= sizeof(set))
        goto nomem;
    if (outbox__pg_exec(p->conn, set, errstr, errstr_size))
        goto fail;
    return OUTBOX_OK;
nomem:
    outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
fail:
    s->ops->close(s);
    return OUTBOX_ERR_DB;
}

static void pg_close(outbox_store_t *s)
{
    pg_store_t *p = ST(s);
    if (!p)
        return;
    if (p->conn)
        PQfinish(p->conn); /* ends the session: its lanes are released */
    free(p->ack_pending);
    for (int q = 0; q < Q__COUNT; q++)
        free(p->sql[q]);
    free(p);
    s->state = NULL;
}

static outbox_err_t pg_migrate(outbox_store_t *s, int *applied, char *errstr, size_t errstr_size)
{
    return outbox_migrate_table(ST(s)->conn, s->cfg.table, applied, errstr, errstr_size);
}

/* ------------------------------------------------------------------------ */
/* Batches                                                                   */

static outbox_err_t pg_begin(outbox_store_t *s, char *errstr, size_t errstr_size)
{
    ST(s)->begin_pending = 1; /* sent with the claim */
    return OUTBOX_OK;
}

static outbox_err_t pg_commit(outbox_store_t *s, char *errstr, size_t errstr_size)
{
    pg_store_t *p = ST(s);
    PGconn *c = p->conn;
    if (p->begin_pending) { /* nothing was claimed: no transaction to end */
        p->begin_pending = 0;
        return OUTBOX_OK;
    }
    const char *params[1] = {p->ack_pending};
    step_t steps[4] = {
        UNDO_STEPS,
        {NULL, Q_ACK, 1, params, PGRES_COMMAND_OK, NULL, "acknowledge failed"},
        {"COMMIT", 0, 0, NULL, PGRES_COMMAND_OK, NULL, "commit failed (rolled back)"}};
    outbox_err_t err;
    if (p->claim_acked && p->nacked == p->nclaimed) /* all published: as claimed */
        err = run_steps(s, steps + 3, 1, errstr, errstr_size);
    else if (p->claim_acked) /* undo the claim's acknowledgement, redo the published's */
        err = p->ack_pending ? run_steps(s, steps, 4, errstr, errstr_size)
                             : run_steps(s, steps, 1, errstr, errstr_size); /* ROLLBACK */
    else
        err = p->ack_pending ? run_steps(s, steps + 2, 2, errstr, errstr_size)
                             : run_steps(s, steps + 3, 1, errstr, errstr_size);
    free(p->ack_pending);
    p->ack_pending = NULL;
    p->claim_acked = 0;
    if (err && PQstatus(c) != CONNECTION_OK)
        outbox__pg_err(c, NULL, errstr, errstr_size,
                       "connection lost during COMMIT (outcome unknown)");
    return err;
}

static void pg_rollback(outbox_store_t *s)
{
    pg_store_t *p = ST(s);
    free(p->ack_pending);
    p->ack_pending = NULL;
    p->claim_acked = 0;
    if (p->begin_pending)
        p->begin_pending = 0;
    else
        PQclear(PQexec(p->conn, "ROLLBACK"));
}

static void pg_batch_term(outbox_store_t *s, outbox_batch_t *b)
{
    (void)s;
    if (!b)
        return;
    free(b->msgs);
    PQclear(b->priv);
    memset(b, 0, sizeof(*b));
}

static outbox_err_t pg_newest_due(outbox_store_t *s, int64_t gate, uint64_t *lane_mask,
                                  int64_t *max_seq, int64_t *seq_now, char *errstr,
                                  size_t errstr_size)
{
    PGresult *r = NULL;
    char g[24];
    snprintf(g, sizeof(g), "%lld", (long long)gate);
    const char *params[1] = {g};
    step_t step = {NULL, Q_NEWEST, 1, params, PGRES_TUPLES_OK, &r, "watching for new events"};
    outbox_err_t err = run_steps(s, &step, 1, errstr, errstr_size);
    if (err)
        return err;
    *lane_mask = (uint64_t)strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    *max_seq = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    *seq_now = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
    PQclear(r);
    return OUTBOX_OK;
}

/* The claim returns its two parts without an ORDER BY (a DELETE's or
 * UPDATE's RETURNING has no order anyway, and sorting 2,000 rows in the
 * server cost more than here): puts the claimed events in the claim's
 * order (part, priority heads, seq), which the per-key rule relies on.
 * Column 12 is the part. Usually a no-op. */
typedef struct {
    int part, prio;
    int64_t seq;
    size_t i;
} claim_pos_t;

static int claim_pos_cmp(const void *a, const void *b)
{
    const claim_pos_t *x = a, *y = b;
    if (x->part != y->part)
        return x->part - y->part;
    if (x->part == 0 && x->prio != y->prio)
        return y->prio - x->prio;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int sort_claimed(outbox_batch_t *b, const PGresult *r)
{
    size_t n = b->n, sorted = 1;
    claim_pos_t *pos = calloc(n, sizeof(*pos));
    outbox_msg_t *tmp = calloc(n, sizeof(*tmp));
    if (!pos || !tmp) {
        free(pos);
        free(tmp);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        pos[i] =
            (claim_pos_t){atoi(PQgetvalue(r, (int)i, 12)), b->msgs[i].priority, b->msgs[i].seq, i};
        if (i && claim_pos_cmp(&pos[i - 1], &pos[i]) > 0)
            sorted = 0;
    }
    if (!sorted) {
        qsort(pos, n, sizeof(*pos), claim_pos_cmp);
        for (size_t i = 0; i < n; i++)
            tmp[i] = b->msgs[pos[i].i];
        memcpy(b->msgs, tmp, n * sizeof(*tmp));
    }
    free(pos);
    free(tmp);
    return 0;
}

/* created_at as the claim session prints it (TimeZone UTC, DateStyle ISO:
 * "2026-11-30 09:41:03.123456+00", no fraction when it is zero) into
 * RFC 3339 with microseconds, "2026-11-30T09:41:03.123456Z": what
 * to_char(... 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') gave, at less of the
 * server's time (measured: 42 ms vs 18 ms for 100,000 rows, most of it the
 * scan both share). A year past 9999 keeps its digits, as with to_char;
 * text of any other form is copied as it is. */
#define TIME_LEN 40
static void rfc3339_utc(const char *pg, char *out)
{
    const char *sp = strchr(pg, ' ');
    size_t date = sp ? (size_t)(sp - pg) : 0, frac = 0;
    if (sp && date >= 10 && date <= TIME_LEN - 24 && strlen(sp + 1) >= 11 && sp[3] == ':' &&
        sp[6] == ':') {
        const char *f = sp + 9;
        if (*f == '.')
            while (frac < 6 && f[1 + frac] >= '0' && f[1 + frac] <= '9')
                frac++;
        const char *zone = f + (frac ? frac + 1 : 0);
        if (!strncmp(zone, "+00", 3) && (zone[3] == 0 || zone[3] == ' ')) {
            memcpy(out, pg, date);
            out[date] = 'T';
            memcpy(out + date + 1, sp + 1, 8);
            char *o = out + date + 9;
            *o++ = '.';
            memcpy(o, f + 1, frac);
            memset(o + frac, '0', 6 - frac);
            memcpy(o + 6, "Z", 2);
            return;
        }
    }
    snprintf(out, TIME_LEN, "%s", pg);
}

/* With generic plans (force_generic_plan) the claim is planned at its first
 * execution from the table's size then, and that plan stays: one made on an
 * empty table full-scans an index where a backlog needs an index condition
 * (the waiting keys, the priority heads), so after an outage a million-row
 * backlog would be read on every claim; one made on a backlog is wrong the
 * other way. Every REPLAN_MS the claim is prepared again, so its plan
 * follows the table (one planning, 0.7 ms, a second per busy worker), once
 * it ran REPLAN_CLAIMS times since (an idle worker claims once a
 * poll_interval: a new plan each time cost 0.8 ms a second). */
#define REPLAN_MS 1000
#define REPLAN_CLAIMS 10 /* and not for an idle worker's one claim a second */
static outbox_err_t replan_claim(outbox_store_t *s, char *errstr, size_t errstr_size)
{
    pg_store_t *p = ST(s);
    int64_t now = outbox__now_ms();
    if (!s->cfg.generic_plans || !p->prepared || ++p->claims < REPLAN_CLAIMS ||
        now - p->planned_ms < REPLAN_MS)
        return OUTBOX_OK;
    p->planned_ms = now;
    p->claims = 0;
    int q = p->ack_on_claim ? Q_CLAIM_ACK : Q_CLAIM;
    char name[16], sql[48];
    snprintf(name, sizeof(name), "outbox_q%d", q);
    snprintf(sql, sizeof(sql), "DEALLOCATE %s", name);
    PGresult *r = PQexec(p->conn, sql);
    PQclear(r);
    r = PQprepare(p->conn, name, p->sql[q], 0, NULL);
    outbox_err_t err =
        PQresultStatus(r) == PGRES_COMMAND_OK
            ? OUTBOX_OK
            : outbox__pg_err(p->conn, r, errstr, errstr_size, "preparing the claim again");
    PQclear(r);
    return err;
}

static outbox_err_t pg_claim(outbox_store_t *s, const int *lanes, int nlanes, int limit,
                             outbox_batch_t *b, char *errstr, size_t errstr_size)
{
    memset(b, 0, sizeof(*b));
    if (nlanes <= 0)
        return OUTBOX_OK;
    char *arr = int_array(NULL, lanes, (size_t)nlanes), lim[16];
    if (!arr)
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    snprintf(lim, sizeof(lim), "%d", limit);
    const char *params[2] = {arr, lim};
    PGresult *r = NULL;
    pg_store_t *p = ST(s);
    step_t steps[2] = {{"BEGIN", 0, 0, NULL, PGRES_COMMAND_OK, NULL, "begin"},
                       {NULL, p->ack_on_claim ? Q_CLAIM_ACK : Q_CLAIM, 2, params, PGRES_TUPLES_OK,
                        &r, "claim failed"}};
    p->claim_acked = 0;
    p->nclaimed = p->nacked = 0;
    if (replan_claim(s, errstr, errstr_size) != OUTBOX_OK) {
        free(arr);
        return OUTBOX_ERR_DB;
    }
    int begin = ST(s)->begin_pending;
    ST(s)->begin_pending = 0;
    outbox_err_t err = run_steps(s, begin ? steps : steps + 1, begin ? 2 : 1, errstr, errstr_size);
    free(arr);
    if (err)
        return err;
    int rows = PQntuples(r);
    b->priv = r;
    p->claim_acked = p->ack_on_claim;
    p->nclaimed = (size_t)rows;
    if (!rows)
        return OUTBOX_OK;
    /* the messages, then each one's time (TIME_LEN bytes) */
    if (!(b->msgs = calloc((size_t)rows, sizeof(outbox_msg_t) + TIME_LEN))) {
        pg_batch_term(s, b);
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    }
    for (int i = 0; i < rows; i++) {
        outbox_msg_t *m = &b->msgs[i];
        m->seq = strtoll(PQgetvalue(r, i, 0), NULL, 10);
        snprintf(m->id, sizeof(m->id), "%s", PQgetvalue(r, i, 1));
        m->topic = PQgetvalue(r, i, 2);
        m->type = PQgetvalue(r, i, 3);
        m->key = PQgetvalue(r, i, 4);
        m->source = PQgetvalue(r, i, 5);
        m->payload = PQgetvalue(r, i, 6);
        m->payload_len = (size_t)PQgetlength(r, i, 6);
        m->headers = PQgetisnull(r, i, 7) ? NULL : PQgetvalue(r, i, 7);
        m->traceparent = PQgetisnull(r, i, 8) ? NULL : PQgetvalue(r, i, 8);
        char *t = (char *)(b->msgs + rows) + (size_t)i * TIME_LEN;
        rfc3339_utc(PQgetvalue(r, i, 9), t);
        m->time = t;
        m->attempts = atoi(PQgetvalue(r, i, 10));
        m->priority = atoi(PQgetvalue(r, i, 11));
    }
    b->n = (size_t)rows;
    if (sort_claimed(b, r))
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    return OUTBOX_OK;
}

static outbox_err_t pg_ack(outbox_store_t *s, const int64_t *seqs, size_t n, char *errstr,
                           size_t errstr_size)
{
    if (!n)
        return OUTBOX_OK;
    pg_store_t *p = ST(s);
    p->nacked = n;
    free(p->ack_pending);
    /* Sent with COMMIT, in one round trip: an error there rolls back both. */
    if (!(p->ack_pending = int_array(seqs, NULL, n)))
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    return OUTBOX_OK;
}

/* Runs steps[2] (after steps[0..1], UNDO_STEPS, when the claim acknowledged
 * every event: a failure is recorded on the event as it was claimed). */
static outbox_err_t run_undone(outbox_store_t *s, const step_t *steps, char *errstr,
                               size_t errstr_size)
{
    pg_store_t *p = ST(s);
    if (!p->claim_acked)
        return run_steps(s, steps + 2, 1, errstr, errstr_size);
    p->claim_acked = 0;
    return run_steps(s, steps, 3, errstr, errstr_size);
}

static outbox_err_t pg_retry_at(outbox_store_t *s, int64_t seq, int64_t delay_ms, const char *error,
                                char *errstr, size_t errstr_size)
{
    char q[24], d[24];
    snprintf(q, sizeof(q), "%lld", (long long)seq);
    snprintf(d, sizeof(d), "%lld", (long long)delay_ms);
    const char *params[3] = {q, d, error ? error : ""};
    step_t steps[3] = {
        UNDO_STEPS, {NULL, Q_RETRY, 3, params, PGRES_COMMAND_OK, NULL, "recording failed attempt"}};
    return run_undone(s, steps, errstr, errstr_size);
}

static outbox_err_t pg_dead_letter(outbox_store_t *s, int64_t seq, const char *reason,
                                   const char *error, int park, char *errstr, size_t errstr_size)
{
    char q[24];
    snprintf(q, sizeof(q), "%lld", (long long)seq);
    const char *params[3] = {q, reason, error ? error : ""};
    step_t steps[3] = {UNDO_STEPS,
                       {NULL, park ? Q_PARK_DEAD : Q_DEAD, 3, params, PGRES_COMMAND_OK, NULL,
                        "moving event to dead letters"}};
    return run_undone(s, steps, errstr, errstr_size);
}

/* ------------------------------------------------------------------------ */
/* Lanes                                                                     */

static outbox_err_t pg_register_worker(outbox_store_t *s, char *errstr, size_t errstr_size)
{
    char ns[16];
    snprintf(ns, sizeof(ns), "%d", ST(s)->worker_ns);
    const char *params[1] = {ns};
    return exec_params(s, "SELECT pg_advisory_lock($1::int, pg_backend_pid())", 1, params,
                       PGRES_TUPLES_OK, NULL, "registering worker", errstr, errstr_size);
}

#define THIS_DB "(SELECT oid FROM pg_database WHERE datname = current_database())"

static outbox_err_t pg_live_workers(outbox_store_t *s, int *n, char *errstr, size_t errstr_size)
{
    char ns[16];
    snprintf(ns, sizeof(ns), "%d", ST(s)->worker_ns);
    const char *params[1] = {ns};
    PGresult *r = NULL;
    outbox_err_t err =
        exec_params(s,
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                    " AND granted AND classid = $1::int AND objsubid = 2"
                    " AND database = " THIS_DB,
                    1, params, PGRES_TUPLES_OK, &r, "counting live workers", errstr, errstr_size);
    if (!err) {
        *n = atoi(PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    return err;
}

/* The free lanes in the order to try them, each tried with
 * pg_try_advisory_lock until `want` are taken: the lock test stays outside
 * the ordered list (a MATERIALIZED CTE: pushed into a subquery, below its
 * sort, it took every free lane), so it runs row by row in that order and
 * LIMIT stops it. A lane taken since the listing is passed over. */
static outbox_err_t pg_take_lanes(outbox_store_t *s, int offset, int want, int *lanes, int *n,
                                  char *errstr, size_t errstr_size)
{
    char off[16], ns[16], lanes_n[16], want_s[16];
    snprintf(off, sizeof(off), "%d", offset);
    snprintf(ns, sizeof(ns), "%d", ST(s)->lane_ns);
    snprintf(lanes_n, sizeof(lanes_n), "%d", OUTBOX_LANES);
    snprintf(want_s, sizeof(want_s), "%d", want);
    const char *params[4] = {off, ns, lanes_n, want_s};
    PGresult *r = NULL;
    *n = 0;
    outbox_err_t err =
        exec_params(s,
                    "WITH f AS MATERIALIZED ("
                    "  SELECT l FROM generate_series(0, $3::int - 1) AS l"
                    "   WHERE l NOT IN (SELECT objid::int FROM pg_locks"
                    "                    WHERE locktype = 'advisory' AND classid = $2::int"
                    "                      AND objsubid = 2 AND granted AND database = " THIS_DB ")"
                    "   ORDER BY (l - $1::int + $3::int) % $3::int)"
                    " SELECT l FROM f WHERE pg_try_advisory_lock($2::int, l) LIMIT $4::int",
                    4, params, PGRES_TUPLES_OK, &r, "taking lanes", errstr, errstr_size);
    if (err)
        return err;
    for (int i = 0; i < PQntuples(r) && i < OUTBOX_LANES; i++)
        lanes[(*n)++] = atoi(PQgetvalue(r, i, 0));
    PQclear(r);
    return OUTBOX_OK;
}

static outbox_err_t pg_release_lane(outbox_store_t *s, int lane, char *errstr, size_t errstr_size)
{
    char ns[16], ln[16];
    snprintf(ns, sizeof(ns), "%d", ST(s)->lane_ns);
    snprintf(ln, sizeof(ln), "%d", lane);
    const char *params[2] = {ns, ln};
    return exec_params(s, "SELECT pg_advisory_unlock($1::int, $2::int)", 2, params, PGRES_TUPLES_OK,
                       NULL, "releasing a lane", errstr, errstr_size);
}

static void pg_wait_for_work(outbox_store_t *s, int stop_fd, int64_t timeout_ms)
{
    PGconn *c = ST(s)->conn;
    /* A hint that came while the session was in a transaction is delivered
     * with its end, before the COMMIT's reply: libpq has read it into its
     * queue already and the socket says nothing more. Waiting on the socket
     * then slept the whole timeout with work in hand (bench_wakeup: one
     * event in 50 waited 1,004 ms). Taken first; it ends the wait. */
    if (s->cfg.listen) {
        int pending = 0;
        for (PGnotify *n; (n = PQnotifies(c)) != NULL; pending = 1)
            PQfreemem(n);
        if (pending)
            return;
    }
    struct pollfd fds[2];
    nfds_t nfds = 0;
    fds[nfds++] = (struct pollfd){.fd = stop_fd, .events = POLLIN};
    if (s->cfg.listen && PQsocket(c) >= 0)
        fds[nfds++] = (struct pollfd){.fd = PQsocket(c), .events = POLLIN};
    if (timeout_ms > 60000)
        timeout_ms = 60000;
    int rc = poll(fds, nfds, (int)timeout_ms);
    if (rc > 0 && nfds > 1 && (fds[1].revents & (POLLIN | POLLERR | POLLHUP))) {
        if (!PQconsumeInput(c))
            return; /* broken: the next op notices */
        PGnotify *n;
        while ((n = PQnotifies(c)) != NULL)
            PQfreemem(n);
    }
}

/* ------------------------------------------------------------------------ */
/* Maintenance and status                                                    */

static outbox_err_t count_cmd(outbox_store_t *s, const char *sql, int n, const char *const *params,
                              long long *out, const char *what, char *errstr, size_t errstr_size)
{
    PGresult *r = NULL;
    outbox_err_t err =
        exec_params(s, sql, n, params, PGRES_COMMAND_OK, &r, what, errstr, errstr_size);
    if (!err) {
        *out = atoll(PQcmdTuples(r));
        PQclear(r);
    }
    return err;
}

static outbox_err_t pg_maintain(outbox_store_t *s, const outbox_maint_t *in,
                                outbox_maint_result_t *out, char *errstr, size_t errstr_size)
{
    memset(out, 0, sizeof(*out));
    char a[24], b[24], c[24];
    snprintf(a, sizeof(a), "%lld", (long long)in->dlq_retention_ms);
    snprintf(b, sizeof(b), "%lld", (long long)in->inbox_retention_ms);
    snprintf(c, sizeof(c), "%lld", (long long)in->processed_retention_ms);
    const char *pa[1] = {a}, *pb[1] = {b}, *pc[1] = {c};
    outbox_err_t err = OUTBOX_OK;
    if (in->dlq_retention_ms > 0)
        err = count_cmd(
            s, "DELETE FROM {D} WHERE dead_at < now() - $1::bigint * interval '1 millisecond'", 1,
            pa, &out->dead_purged, "purging dead letters", errstr, errstr_size);
    if (!err && in->inbox_retention_ms > 0)
        err = count_cmd(s,
                        "DELETE FROM outbox_inbox WHERE processed_at < now() - $1::bigint * "
                        "interval '1 millisecond'",
                        1, pb, &out->inbox_purged, "purging inbox records", errstr, errstr_size);
    if (!err && in->processed_retention_ms > 0)
        err = count_cmd(s,
                        "DELETE FROM {T} WHERE status = 'processed'"
                        " AND processed_at < now() - $1::bigint * interval '1 millisecond'",
                        1, pc, &out->processed_purged, "purging processed events", errstr,
                        errstr_size);
    /* Park: events that arrived after their key was dead-lettered follow it. */
    if (!err && in->park)
        err = count_cmd(s,
                        "WITH moved AS (DELETE FROM {T} o WHERE o.status = 'pending' AND EXISTS"
                        "   (SELECT 1 FROM {D} d WHERE d.key = o.key) RETURNING o.*)"
                        " INSERT INTO {D} (" DL_COLS ", attempts, last_error, errors, reason)"
                        " SELECT " DL_COLS ", attempts, last_error, errors, 'parked' FROM moved",
                        0, NULL, &out->parked, "parking events of dead-lettered keys", errstr,
                        errstr_size);
    return err;
}

/* VACUUM outside any transaction (worker-1, between batches). SKIP_LOCKED:
 * when another relay's or autovacuum's vacuum of the table runs, this one
 * returns at once instead of waiting for it. */
static outbox_err_t pg_vacuum(outbox_store_t *s, char *errstr, size_t errstr_size)
{
    PGresult *r = NULL;
    outbox_err_t err = exec_params(s, "VACUUM (SKIP_LOCKED) {T}", 0, NULL, PGRES_COMMAND_OK, &r,
                                   "vacuum of the outbox table", errstr, errstr_size);
    PQclear(r);
    return err;
}

static outbox_err_t pg_stats(outbox_store_t *s, outbox_store_stats_t *out, char *errstr,
                             size_t errstr_size)
{
    PGresult *r = NULL;
    outbox_err_t err =
        exec_params(s,
                    "SELECT count(*) FILTER (WHERE status = 'pending'),"
                    " count(*) FILTER (WHERE status = 'pending' AND attempts > 0),"
                    " (SELECT count(*) FROM {D}),"
                    " count(*) FILTER (WHERE status = 'processed'),"
                    " COALESCE(extract(epoch FROM now() - min(created_at) FILTER (WHERE status = "
                    "'pending')), 0)"
                    " FROM {T}",
                    0, NULL, PGRES_TUPLES_OK, &r, "status query failed", errstr, errstr_size);
    if (err)
        return err;
    out->pending = atoll(PQgetvalue(r, 0, 0));
    out->retrying = atoll(PQgetvalue(r, 0, 1));
    out->dead = atoll(PQgetvalue(r, 0, 2));
    out->processed = atoll(PQgetvalue(r, 0, 3));
    out->oldest_age_s = atof(PQgetvalue(r, 0, 4));
    PQclear(r);
    return OUTBOX_OK;
}

static outbox_err_t pg_topic_stats(outbox_store_t *s,
                                   void (*cb)(void *, const outbox_topic_stats_t *), void *arg,
                                   char *errstr, size_t errstr_size)
{
    PGresult *r = NULL;
    outbox_err_t err =
        exec_params(s,
                    "SELECT topic, count(*), count(*) FILTER (WHERE attempts > 0),"
                    " extract(epoch FROM now() - min(created_at))"
                    " FROM {T} WHERE status = 'pending' GROUP BY topic ORDER BY topic",
                    0, NULL, PGRES_TUPLES_OK, &r, "status query failed", errstr, errstr_size);
    if (err)
        return err;
    for (int i = 0; i < PQntuples(r); i++) {
        outbox_topic_stats_t t = {.topic = PQgetvalue(r, i, 0),
                                  .pending = atoll(PQgetvalue(r, i, 1)),
                                  .retrying = atoll(PQgetvalue(r, i, 2)),
                                  .oldest_age_s = atof(PQgetvalue(r, i, 3))};
        cb(arg, &t);
    }
    PQclear(r);
    return OUTBOX_OK;
}

static outbox_err_t pg_lane_holders(outbox_store_t *s,
                                    void (*cb)(void *, const outbox_lane_holder_t *), void *arg,
                                    char *errstr, size_t errstr_size)
{
    char ns[16];
    snprintf(ns, sizeof(ns), "%d", ST(s)->lane_ns);
    const char *params[1] = {ns};
    PGresult *r = NULL;
    outbox_err_t err = exec_params(
        s,
        "SELECT COALESCE(a.application_name, ''), l.pid, count(*), string_agg(l.objid::text, "
        "',' ORDER BY l.objid)"
        "  FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::int AND l.objsubid = 2"
        "   AND l.database = " THIS_DB " GROUP BY 1, 2 ORDER BY 1",
        1, params, PGRES_TUPLES_OK, &r, "lane query failed", errstr, errstr_size);
    if (err)
        return err;
    for (int i = 0; i < PQntuples(r); i++) {
        outbox_lane_holder_t h = {.holder = PQgetvalue(r, i, 0),
                                  .pid = atoi(PQgetvalue(r, i, 1)),
                                  .count = atoi(PQgetvalue(r, i, 2)),
                                  .lanes = PQgetvalue(r, i, 3)};
        cb(arg, &h);
    }
    PQclear(r);
    return OUTBOX_OK;
}

static outbox_err_t pg_tail(outbox_store_t *s, const char *topic, int processed, int64_t since_us,
                            int limit, void (*cb)(void *, const outbox_tail_event_t *), void *arg,
                            int64_t *now_us, char *errstr, size_t errstr_size)
{
    /* One row even when there are no events: the first column is the clock. */
#define TAIL_SQL(col, status)                                                                      \
    "SELECT (extract(epoch FROM statement_timestamp()) * 1000000)::bigint, e.*"                    \
    "  FROM (SELECT 1) one LEFT JOIN LATERAL ("                                                    \
    "   SELECT seq, id, topic, type, key, payload::text,"                                          \
    "          to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"          \
    "          (extract(epoch FROM " col ") * 1000000)::bigint"                                    \
    "     FROM {T} WHERE status = '" status "' AND ($1::text IS NULL OR topic = $1)"               \
    "      AND " col " >= to_timestamp($2::bigint / 1000000.0)"                                    \
    "    ORDER BY " col ", seq LIMIT $3::int) e ON true"
    char since[24], lim[16];
    snprintf(since, sizeof(since), "%lld", (long long)since_us);
    snprintf(lim, sizeof(lim), "%d", limit);
    const char *params[3] = {topic, since, lim};
    PGresult *r = NULL;
    outbox_err_t err = exec_params(
        s, processed ? TAIL_SQL("processed_at", "processed") : TAIL_SQL("created_at", "pending"), 3,
        params, PGRES_TUPLES_OK, &r, "tail query failed", errstr, errstr_size);
#undef TAIL_SQL
    if (err)
        return err;
    for (int i = 0; i < PQntuples(r); i++) {
        if (i == 0 && now_us)
            *now_us = atoll(PQgetvalue(r, 0, 0));
        if (PQgetisnull(r, i, 1))
            continue;
        outbox_tail_event_t e = {.seq = atoll(PQgetvalue(r, i, 1)),
                                 .id = PQgetvalue(r, i, 2),
                                 .topic = PQgetvalue(r, i, 3),
                                 .type = PQgetvalue(r, i, 4),
                                 .key = PQgetvalue(r, i, 5),
                                 .payload = PQgetvalue(r, i, 6),
                                 .at = PQgetvalue(r, i, 7),
                                 .at_us = atoll(PQgetvalue(r, i, 8))};
        cb(arg, &e);
    }
    PQclear(r);
    return OUTBOX_OK;
}

PGconn *outbox__pg_store_conn(outbox_store_t *s)
{
    return ST(s)->conn;
}

/* ------------------------------------------------------------------------ */
/* Dead letters                                                              */

static outbox_err_t pg_dlq_list(outbox_store_t *s, const char *topic, const char *key, int limit,
                                void (*cb)(void *, const outbox_dead_letter_t *), void *arg,
                                char *errstr, size_t errstr_size)
{
    char lim[16];
    snprintf(lim, sizeof(lim), "%d", limit);
    const char *params[3] = {lim, topic, key};
    PGresult *r = NULL;
    outbox_err_t err = exec_params(
        s,
        "SELECT id, topic, type, key, attempts, reason, dead_at, COALESCE(last_error, '')"
        "  FROM {D} WHERE ($2::text IS NULL OR topic = $2) AND ($3::text IS NULL OR key = $3)"
        " ORDER BY seq LIMIT $1::int",
        3, params, PGRES_TUPLES_OK, &r, "dlq list", errstr, errstr_size);
    if (err)
        return err;
    for (int i = 0; i < PQntuples(r); i++) {
        outbox_dead_letter_t d = {.id = PQgetvalue(r, i, 0),
                                  .topic = PQgetvalue(r, i, 1),
                                  .type = PQgetvalue(r, i, 2),
                                  .key = PQgetvalue(r, i, 3),
                                  .attempts = atoi(PQgetvalue(r, i, 4)),
                                  .reason = PQgetvalue(r, i, 5),
                                  .dead_at = PQgetvalue(r, i, 6),
                                  .last_error = PQgetvalue(r, i, 7)};
        cb(arg, &d);
    }
    PQclear(r);
    return OUTBOX_OK;
}

static outbox_err_t pg_dlq_show(outbox_store_t *s, const char *id, char **json, char *errstr,
                                size_t errstr_size)
{
    const char *params[1] = {id};
    PGresult *r = NULL;
    outbox_err_t err =
        exec_params(s,
                    "SELECT jsonb_pretty(to_jsonb(d) - 'payload' || jsonb_build_object('payload', "
                    "d.payload::jsonb))"
                    "  FROM {D} d WHERE id = $1::uuid",
                    1, params, PGRES_TUPLES_OK, &r, "dlq show", errstr, errstr_size);
    if (err)
        return err;
    if (!PQntuples(r)) {
        PQclear(r);
        return outbox__err(OUTBOX_ERR_NOT_FOUND, errstr, errstr_size, "no dead letter with id %s",
                           id);
    }
    *json = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return *json ? OUTBOX_OK : outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
}

static outbox_err_t pg_dlq_requeue(outbox_store_t *s, const char *id, long long *n, char *errstr,
                                   size_t errstr_size)
{
    /* Back with the original seq, so it is the head of its key again. */
    const char *params[1] = {id};
    outbox_err_t err = count_cmd(
        s,
        "WITH moved AS ("
        "  DELETE FROM {D} d"
        "   WHERE $1::uuid IS NULL OR d.id = $1::uuid"
        "      OR (d.reason = 'parked' AND d.key = (SELECT key FROM {D} WHERE id = $1::uuid))"
        "  RETURNING d.*)"
        " INSERT INTO {T} (" DL_COLS ", attempts, next_attempt_at, last_error, errors)"
        " SELECT " DL_COLS ", 0, now(), last_error, errors FROM moved",
        1, params, n, "dlq requeue", errstr, errstr_size);
    if (!err) {
        const char *ch[1] = {ST(s)->channel};
        exec_params(s, "SELECT pg_notify($1, '')", 1, ch, PGRES_TUPLES_OK, NULL, "notify", NULL, 0);
    }
    return err;
}

static outbox_err_t pg_dlq_purge(outbox_store_t *s, const char *id, int64_t older_than_ms,
                                 long long *n, char *errstr, size_t errstr_size)
{
    char older[24];
    snprintf(older, sizeof(older), "%lld", (long long)older_than_ms);
    const char *params[2] = {id, id ? NULL : older};
    outbox_err_t err =
        count_cmd(s,
                  "DELETE FROM {D}"
                  " WHERE ($1::uuid IS NOT NULL AND id = $1::uuid)"
                  "    OR ($2::bigint IS NOT NULL AND dead_at <= now() - $2::bigint * interval "
                  "'1 millisecond')",
                  2, params, n, "dlq purge", errstr, errstr_size);
    return err;
}

const outbox_store_ops_t outbox__store_pg_ops = {
    .name = "postgres",
    .handles = pg_handles,
    .open = pg_open,
    .close = pg_close,
    .migrate = pg_migrate,
    .begin = pg_begin,
    .claim = pg_claim,
    .batch_term = pg_batch_term,
    .ack = pg_ack,
    .retry_at = pg_retry_at,
    .dead_letter = pg_dead_letter,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .register_worker = pg_register_worker,
    .live_workers = pg_live_workers,
    .take_lanes = pg_take_lanes,
    .release_lane = pg_release_lane,
    .newest_due = pg_newest_due,
    .wait_for_work = pg_wait_for_work,
    .maintain = pg_maintain,
    .vacuum = pg_vacuum,
    .stats = pg_stats,
    .topic_stats = pg_topic_stats,
    .lane_holders = pg_lane_holders,
    .tail = pg_tail,
    .dlq_list = pg_dlq_list,
    .dlq_show = pg_dlq_show,
    .dlq_requeue = pg_dlq_requeue,
    .dlq_purge = pg_dlq_purge,
    .consumer_failed = outbox__pg_consumer_failed,
    .consumer_done = outbox__pg_consumer_done,
    .consumer_has_attempts = outbox__pg_consumer_has_attempts,
    .cdl_list = outbox__pg_cdl_list,
    .cdl_show = outbox__pg_cdl_show,
    .cdl_requeue = outbox__pg_cdl_requeue,
    .cdl_purge = outbox__pg_cdl_purge,
};
