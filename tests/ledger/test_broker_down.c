/* ledger_broker_down: the broker (Redis with an append-only file) is
 * stopped while users and transactions keep coming in. The APIs keep
 * answering (the events wait in each service's outbox, pending), the relays
 * report the broker down, and once it is back everything is published,
 * accounts are opened and every transaction is decided once. */
#include <string.h>

#include "ledger_testlib.h"

static ledger_t L;

int main(void)
{
    ledger_init(&L, "ledger_broker_down", LEDGER_REDIS_AOF);
    ledger_start_all_in_one(&L);
    lproc_t *tx = &L.procs[0], *users = &L.procs[1];
    char a[37], b[37], c[37], d[37];
    CHECK(ledger_create_user(&L, "down-a@example.com", "password123", a) == 201, "a");
    CHECK(ledger_create_user(&L, "down-b@example.com", "password123", b) == 201, "b");
    ledger_wait_account(&L, a, 30000);
    ledger_wait_account(&L, b, 30000);
    CHECK(ledger_post_tx(&L, 5000, NULL, a, NULL) == 202, "deposit a");
    CHECK(ledger_post_tx(&L, 5000, NULL, b, NULL) == 202, "deposit b");
    ledger_wait_settled(&L, 30000);

    ledger_broker_stop(&L);
    printf("broker stopped\n");
    fflush(stdout);
    /* The write path does not need the broker. */
    CHECK(ledger_create_user(&L, "down-c@example.com", "password123", c) == 201, "c");
    CHECK(ledger_create_user(&L, "down-d@example.com", "password123", d) == 201, "d");
    char ids[60][37];
    for (int i = 0; i < 60; i++)
        CHECK(ledger_post_tx(&L, 100 + i, i % 2 ? a : b, i % 2 ? b : a, ids[i]) == 202,
              "transfer %d", i);
    CHECK(wait_count(tx->log, "broker_down", 1, 30000) >= 1,
          "the transactions relay did not report the broker down");
    CHECK(wait_count(users->log, "broker_down", 1, 30000) >= 1,
          "the users relay did not report the broker down");
    CHECK(tu_query_ll(L.tdb, "SELECT count(*) FROM outbox WHERE status = 'pending'") >= 60,
          "transaction events should wait in the outbox while the broker is down");
    CHECK(tu_query_ll(L.udb, "SELECT count(*) FROM outbox WHERE status = 'pending'") == 2,
          "the two UserCreated events should wait in the outbox");
    char st[32];
    ledger_tx_status(&L, ids[0], st, sizeof(st), NULL, 0);
    CHECK(!strcmp(st, "PENDING"), "transfer decided without the broker: %s", st);
    CHECK(ledger_balance(&L, c) == -1, "an account was opened without the broker");

    ledger_broker_restart(&L);
    printf("broker restarted\n");
    fflush(stdout);
    ledger_wait_account(&L, c, 60000);
    ledger_wait_account(&L, d, 60000);
    ledger_wait_settled(&L, 90000);
    for (int i = 0; i < 60; i++)
        CHECK(!strcmp(ledger_wait_decided(&L, ids[i], 1000), "COMPLETED"), "transfer %d", i);
    ledger_check_books(&L, 10000);
    CHECK(ledger_balance(&L, a) + ledger_balance(&L, b) == 10000, "a + b");
    ledger_teardown(&L);
    printf("PASS ledger_broker_down\n");
    return 0;
}
