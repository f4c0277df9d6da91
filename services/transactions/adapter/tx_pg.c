/*
 * The ledger store port on PostgreSQL. Every statement is parameterised.
 *   create        BEGIN; Idempotency-Key; INSERT transaction; outbox_enqueue
 *                 (TransactionCreated); store the key's answer; COMMIT
 *   open_account  BEGIN; inbox record; INSERT account ON CONFLICT DO NOTHING; COMMIT
 *   apply         BEGIN; inbox record; ledger_apply() (migrations/0001);
 *                 outbox_enqueue(outcome); COMMIT
 */
#include <stdio.h>
#include <string.h>

#include "adapter/tx_adapter.h"
#include "usecase/tx_usecase.h"

static void chomp(char *s)
{
    size_t l = strlen(s);
    while (l && (s[l - 1] == '\n' || s[l - 1] == ' '))
        s[--l] = '\0';
}

static PGconn *acquire(tx_pg_t *pg, char *err, size_t errsz)
{
    if (pg->pool)
        return outbox__dbpool_get(pg->pool, 5000, err, errsz);
    if (pg->conn && PQstatus(pg->conn) == CONNECTION_OK)
        return pg->conn;
    PQfinish(pg->conn);
    pg->conn = outbox_kit_db_connect(pg->conninfo, pg->appname, err, errsz);
    return pg->conn;
}

static void release(tx_pg_t *pg, PGconn *c)
{
    if (!c)
        return;
    if (pg->pool) {
        outbox__dbpool_put(pg->pool, c); /* rolls back anything left open */
        return;
    }
    /* A session of its own: end whatever is left open, aborted ones too. */
    if (PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) != PQTRANS_IDLE)
        PQclear(PQexec(c, "ROLLBACK"));
}

/* The database's verdict on a failure: unreachable or a transient conflict
 * (serialization, deadlock, shutdown, resources) -> UNAVAILABLE; else FAILED. */
static tx_store_result_t failure(PGconn *c, const char *sqlstate, const char *what, const char *err,
                                 char *errstr, size_t errstr_size)
{
    snprintf(errstr, errstr_size, "%s: %s", what, err);
    outbox__log(OUTBOX_LOG_ERROR, "transactions", "db_error", err, "what", what, "sqlstate",
                sqlstate ? sqlstate : "", NULL);
    if (!c || PQstatus(c) != CONNECTION_OK)
        return TX_STORE_UNAVAILABLE;
    if (sqlstate && (!strncmp(sqlstate, "40", 2) || !strncmp(sqlstate, "08", 2) ||
                     !strncmp(sqlstate, "53", 2) || !strncmp(sqlstate, "57", 2)))
        return TX_STORE_UNAVAILABLE;
    return TX_STORE_FAILED;
}

/* Runs one statement; NULL on failure with err and state (may be "") set. */
static PGresult *run(PGconn *c, const char *sql, int n, const char *const *p, ExecStatusType want,
                     char *err, size_t errsz, char state[6])
{
    PGresult *r = PQexecParams(c, sql, n, NULL, p, NULL, NULL, 0);
    state[0] = '\0';
    if (PQresultStatus(r) == want)
        return r;
    const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    snprintf(state, 6, "%s", s ? s : "");
    snprintf(err, errsz, "%s", PQresultErrorMessage(r));
    chomp(err);
    PQclear(r);
    return NULL;
}

static tx_store_result_t commit(PGconn *c, const char *what, char *errstr, size_t errstr_size)
{
    char err[512];
    switch (outbox_kit_db_commit(c, err, sizeof(err))) {
    case OUTBOX_KIT_COMMITTED:
        return TX_STORE_OK;
    case OUTBOX_KIT_ROLLED_BACK:
        return failure(c, NULL, what, err, errstr, errstr_size);
    default:
        snprintf(errstr, errstr_size, "%s: %s", what, err);
        outbox__log(OUTBOX_LOG_ERROR, "transactions", "commit_outcome_unknown", err, "what", what,
                    NULL);
        return TX_STORE_COMMIT_UNKNOWN;
    }
}

