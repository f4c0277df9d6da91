/*
 * services/transactions: the POST /api/v1/transactions body
 * (tx_http_parse_create, then the tx_create use case with an in-memory
 * store), and the two messages its consumers read: UserCreated (data
 * with a userId) and TransactionCreated (a transaction id subject).
 *
 * Input: the body; the whole input is also the UserCreated data, and its
 * first line the TransactionCreated subject. What reaches the store is a
 * valid transaction: amount in range, user ids of 1..64 printable bytes,
 * a description of at most 500 bytes, an event that is JSON.
 */
#include <jansson.h>
#include <string.h>

#include "fuzz_common.h"
#include "http/tx_http.h"

static tx_store_result_t fake_create(void *self, const tx_new_t *t, const tx_idem_t *idem,
                                     tx_replay_t *replay, char *errstr, size_t errstr_size)
{
    int *created = self;
    (*created)++;
    FUZZ_CHECK(t->amount > 0 && t->amount <= TX_AMOUNT_MAX, "amount %lld", (long long)t->amount);
    FUZZ_CHECK(t->from_user || t->to_user, "neither side");
    const char *u[2] = {t->from_user, t->to_user};
    for (int i = 0; i < 2; i++) {
        if (!u[i])
            continue;
        size_t n = strlen(u[i]);
        FUZZ_CHECK(n >= 1 && n <= TX_USER_ID_MAX, "user id \"%s\"", u[i]);
        for (size_t k = 0; k < n; k++)
            FUZZ_CHECK(u[i][k] > ' ' && u[i][k] <= '~', "user id \"%s\"", u[i]);
    }
    FUZZ_CHECK(t->description && strlen(t->description) <= TX_DESCRIPTION_MAX, "description");
    json_t *ev = json_loads(t->event_payload, 0, NULL);
    FUZZ_CHECK(ev, "event %s", t->event_payload);
    json_decref(ev);
    return TX_STORE_OK;
}

static tx_store_result_t fake_open(void *self, const char *consumer, const char *message_id,
                                   const char *user_id, char *errstr, size_t errstr_size)
{
    FUZZ_CHECK(outbox_uuid_valid(user_id), "account for \"%s\"", user_id);
    return TX_STORE_OK;
}

static tx_store_result_t fake_apply(void *self, const char *consumer, const char *message_id,
                                    const char *tx_id, const char *traceparent,
                                    int (*render)(const tx_outcome_t *o, tx_event_t *ev),
                                    tx_outcome_t *out, char *errstr, size_t errstr_size)
{
    FUZZ_CHECK(outbox_uuid_valid(tx_id), "apply \"%s\"", tx_id);
    memset(out, 0, sizeof(*out));
    return TX_STORE_OK;
}

static const tx_store_ops_t store_ops = {
    .create = fake_create, .open_account = fake_open, .apply = fake_apply};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int created = 0;
    tx_store_t store = {&store_ops, &created};
    json_t *doc = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (json_is_object(doc)) {
        tx_create_in_t in;
        const char *field, *msg;
        if (tx_http_parse_create(doc, &in, &field, &msg) == 0) {
            tx_idem_t idem = {.key = "", .fingerprint = "", .status = 202};
            tx_create_out_t out;
            tx_create(&store, &in, &idem, &out);
            FUZZ_CHECK(out.invalid == !created, "invalid %d, created %d", out.invalid, created);
            if (out.invalid)
                FUZZ_CHECK(out.field[0] && out.message[0], "invalid without a reason");
            else
                FUZZ_CHECK(outbox_uuid_valid(out.id), "id %s", out.id);
            free(out.replay.body);
        } else {
            FUZZ_CHECK(field && msg, "refused without a reason");
        }
    }
    json_decref(doc);

    char *text = fuzz_str(data, size);
    tx_msg_t m = {.id = "0190a6f0-8b1c-7d2e-9f30-4a5b6c7d8e9f",
                  .type = "UserCreated",
                  .subject = NULL,
                  .data = text};
    tx_msg_verdict_t v = tx_on_user_created(&store, &m);
    FUZZ_CHECK(v == TX_MSG_DONE || v == TX_MSG_REJECT, "UserCreated verdict %d", (int)v);
    char *nl = strchr(text, '\n');
    if (nl)
        *nl = '\0';
    m.type = "TransactionCreated";
    m.subject = text;
    m.data = NULL;
    v = tx_process(&store, &m);
    FUZZ_CHECK(v == TX_MSG_DONE || v == TX_MSG_REJECT, "TransactionCreated verdict %d", (int)v);
    free(text);
    return 0;
}
