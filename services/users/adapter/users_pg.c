/*
 * The repository port on PostgreSQL: BEGIN; Idempotency-Key check; INSERT
 * the user (parameterised); outbox_enqueue(UserCreated); store the key's
 * answer; COMMIT — all or nothing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter/users_adapter.h"
#include "usecase/users_usecase.h"

static void chomp(char *s)
{
    size_t l = strlen(s);
    while (l && (s[l - 1] == '\n' || s[l - 1] == ' '))
        s[--l] = '\0';
}

static users_save_result_t db_failure(PGconn *c, const char *what, const char *err, char *errstr,
                                      size_t errstr_size)
{
    int down = !c || PQstatus(c) != CONNECTION_OK;
    snprintf(errstr, errstr_size, "%s: %s", what, err);
    outbox__log(OUTBOX_LOG_ERROR, "users", "db_error", err, "what", what, NULL);
    return down ? USERS_UNAVAILABLE : USERS_FAILED;
}

static users_save_result_t save(void *self, const users_new_t *u, const users_idem_t *idem,
                                users_replay_t *replay, char *errstr, size_t errstr_size)
{
    users_pg_t *pg = self;
    char err[512];
    const int keyed = idem && idem->key && idem->key[0];
    users_save_result_t res;
    outbox_idem_t st;
    memset(&st, 0, sizeof(st));
    char *body = NULL;
    PGconn *c = outbox__dbpool_get(pg->pool, 5000, err, sizeof(err));
    if (!c)
        return db_failure(NULL, "connecting", err, errstr, errstr_size);
    if (outbox_kit_db_exec(c, "BEGIN", err, sizeof(err))) {
        res = db_failure(c, "BEGIN", err, errstr, errstr_size);
        goto out;
    }
    if (keyed) {
        if (outbox__idem_begin(c, USERS_IDEM_SCOPE, idem->key, idem->fingerprint, &st, err,
                               sizeof(err))) {
            res = db_failure(c, "checking the Idempotency-Key", err, errstr, errstr_size);
            goto out;
        }
        if (st.state != OUTBOX_IDEM_NEW) {
            res = st.state == OUTBOX_IDEM_IN_FLIGHT  ? USERS_KEY_IN_FLIGHT
                  : st.state == OUTBOX_IDEM_MISMATCH ? USERS_KEY_REUSED
                                                     : USERS_REPLAY;
            if (res == USERS_REPLAY) {
                replay->status = st.status;
                snprintf(replay->content_type, sizeof(replay->content_type), "%s", st.content_type);
                replay->body = st.body;
                replay->body_len = st.body_len;
                st.body = NULL;
            }
            goto out;
        }
    }
    const char *p[3] = {u->id, u->email, u->password_hash};
    PGresult *r = PQexecParams(c,
                               "INSERT INTO users (id, email, password_hash)"
                               " VALUES ($1::uuid, $2, $3) ON CONFLICT (email) DO NOTHING",
                               3, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        /* The primary message only: a DETAIL line may quote the row (the hash). */
        const char *prim = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
        snprintf(err, sizeof(err), "%s",
                 prim                           ? prim
                 : PQstatus(c) != CONNECTION_OK ? PQerrorMessage(c)
                                                : "error");
        chomp(err);
        PQclear(r);
        res = db_failure(c, "inserting the user", err, errstr, errstr_size);
        goto out;
    }
    int inserted = atoi(PQcmdTuples(r)) == 1;
    PQclear(r);
    if (!inserted) {
        snprintf(errstr, errstr_size, "a user with this email already exists");
        res = USERS_EMAIL_TAKEN;
        goto out;
    }
    outbox_event_t ev = {.topic = USERS_TOPIC,
                         .type = USERS_EVENT_CREATED,
                         .key = u->id,
                         .payload = u->event_payload,
                         .source = USERS_SOURCE};
    char event_id[OUTBOX_UUID_STRLEN + 1];
    if (outbox_enqueue(c, &ev, event_id, err, sizeof(err))) {
        res = db_failure(c, "writing the UserCreated event", err, errstr, errstr_size);
        goto out;
    }
    if (keyed) {
        body = idem->render(u->id);
        outbox_err_t e = body ? outbox__idem_store(c, USERS_IDEM_SCOPE, idem->key,
                                                   idem->fingerprint, 201, "application/json", body,
                                                   idem->retention_ms, err, sizeof(err))
                              : OUTBOX_ERR_NOMEM;
        if (e == OUTBOX_ERR_INVALID_ARG) {
            res = USERS_KEY_IN_FLIGHT;
            goto out;
        }
        if (e) {
            res = db_failure(c, "storing the Idempotency-Key", body ? err : "out of memory", errstr,
                             errstr_size);
            goto out;
        }
    }
    switch (outbox_kit_db_commit(c, err, sizeof(err))) {
    case OUTBOX_KIT_COMMITTED:
        res = USERS_SAVED;
        outbox__log(OUTBOX_LOG_INFO, "users", "user_created", "user created", "user_id", u->id,
                    "event_id", event_id, NULL);
        break;
    case OUTBOX_KIT_ROLLED_BACK:
        res = db_failure(c, "COMMIT", err, errstr, errstr_size);
        break;
    default:
        outbox__log(OUTBOX_LOG_ERROR, "users", "commit_outcome_unknown",
                    "connection lost during COMMIT: the user may or may not have been created",
                    "user_id", u->id, "error", err, NULL);
        snprintf(errstr, errstr_size, "%s", err);
        res = USERS_COMMIT_UNKNOWN;
        break;
    }
out:
    outbox__dbpool_put(pg->pool, c); /* rolls back anything left open */
    outbox__idem_term(&st);
    free(body);
    return res;
}

static const users_repo_ops_t ops = {save};

users_repo_t users_pg_repo(users_pg_t *pg)
{
    users_repo_t r = {&ops, pg};
    return r;
}