static tx_store_result_t create(void *self, const tx_new_t *t, const tx_idem_t *idem,
                                tx_replay_t *replay, char *errstr, size_t errstr_size)
{
    tx_pg_t *pg = self;
    char err[512], state[6] = "";
    const int keyed = idem && idem->key && idem->key[0];
    tx_store_result_t res;
    outbox_idem_t st;
    memset(&st, 0, sizeof(st));
    char *body = NULL;
    PGconn *c = acquire(pg, err, sizeof(err));
    if (!c)
        return failure(NULL, NULL, "connecting", err, errstr, errstr_size);
    if (outbox_kit_db_exec(c, "BEGIN", err, sizeof(err))) {
        res = failure(c, NULL, "BEGIN", err, errstr, errstr_size);
        goto out;
    }
    if (keyed) {
        if (outbox__idem_begin(c, TX_IDEM_SCOPE, idem->key, idem->fingerprint, &st, err,
                               sizeof(err))) {
            res = failure(c, NULL, "checking the Idempotency-Key", err, errstr, errstr_size);
            goto out;
        }
        if (st.state != OUTBOX_IDEM_NEW) {
            res = st.state == OUTBOX_IDEM_IN_FLIGHT  ? TX_STORE_KEY_IN_FLIGHT
                  : st.state == OUTBOX_IDEM_MISMATCH ? TX_STORE_KEY_REUSED
                                                     : TX_STORE_REPLAY;
            if (res == TX_STORE_REPLAY) {
                replay->status = st.status;
                snprintf(replay->content_type, sizeof(replay->content_type), "%s", st.content_type);
                replay->body = st.body;
                replay->body_len = st.body_len;
                st.body = NULL;
            }
            goto out;
        }
    }
    char amt[24];
    snprintf(amt, sizeof(amt), "%lld", (long long)t->amount);
    const char *p[5] = {t->id, amt, t->description, t->from_user, t->to_user};
    PGresult *r = run(c,
                      "INSERT INTO transactions (id, amount, description, from_user_id, to_user_id)"
                      " VALUES ($1::uuid, $2::bigint, $3, $4, $5)",
                      5, p, PGRES_COMMAND_OK, err, sizeof(err), state);
    if (!r) {
        res = failure(c, state, "inserting the transaction", err, errstr, errstr_size);
        goto out;
    }
    PQclear(r);
    outbox_event_t ev = {.topic = TX_TOPIC,
                         .type = "TransactionCreated",
                         .key = t->id,
                         .payload = t->event_payload,
                         .source = TX_SOURCE};
    char event_id[OUTBOX_UUID_STRLEN + 1];
    if (outbox_enqueue(c, &ev, event_id, err, sizeof(err))) {
        res = failure(c, NULL, "writing the TransactionCreated event", err, errstr, errstr_size);
        goto out;
    }
    if (keyed) {
        body = idem->render(t->id);
        outbox_err_t e = body ? outbox__idem_store(c, TX_IDEM_SCOPE, idem->key, idem->fingerprint,
                                                   idem->status, "application/json", body,
                                                   idem->retention_ms, err, sizeof(err))
                              : OUTBOX_ERR_NOMEM;
        if (e == OUTBOX_ERR_INVALID_ARG) {
            res = TX_STORE_KEY_IN_FLIGHT;
            goto out;
        }
        if (e) {
            res = failure(c, NULL, "storing the Idempotency-Key", body ? err : "out of memory",
                          errstr, errstr_size);
            goto out;
        }
    }
    res = commit(c, "committing the transaction", errstr, errstr_size);
    if (res == TX_STORE_OK) {
        outbox__log(OUTBOX_LOG_INFO, "transactions", "transaction_created",
                    "transaction created: PENDING", "transaction_id", t->id, "event_id", event_id,
                    "amount", amt, NULL);
    }
out:
    release(pg, c);
    outbox__idem_term(&st);
    free(body);
    return res;
}

