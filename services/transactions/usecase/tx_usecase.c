/* The transactions-service use cases (see tx_usecase.h). */
#include "usecase/tx_usecase.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "kit/kit.h"
#include "outbox/outbox.h"

#define LEDGER_CONSUMER "ledger"
#define ACCOUNTS_CONSUMER "accounts"

static int invalid(tx_create_out_t *out, const char *field, const char *msg)
{
    out->invalid = 1;
    snprintf(out->field, sizeof(out->field), "%s", field);
    snprintf(out->message, sizeof(out->message), "%s", msg);
    return -1;
}

/* 1..TX_USER_ID_MAX printable ASCII bytes, no spaces. */
static int user_id_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > TX_USER_ID_MAX)
        return 0;
    for (; *s; s++)
        if (*s <= ' ' || *s > '~')
            return 0;
    return 1;
}

static int validate(const tx_create_in_t *in, tx_create_out_t *out)
{
    if (in->amount <= 0 || in->amount > TX_AMOUNT_MAX)
        return invalid(out, "amount",
                       "amount must be a positive integer number of minor units (cents), at "
                       "most 1000000000000000");
    if (in->from_user && !user_id_valid(in->from_user))
        return invalid(out, "fromUserId",
                       "fromUserId must be a user id (1..64 printable characters, e.g. the "
                       "UUID users-service returned), or absent/null for a deposit");
    if (in->to_user && !user_id_valid(in->to_user))
        return invalid(out, "toUserId",
                       "toUserId must be a user id (1..64 printable characters, e.g. the UUID "
                       "users-service returned), or absent/null for a withdrawal");
    if (!in->from_user && !in->to_user)
        return invalid(out, "toUserId",
                       "give toUserId (a deposit when fromUserId is absent), fromUserId (a "
                       "withdrawal when toUserId is absent), or both (a transfer)");
    if (in->from_user && in->to_user && !strcasecmp(in->from_user, in->to_user))
        return invalid(out, "toUserId", "fromUserId and toUserId must differ");
    if (in->description && strlen(in->description) > TX_DESCRIPTION_MAX)
        return invalid(out, "description", "description must be at most 500 bytes");
    return 0;
}

