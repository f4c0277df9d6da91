/* ledger_db_rollback: statements that fail inside the real database
 * (triggers raising an exception) roll back everything of their
 * transaction:
 *   - users-service: the UserCreated insert into the outbox fails -> 500,
 *     no user row (the same email is free afterwards), no event;
 *   - transactions-service API: the TransactionCreated insert fails -> 500,
 *     no transaction row, no event;
 *   - the processor: the balance update after the ledger rows fails on every
 *     third attempt (20 times): the attempt rolls back (no ledger row, no
 *     balance change, no inbox record, no outcome event) and the message is
 *     retried until it applies, once. */
#include <string.h>

#include "ledger_testlib.h"

#define N 60

static ledger_t L;

int main(void)
{
    ledger_init(&L, "ledger_db_rollback", LEDGER_REDIS);
    ledger_start_all_in_one(&L);
    lproc_t *tx = &L.procs[0];
    char a[37], b[37], id[37];

    /* users-service */
    PQclear(tu_exec(L.udb, "CREATE FUNCTION fail_event() RETURNS trigger LANGUAGE plpgsql AS"
                           " $$ BEGIN IF NEW.payload::text LIKE '%rollback@example.com%' THEN"
                           " RAISE EXCEPTION 'injected fault: outbox insert refused'; END IF;"
                           " RETURN NEW; END $$"));
    PQclear(tu_exec(L.udb, "CREATE TRIGGER fail_event BEFORE INSERT ON outbox"
                           " FOR EACH ROW EXECUTE FUNCTION fail_event()"));
    CHECK(ledger_create_user(&L, "rollback@example.com", "password123", NULL) == 500,
          "the failed event must fail the request");
    CHECK(tu_query_ll(L.udb, "SELECT count(*) FROM users") == 0, "user row left behind");
    CHECK(tu_query_ll(L.udb, "SELECT count(*) FROM outbox") == 0, "event left behind");
    PQclear(tu_exec(L.udb, "DROP TRIGGER fail_event ON outbox"));
    CHECK(ledger_create_user(&L, "rollback@example.com", "password123", a) == 201,
          "the email must be free after the rollback");
    CHECK(ledger_create_user(&L, "rollback-b@example.com", "password123", b) == 201, "b");
    ledger_wait_account(&L, a, 30000);
    ledger_wait_account(&L, b, 30000);

    /* transactions-service API */
    PQclear(tu_exec(L.tdb, "CREATE FUNCTION fail_event() RETURNS trigger LANGUAGE plpgsql AS"
                           " $$ BEGIN IF NEW.payload::text LIKE '%ROLLBACK-ME%' THEN"
                           " RAISE EXCEPTION 'injected fault: outbox insert refused'; END IF;"
                           " RETURN NEW; END $$"));
    PQclear(tu_exec(L.tdb, "CREATE TRIGGER fail_event BEFORE INSERT ON outbox"
                           " FOR EACH ROW EXECUTE FUNCTION fail_event()"));
    {
        char url[160], body[256];
        snprintf(url, sizeof(url), "%s/api/v1/transactions", L.tx_url);
        snprintf(body, sizeof(body),
                 "{\"amount\":70,\"description\":\"ROLLBACK-ME\",\"toUserId\":\"%s\"}", a);
        http_resp_t r;
        CHECK(http_do("POST", url, "application/json", NULL, body, strlen(body), &r) == 500,
              "want 500: %ld %s", r.status, r.body);
    }
    CHECK(tu_query_ll(L.tdb, "SELECT count(*) FROM transactions") == 0,
          "the transaction row must roll back with its event");
    CHECK(tu_query_ll(L.tdb, "SELECT count(*) FROM outbox") == 0, "event left behind");
    PQclear(tu_exec(L.tdb, "DROP TRIGGER fail_event ON outbox"));
    CHECK(ledger_post_tx(&L, 10000, NULL, a, id) == 202, "deposit");
    CHECK(!strcmp(ledger_wait_decided(&L, id, 30000), "COMPLETED"), "deposit");

    /* The processor: every third balance update fails, 20 times in all. */
    PQclear(tu_exec(L.tdb, "CREATE SEQUENCE fault_seq"));
    PQclear(tu_exec(L.tdb,
                    "CREATE FUNCTION fail_balance() RETURNS trigger LANGUAGE plpgsql AS"
                    " $$ DECLARE n bigint := nextval('fault_seq'); BEGIN"
                    " IF n % 3 = 1 AND n <= 60 THEN"
                    " RAISE EXCEPTION 'injected fault: balance update refused (%)', n; END IF;"
                    " RETURN NEW; END $$"));
    PQclear(tu_exec(L.tdb, "CREATE TRIGGER fail_balance BEFORE UPDATE ON accounts"
                           " FOR EACH ROW EXECUTE FUNCTION fail_balance()"));
    for (int i = 0; i < N; i++)
        CHECK(ledger_post_tx(&L, 1 + i, i % 2 ? a : b, i % 2 ? b : a, NULL) == 202, "post %d", i);
    ledger_wait_settled(&L, 120000);
    long long seq = tu_query_ll(L.tdb, "SELECT last_value FROM fault_seq");
    int injected = count_in_file(tx->log, "injected fault: balance update refused");
    printf("%d ledger attempts rolled back by the trigger (sequence at %lld)\n", injected, seq);
    CHECK(seq > 60 && injected >= 20, "the trigger should have failed 20 attempts");
    ledger_check_books(&L, 10000);
    CHECK(ledger_balance(&L, a) + ledger_balance(&L, b) == 10000, "a + b");
    ledger_teardown(&L);
    printf("PASS ledger_db_rollback\n");
    return 0;
}