static tx_store_result_t get(void *self, const char *tx_id, tx_view_t *out, char *errstr,
                             size_t errstr_size)
{
    tx_pg_t *pg = self;
    char err[512], state[6];
    out->json = NULL;
    PGconn *c = acquire(pg, err, sizeof(err));
    if (!c)
        return failure(NULL, NULL, "connecting", err, errstr, errstr_size);
    const char *p[1] = {tx_id};
    PGresult *r =
        run(c,
            "SELECT json_strip_nulls(json_build_object('transactionId', id, 'status', status,"
            " 'reason', reason, 'amount', amount, 'description', description,"
            " 'fromUserId', from_user_id, 'toUserId', to_user_id,"
            " 'type', CASE WHEN from_user_id IS NULL THEN 'DEPOSIT'"
            "              WHEN to_user_id IS NULL THEN 'WITHDRAWAL' ELSE 'TRANSFER' END,"
            " 'createdAt', created_at, 'updatedAt', updated_at))::text"
            " FROM transactions WHERE id = $1::uuid",
            1, p, PGRES_TUPLES_OK, err, sizeof(err), state);
    tx_store_result_t res;
    if (!r) {
        res = failure(c, state, "reading the transaction", err, errstr, errstr_size);
    } else if (PQntuples(r) == 0) {
        res = TX_STORE_NOT_FOUND;
    } else {
        out->json = strdup(PQgetvalue(r, 0, 0));
        res = out->json ? TX_STORE_OK : TX_STORE_FAILED;
    }
    PQclear(r);
    release(pg, c);
    return res;
}

static tx_store_result_t balance(void *self, const char *user_id, int64_t *bal, char *errstr,
                                 size_t errstr_size)
{
    tx_pg_t *pg = self;
    char err[512], state[6];
    PGconn *c = acquire(pg, err, sizeof(err));
    if (!c)
        return failure(NULL, NULL, "connecting", err, errstr, errstr_size);
    const char *p[1] = {user_id};
    PGresult *r = run(c, "SELECT balance FROM accounts WHERE user_id = $1::uuid AND kind = 'user'",
                      1, p, PGRES_TUPLES_OK, err, sizeof(err), state);
    tx_store_result_t res;
    if (!r) {
        res = failure(c, state, "reading the balance", err, errstr, errstr_size);
    } else if (PQntuples(r) == 0) {
        res = TX_STORE_NOT_FOUND;
    } else {
        *bal = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        res = TX_STORE_OK;
    }
    PQclear(r);
    release(pg, c);
    return res;
}

/* BEGIN + inbox record: TX_STORE_OK (new, transaction open), DUPLICATE
 * (rolled back, logged) or a failure. */
static tx_store_result_t begin_once(PGconn *c, const char *consumer, const char *message_id,
                                    char *errstr, size_t errstr_size)
{
    char err[512];
    int is_new = 0;
    if (outbox_kit_db_exec(c, "BEGIN", err, sizeof(err)) ||
        outbox_inbox_record(c, consumer, message_id, &is_new, err, sizeof(err)))
        return failure(c, NULL, "recording the message in the inbox", err, errstr, errstr_size);
    if (!is_new) {
        PQclear(PQexec(c, "ROLLBACK"));
        char msg[96];
        snprintf(msg, sizeof(msg), "SKIPPING duplicate message %s", message_id);
        outbox__log(OUTBOX_LOG_INFO, consumer, "duplicate", msg, "message_id", message_id, NULL);
        return TX_STORE_DUPLICATE;
    }
    return TX_STORE_OK;
}

