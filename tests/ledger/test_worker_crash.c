/* ledger_worker_crash: SIGKILL at the two worst moments.
 *   1. The transactions relay dies after the broker took a batch and before
 *      it marked the rows processed (OUTBOX_FAULT_ACK_DELAY widens that
 *      window): the rows stay pending, the restarted relay publishes them
 *      again, and the broker holds duplicates.
 *   2. The processor dies in the middle of a backlog (a trigger makes each
 *      ledger write take 20 ms so the backlog lasts): its open database
 *      transaction rolls back, its unacknowledged messages are taken over.
 * Nothing is lost or doubled: every transaction decided once, the inbox
 * skipped the duplicates, the books balance. */
#include <string.h>

#include "ledger_testlib.h"

#define N 200

static ledger_t L;

static long long xlen(const char *stream)
{
    redisContext *r = tu_redis_connect("127.0.0.1", L.redis_port);
    redisReply *rep = redisCommand(r, "XLEN %s", stream);
    CHECK(rep && rep->type == REDIS_REPLY_INTEGER, "XLEN %s", stream);
    long long n = rep->integer;
    freeReplyObject(rep);
    redisFree(r);
    return n;
}

int main(void)
{
    ledger_init(&L, "ledger_worker_crash", LEDGER_REDIS);
    ledger_add(&L, "users", 0, 1, NULL, NULL, NULL);
    ledger_add(&L, "tx-api", 1, 1, "--no-relay", "--no-consumers", NULL);
    lproc_t *proc = ledger_add(&L, "tx-proc", 1, 0, "--no-api", "--no-relay", NULL);
    ledger_env(&L, "OUTBOX_FAULT_ACK_DELAY=4s");
    lproc_t *relay = ledger_add(&L, "tx-relay", 1, 0, "--no-api", "--no-consumers", NULL);

    char u[4][37];
    for (int i = 0; i < 4; i++) {
        char email[64];
        snprintf(email, sizeof(email), "crash%d@example.com", i);
        CHECK(ledger_create_user(&L, email, "password123", u[i]) == 201, "user %d", i);
    }
    for (int i = 0; i < 4; i++) {
        ledger_wait_account(&L, u[i], 30000);
        CHECK(ledger_post_tx(&L, 100000, NULL, u[i], NULL) == 202, "deposit %d", i);
    }
    ledger_wait_settled(&L, 60000);

    /* The processor takes 20 ms per decision from here on, so that part 2
     * finds it in the middle of the backlog however fast the relay
     * publishes it in part 1 (one batch of 2,000 takes all 200 at once). */
    PQclear(tu_exec(L.tdb, "CREATE FUNCTION slow_ledger() RETURNS trigger LANGUAGE plpgsql AS"
                           " $$ BEGIN PERFORM pg_sleep(0.02); RETURN NULL; END $$"));
    PQclear(tu_exec(L.tdb, "CREATE TRIGGER slow_ledger AFTER INSERT ON ledger_entries"
                           " FOR EACH STATEMENT EXECUTE FUNCTION slow_ledger()"));

    /* 1. The relay: killed between the broker's confirmation and the ack. */
    ledger_kill(relay);
    long long before = xlen("transactions");
    for (int i = 0; i < N; i++)
        CHECK(ledger_post_tx(&L, 1 + i % 500, u[i % 4], u[(i + 1) % 4], NULL) == 202, "post %d", i);
    ledger_spawn(&L, relay);
    long long end = tu_now_ms() + 30000;
    while (xlen("transactions") == before) {
        CHECK(tu_now_ms() < end, "the relay published nothing in 30 s");
        tu_sleep_ms(10);
    }
    ledger_kill(relay); /* inside the 4 s between publish and ack */
    long long pending = tu_query_ll(L.tdb, "SELECT count(*) FROM outbox WHERE status = 'pending'"
                                           " AND type = 'TransactionCreated'");
    long long published = xlen("transactions") - before;
    printf("relay killed after publishing %lld entries; %lld TransactionCreated rows still "
           "pending\n",
           published, pending);
    CHECK(pending > 0 && published > 0, "the crash did not fall between publish and ack");

    /* 2. The processor: killed in the middle of the backlog. */
    ledger_spawn(&L, relay);
    const char *decided = "SELECT count(*) FROM transactions WHERE status <> 'PENDING'";
    long long base = 4, got;
    end = tu_now_ms() + 60000;
    while ((got = tu_query_ll(L.tdb, decided)) < base + 30) {
        CHECK(tu_now_ms() < end, "the processor decided only %lld in 60 s", got - base);
        tu_sleep_ms(10);
    }
    ledger_kill(proc);
    got = tu_query_ll(L.tdb, decided);
    printf("processor killed after deciding %lld of %d\n", got - base, N);
    CHECK(got < base + N, "the processor finished before it was killed");
    PQclear(tu_exec(L.tdb, "DROP TRIGGER slow_ledger ON ledger_entries"));
    ledger_spawn(&L, proc);

    ledger_wait_settled(&L, 120000);
    ledger_check_books(&L, 400000);
    long long events = tu_query_ll(L.tdb, "SELECT count(*) FROM outbox");
    long long entries = xlen("transactions");
    int dups = count_in_file(proc->log, "SKIPPING duplicate");
    printf("stream entries %lld for %lld events; duplicates skipped by the inbox: %d\n", entries,
           events, dups);
    CHECK(entries > events, "the relay crash should have left duplicates on the broker");
    CHECK(dups > 0, "the inbox should have skipped the duplicates");
    ledger_teardown(&L);
    printf("PASS ledger_worker_crash\n");
    return 0;
}
