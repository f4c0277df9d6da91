/* Scenario "database rollback": a business transaction that enqueued events
 * fails (constraint violation after the enqueue, explicit rollback of a
 * multi-event transaction, rollback to a savepoint) and publishes exactly
 * the events that committed. */
#include "relay_common.h"

int main(void)
{
    PGconn *c;
    const char *ci = setup_db("scenario_database_rollback", &c);
    char host[64], err[512];
    int port;
    tu_redis_addr(host, sizeof(host), &port);
    redisContext *r = tu_redis_connect(host, port);
    const char *topic = tu_unique("rb");
    PQclear(tu_exec(
        c, "CREATE TABLE accounts (id text PRIMARY KEY, balance int CHECK (balance >= 0))"));
    PQclear(tu_exec(c, "INSERT INTO accounts VALUES ('alice', 100), ('bob', 0)"));
    outbox_relay_t *relay = outbox_relay_new(relay_conf(ci, host, port), err, sizeof(err));
    CHECK(relay && outbox_relay_start(relay, err, sizeof(err)) == OUTBOX_OK, "%s", err);

    char committed[3][OUTBOX_UUID_STRLEN + 1];
    /* 1. transfer that violates a constraint after its event was enqueued */
    PQclear(tu_exec(c, "BEGIN"));
    outbox_event_t ev = {
        .topic = topic, .type = "MoneyTransferred", .key = "alice", .payload = "{\"amount\":500}"};
    CHECK(outbox_enqueue(c, &ev, NULL, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    PGresult *res = PQexec(c, "UPDATE accounts SET balance = balance - 500 WHERE id = 'alice'");
    CHECK(PQresultStatus(res) == PGRES_FATAL_ERROR, "overdraft was allowed");
    PQclear(res);
    PQclear(tu_exec(c, "ROLLBACK"));

    /* 2. a valid transfer: commits with its event */
    PQclear(tu_exec(c, "BEGIN"));
    PQclear(tu_exec(c, "UPDATE accounts SET balance = balance - 40 WHERE id = 'alice'"));
    PQclear(tu_exec(c, "UPDATE accounts SET balance = balance + 40 WHERE id = 'bob'"));
    ev.payload = "{\"amount\":40}";
    CHECK(outbox_enqueue(c, &ev, committed[0], err, sizeof(err)) == OUTBOX_OK, "%s", err);
    PQclear(tu_exec(c, "COMMIT"));

    /* 3. several events, then an explicit rollback */
    PQclear(tu_exec(c, "BEGIN"));
    for (int i = 0; i < 5; i++) {
        ev.type = "Discarded";
        CHECK(outbox_enqueue(c, &ev, NULL, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    }
    PQclear(tu_exec(c, "ROLLBACK"));

    /* 4. savepoint: the inner event rolls back, the outer ones commit */
    PQclear(tu_exec(c, "BEGIN"));
    ev.type = "Kept";
    CHECK(outbox_enqueue(c, &ev, committed[1], err, sizeof(err)) == OUTBOX_OK, "%s", err);
    PQclear(tu_exec(c, "SAVEPOINT s1"));
    ev.type = "Discarded";
    CHECK(outbox_enqueue(c, &ev, NULL, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    PQclear(tu_exec(c, "ROLLBACK TO SAVEPOINT s1"));
    ev.type = "Kept";
    CHECK(outbox_enqueue(c, &ev, committed[2], err, sizeof(err)) == OUTBOX_OK, "%s", err);
    PQclear(tu_exec(c, "COMMIT"));

    wait_drained(c, 20000);
    tu_sleep_ms(1200);
    outbox_relay_destroy(relay);
    long n = 0, dups = 0;
    entry_t *got = read_stream(r, topic, &n);
    CHECK(n == 3, "want exactly the 3 committed events, got %ld", n);
    check_all_present(committed, 3, got, n, &dups);
    redisReply *rep = redisCommand(r, "XRANGE %s - +", topic);
    for (size_t i = 0; i < rep->elements; i++) {
        redisReply *f = rep->element[i]->element[1];
        for (size_t j = 0; j + 1 < f->elements; j += 2)
            if (!strcmp(f->element[j]->str, "type"))
                CHECK(strcmp(f->element[j + 1]->str, "Discarded"),
                      "a rolled-back event was published");
    }
    freeReplyObject(rep);
    CHECK(tu_query_ll(c, "SELECT balance FROM accounts WHERE id = 'alice'") == 60, "balance");
    free(got);
    redisFree(r);
    PQfinish(c);
    printf("PASS scenario_database_rollback: constraint failure, explicit rollback and savepoint "
           "rollback publish "
           "nothing; the 3 committed events published once\n");
    return 0;
}