static tx_store_result_t open_account(void *self, const char *consumer, const char *message_id,
                                      const char *user_id, char *errstr, size_t errstr_size)
{
    tx_pg_t *pg = self;
    char err[512], state[6];
    PGconn *c = acquire(pg, err, sizeof(err));
    if (!c)
        return failure(NULL, NULL, "connecting", err, errstr, errstr_size);
    tx_store_result_t res = begin_once(c, consumer, message_id, errstr, errstr_size);
    if (res != TX_STORE_OK)
        goto out;
    const char *p[1] = {user_id};
    PGresult *r = run(c,
                      "INSERT INTO accounts (user_id) VALUES ($1::uuid)"
                      " ON CONFLICT (user_id) DO NOTHING",
                      1, p, PGRES_COMMAND_OK, err, sizeof(err), state);
    if (!r) {
        res = failure(c, state, "opening the account", err, errstr, errstr_size);
        goto out;
    }
    PQclear(r);
    res = commit(c, "committing the account", errstr, errstr_size);
out:
    release(pg, c);
    return res;
}

static tx_store_result_t apply(void *self, const char *consumer, const char *message_id,
                               const char *tx_id, const char *traceparent,
                               int (*render)(const tx_outcome_t *o, tx_event_t *ev),
                               tx_outcome_t *o, char *errstr, size_t errstr_size)
{
    tx_pg_t *pg = self;
    char err[512], state[6];
    memset(o, 0, sizeof(*o));
    PGconn *c = acquire(pg, err, sizeof(err));
    if (!c)
        return failure(NULL, NULL, "connecting", err, errstr, errstr_size);
    tx_store_result_t res = begin_once(c, consumer, message_id, errstr, errstr_size);
    if (res != TX_STORE_OK)
        goto out;
    const char *p[1] = {tx_id};
    PGresult *r = run(c,
                      "SELECT o_applied, o_status, o_reason, o_amount, o_from, o_to"
                      " FROM ledger_apply($1::uuid)",
                      1, p, PGRES_TUPLES_OK, err, sizeof(err), state);
    if (!r) {
        res = failure(c, state, "applying the transaction", err, errstr, errstr_size);
        goto out;
    }
    o->applied = !strcmp(PQgetvalue(r, 0, 0), "t");
    snprintf(o->status, sizeof(o->status), "%s", PQgetvalue(r, 0, 1));
    snprintf(o->reason, sizeof(o->reason), "%s", PQgetvalue(r, 0, 2));
    o->amount = strtoll(PQgetvalue(r, 0, 3), NULL, 10);
    snprintf(o->from_user, sizeof(o->from_user), "%s", PQgetvalue(r, 0, 4));
    snprintf(o->to_user, sizeof(o->to_user), "%s", PQgetvalue(r, 0, 5));
    PQclear(r);
    if (o->applied) {
        tx_event_t ev = {0};
        if (render(o, &ev)) {
            res = failure(c, NULL, "rendering the outcome event", "out of memory", errstr,
                          errstr_size);
            goto out;
        }
        outbox_event_t oe = {.topic = TX_TOPIC,
                             .type = ev.type,
                             .key = tx_id,
                             .payload = ev.payload,
                             .traceparent = traceparent,
                             .source = "/ledger"};
        outbox_err_t e = outbox_enqueue(c, &oe, NULL, err, sizeof(err));
        free(ev.payload);
        if (e) {
            res = failure(c, NULL, "writing the outcome event", err, errstr, errstr_size);
            goto out;
        }
    }
    res = commit(c, "committing the ledger", errstr, errstr_size);
out:
    release(pg, c);
    return res;
}

static const tx_store_ops_t ops = {create, get, balance, open_account, apply};

tx_store_t tx_pg_store(tx_pg_t *pg)
{
    tx_store_t s = {&ops, pg};
    return s;
}

void tx_pg_close(tx_pg_t *pg)
{
    if (pg && !pg->pool) {
        PQfinish(pg->conn);
        pg->conn = NULL;
    }
}
