/* Enqueue and inbox outside a transaction are refused with a clear error
 * and write nothing; bad events are rejected with a reason. */
#include "relay_common.h"

int main(void)
{
    PGconn *c;
    setup_db("enqueue_refused", &c);
    char err[512];
    outbox_event_t ev = {.topic = "orders", .type = "OrderCreated", .key = "o1", .payload = "{}"};

    err[0] = '\0';
    CHECK(outbox_enqueue(c, &ev, NULL, err, sizeof(err)) == OUTBOX_ERR_NOT_IN_TRANSACTION,
          "enqueue in autocommit was accepted");
    CHECK(strstr(err, "transaction"), "error does not say why: %s", err);
    CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox") == 0, "a row was written");

    int is_new = -1;
    CHECK(outbox_inbox_record(c, "inventory", "0190b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b", &is_new, err,
                              sizeof(err)) == OUTBOX_ERR_NOT_IN_TRANSACTION,
          "inbox in autocommit was accepted");
    CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox_inbox") == 0, "an inbox row was written");

    /* Bad input inside a transaction: clear errors, transaction still usable. */
    PQclear(tu_exec(c, "BEGIN"));
    outbox_event_t bad[] = {
        {.topic = "", .type = "T", .key = "k", .payload = "{}"},
        {.topic = "t", .type = NULL, .key = "k", .payload = "{}"},
        {.topic = "t", .type = "T", .key = NULL, .payload = "{}"},
        {.topic = "t", .type = "T", .key = "k", .payload = NULL},
        {.id = "not-a-uuid", .topic = "t", .type = "T", .key = "k", .payload = "{}"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        CHECK(outbox_enqueue(c, &bad[i], NULL, err, sizeof(err)) == OUTBOX_ERR_INVALID_ARG,
              "bad event %zu accepted", i);
        CHECK(err[0], "no message for bad event %zu", i);
    }
    CHECK(outbox_enqueue(c, &ev, NULL, err, sizeof(err)) == OUTBOX_OK,
          "good event after bad ones: %s", err);
    PQclear(tu_exec(c, "COMMIT"));
    CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox") == 1, "want exactly the good event");

    /* Payload that is not JSON: the database refuses; caller must roll back. */
    PQclear(tu_exec(c, "BEGIN"));
    outbox_event_t nj = {.topic = "t", .type = "T", .key = "k", .payload = "{oops"};
    CHECK(outbox_enqueue(c, &nj, NULL, err, sizeof(err)) == OUTBOX_ERR_INVALID_ARG,
          "non-JSON payload accepted");
    PQclear(tu_exec(c, "ROLLBACK"));

    /* Explicit ids are kept; a duplicate id is refused. */
    PQclear(tu_exec(c, "BEGIN"));
    outbox_event_t withid = {.id = "0190b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b",
                             .topic = "t",
                             .type = "T",
                             .key = "k",
                             .payload = "{}"};
    char id[OUTBOX_UUID_STRLEN + 1];
    CHECK(outbox_enqueue(c, &withid, id, err, sizeof(err)) == OUTBOX_OK && !strcmp(id, withid.id),
          "%s", err);
    PQclear(tu_exec(c, "COMMIT"));
    PQclear(tu_exec(c, "BEGIN"));
    CHECK(outbox_enqueue(c, &withid, NULL, err, sizeof(err)) == OUTBOX_ERR_INVALID_ARG,
          "duplicate id accepted");
    PQclear(tu_exec(c, "ROLLBACK"));

    /* Migrations are idempotent. */
    int applied = -1;
    CHECK(outbox_migrate(c, &applied, err, sizeof(err)) == OUTBOX_OK && applied == 0,
          "re-migrate applied %d", applied);
    PQfinish(c);
    printf("PASS enqueue_outside_transaction_refused\n");
    return 0;
}