void tx_create(const tx_store_t *store, const tx_create_in_t *in, const tx_idem_t *idem,
               tx_create_out_t *out)
{
    memset(out, 0, sizeof(*out));
    if (validate(in, out))
        return;
    tx_new_t t = {.amount = in->amount,
                  .description = in->description ? in->description : "",
                  .from_user = in->from_user,
                  .to_user = in->to_user};
    outbox_uuid_v7(t.id);
    json_t *data = json_pack("{s:s,s:I,s:s,s:o,s:o,s:s}", "transactionId", t.id, "amount",
                             (json_int_t)t.amount, "description", t.description, "fromUserId",
                             t.from_user ? json_string(t.from_user) : json_null(), "toUserId",
                             t.to_user ? json_string(t.to_user) : json_null(), "status", "PENDING");
    char *payload = data ? json_dumps(data, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(data);
    if (!payload) {
        out->status = TX_STORE_FAILED;
        snprintf(out->message, sizeof(out->message), "out of memory");
        return;
    }
    t.event_payload = payload;
    out->status =
        store->ops->create(store->self, &t, idem, &out->replay, out->message, sizeof(out->message));
    free(payload);
    snprintf(out->id, sizeof(out->id), "%s", t.id);
}

tx_store_result_t tx_get(const tx_store_t *store, const char *tx_id, tx_view_t *out)
{
    char err[512];
    out->json = NULL;
    return store->ops->get(store->self, tx_id, out, err, sizeof(err));
}

tx_store_result_t tx_balance(const tx_store_t *store, const char *user_id, int64_t *balance)
{
    char err[512];
    return store->ops->balance(store->self, user_id, balance, err, sizeof(err));
}

static tx_msg_verdict_t verdict(tx_store_result_t r)
{
    switch (r) {
    case TX_STORE_OK:
    case TX_STORE_DUPLICATE:
    case TX_STORE_NOT_FOUND:
        return TX_MSG_DONE;
    case TX_STORE_UNAVAILABLE:
    case TX_STORE_COMMIT_UNKNOWN: /* redelivery + the inbox settle it */
        return TX_MSG_DB_DOWN;
    default:
        return TX_MSG_RETRY;
    }
}

tx_msg_verdict_t tx_on_user_created(const tx_store_t *store, const tx_msg_t *m)
{
    if (strcmp(m->type, "UserCreated") != 0)
        return TX_MSG_DONE; /* not ours */
    json_t *data = json_loads(m->data ? m->data : "", 0, NULL);
    const char *uid = json_string_value(json_object_get(data, "userId"));
    if (!uid)
        uid = m->subject;
    char user[TX_ID_LEN + 1] = "";
    if (uid && outbox_uuid_valid(uid))
        snprintf(user, sizeof(user), "%s", uid);
    json_decref(data);
    if (!user[0]) {
        outbox__log(OUTBOX_LOG_WARN, ACCOUNTS_CONSUMER, "bad_message",
                    "UserCreated without a user id (data.userId or subject): rejected",
                    "message_id", m->id, NULL);
        return TX_MSG_REJECT;
    }
    char err[512];
    tx_store_result_t r =
        store->ops->open_account(store->self, ACCOUNTS_CONSUMER, m->id, user, err, sizeof(err));
    if (r == TX_STORE_OK)
        outbox__log(OUTBOX_LOG_INFO, ACCOUNTS_CONSUMER, "account_opened", "account opened",
                    "user_id", user, "message_id", m->id, NULL);
    return verdict(r);
}

static int render_outcome(const tx_outcome_t *o, tx_event_t *ev)
{
    int failed = !strcmp(o->status, "FAILED");
    ev->type = failed ? "TransactionFailed" : "TransactionCompleted";
    json_t *data =
        json_pack("{s:s,s:I,s:o,s:o}", "status", o->status, "amount", (json_int_t)o->amount,
                  "fromUserId", o->from_user[0] ? json_string(o->from_user) : json_null(),
                  "toUserId", o->to_user[0] ? json_string(o->to_user) : json_null());
    if (data && failed)
        json_object_set_new(data, "reason", json_string(o->reason));
    ev->payload = data ? json_dumps(data, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(data);
    return ev->payload ? 0 : -1;
}

tx_msg_verdict_t tx_process(const tx_store_t *store, const tx_msg_t *m)
{
    if (strcmp(m->type, "TransactionCreated") != 0)
        return TX_MSG_DONE; /* our own outcome events */
    if (!m->subject || !outbox_uuid_valid(m->subject)) {
        outbox__log(OUTBOX_LOG_WARN, LEDGER_CONSUMER, "bad_message",
                    "TransactionCreated without a transaction id subject: rejected", "message_id",
                    m->id, NULL);
        return TX_MSG_REJECT;
    }
    char err[512];
    tx_outcome_t o;
    tx_store_result_t r = store->ops->apply(store->self, LEDGER_CONSUMER, m->id, m->subject,
                                            m->traceparent, render_outcome, &o, err, sizeof(err));
    if (r == TX_STORE_OK && o.applied) {
        int failed = !strcmp(o.status, "FAILED");
        char amt[24];
        snprintf(amt, sizeof(amt), "%lld", (long long)o.amount);
        outbox__log(failed ? OUTBOX_LOG_WARN : OUTBOX_LOG_INFO, LEDGER_CONSUMER,
                    failed ? "transaction_failed" : "transaction_completed",
                    failed ? o.reason : "transaction completed", "transaction_id", m->subject,
                    "amount", amt, "message_id", m->id, NULL);
    } else if (r == TX_STORE_OK) {
        outbox__log(OUTBOX_LOG_WARN, LEDGER_CONSUMER, "not_pending",
                    o.status[0] ? "transaction already decided: nothing to do"
                                : "no such transaction: nothing to do",
                    "transaction_id", m->subject, "message_id", m->id, NULL);
    }
    return verdict(r);
}
