/* chaos_ledger: users-service and transactions-service as seven processes
 * (users API and relay; two transaction APIs, its relay and two processors
 * running the accounts and ledger consumers), 50 users with a deposit each,
 * then OUTBOX_CHAOS_EVENTS random transfers from 8 clients while the harness
 * SIGKILLs them, restarts PostgreSQL and Redis and slows, partitions and cuts
 * the network to Redis (chaos_lib.h). chaos_ledger_amqp is the same on a
 * RabbitMQ node (make test-chaos only: OUTBOX_CHAOS_AMQP=1). Then, from the
 * outside:
 *
 *   - every accepted request exactly once: one transaction per
 *     Idempotency-Key, each accepted transactionId present, no other; one
 *     user per accepted POST /users and one account per user;
 *   - every event delivered: every outbox row of both services processed,
 *     nothing dead-lettered (relay or consumer), every event id of both
 *     outboxes in its Redis stream (users, transactions); every event
 *     handled by its consumer (one inbox record each);
 *   - every effect exactly once: the books of ledger_check_books (each
 *     transaction decided once with one outcome event, one DEBIT and one
 *     CREDIT of its amount per COMPLETED transaction, none per FAILED,
 *     debits = credits, each balance = its credits - debits, all balances
 *     sum to 0, no negative user balance) and the users' balances still sum
 *     to the deposits, read both from SQL and over HTTP. */
#include <jansson.h>
#include <string.h>

#include "chaos_lib.h"
#include "ledger_testlib.h"

#define NUSERS 50
#define DEPOSIT 1000000LL

typedef struct ledger_ctx_s {
    char users[NUSERS][40];
    char (*tx_id)[40];
} ledger_ctx_t;

static void op(chaos_client_t *cl, long i, void *ud)
{
    ledger_ctx_t *x = ud;
    unsigned a = chaos_rand(cl, NUSERS), b = chaos_rand(cl, NUSERS - 1);
    if (b >= a)
        b++;
    char body[256], key[64];
    snprintf(body, sizeof(body),
             "{\"amount\":%u,\"description\":\"chaos %ld\",\"fromUserId\":\"%s\",\"toUserId\":"
             "\"%s\"}",
             1 + chaos_rand(cl, 3000), i, x->users[a], x->users[b]);
    snprintf(key, sizeof(key), "chaos-tx-%ld", i);
    http_resp_t r;
    long st = chaos_call(cl, "tx", "POST", "/api/v1/transactions", body, key, &r);
    CHECK(st == 202, "transfer %ld: %ld %s", i, st, r.body);
    json_member(r.body, "transactionId", x->tx_id[i], 40);
    CHECK(outbox_uuid_valid(x->tx_id[i]), "transfer %ld: no transactionId in %s", i, r.body);
    chaos_accepted(cl->C);
}

static void on_entry(const char *id, const char *type, const char *event, void *ud)
{
    (void)type, (void)event;
    chaos_ids_add(ud, id);
}

/* Every event id of the outbox behind conn is in stream; returns the
 * stream's entries and sets *copies to the entries that repeat an id. */
static long check_stream(chaos_t *C, PGconn *conn, const char *stream, long *copies)
{
    chaos_ids_t ids = {0};
    long entries = chaos_stream_scan(C, stream, on_entry, &ids);
    *copies = chaos_ids_sort(&ids, 1);
    PGresult *r = tu_exec(conn, "SELECT id::text, type FROM outbox");
    for (int i = 0; i < PQntuples(r); i++)
        CHECK(chaos_ids_has(&ids, PQgetvalue(r, i, 0)), "%s %s is not in the stream %s",
              PQgetvalue(r, i, 1), PQgetvalue(r, i, 0), stream);
    CHECK(ids.n == PQntuples(r), "the stream %s has %ld event ids, the outbox %d", stream, ids.n,
          PQntuples(r));
    PQclear(r);
    chaos_ids_free(&ids);
    return entries;
}

int main(void)
{
    chaos_t C;
#ifdef CHAOS_LEDGER_AMQP
    const char *want = getenv("OUTBOX_CHAOS_AMQP");
    if (!want || strcmp(want, "1") != 0)
        tu_skip("the RabbitMQ variant runs in make test-chaos (OUTBOX_CHAOS_AMQP=1): a node "
                "takes 10-45 s to start");
    chaos_init_amqp(&C, "ledger_amqp");
#else
    chaos_init(&C, "ledger");
#endif
    char udb[256], tdb[256], kv[1200], uenv[1200], tenv[1200];
    chaos_db(&C, "users_db", udb, sizeof(udb));
    chaos_db(&C, "transaction_db", tdb, sizeof(tdb));
    snprintf(uenv, sizeof(uenv), "DATABASE_URL=%s", udb);
    snprintf(tenv, sizeof(tenv), "DATABASE_URL=%s", tdb);
    if (C.amqp) {
        snprintf(kv, sizeof(kv), "OUTBOX_SINK=amqp://guest:guest@%s/", C.broker_addr);
        chaos_env(&C, "OUTBOX_AMQP_MANDATORY=true"); /* no queue bound yet: retry, not drop */
    } else {
        snprintf(kv, sizeof(kv), "OUTBOX_SINK=redis://%s", C.broker_addr);
    }
    chaos_env(&C, kv);
    snprintf(kv, sizeof(kv), "REDIS_ADDR=%s", C.broker_addr);
    chaos_env(&C, kv);
    chaos_env(&C, "OUTBOX_METRICS_ADDR=off");
    chaos_env(&C, "OUTBOX_HTTP_ADDR=127.0.0.1");
    chaos_env(&C, "OUTBOX_WORKERS=2");
    chaos_env(&C, "OUTBOX_WORKER_INTERVAL=500ms");
    chaos_env(&C, "OUTBOX_CONSUMER_CLAIM_IDLE=10s");

    const char *u[] = {uenv, NULL}, *t[] = {tenv, NULL};
    const char *api[] = {"--no-relay", "--no-consumers", NULL};
    const char *relay[] = {"--no-api", "--no-consumers", NULL};
    const char *proc[] = {"--no-api", "--no-relay", NULL};
    const char *u_api[] = {"--no-relay", NULL}, *u_relay[] = {"--no-api", NULL};
    /* The processors first: their consumers create the groups. */
    chaos_add(&C, "tx-proc-1", "consumer", NULL, NULL, "transactions-service", proc, t,
              "consumer_started", 1);
    chaos_add(&C, "tx-proc-2", "consumer", NULL, NULL, "transactions-service", proc, t,
              "consumer_started", 1);
    chaos_add(&C, "tx-relay", "relay", NULL, NULL, "transactions-service", relay, t,
              "relay_started", 1);
    chaos_add(&C, "users-relay", "relay", NULL, NULL, "users-service", u_relay, u, "relay_started",
              1);
    chaos_add(&C, "tx-api-1", "api", "tx", "SERVER_PORT", "transactions-service", api, t, NULL, 1);
    chaos_add(&C, "tx-api-2", "api", "tx", "SERVER_PORT", "transactions-service", api, t, NULL, 1);
    chaos_add(&C, "users-api", "api", "users", "SERVER_PORT", "users-service", u_api, u, NULL, 1);
    chaos_probe(&C, "tx", "/api/v1/transactions/00000000-0000-7000-8000-000000000000");

    /* Users and their deposits, before the chaos. */
    static ledger_ctx_t x;
    long n = C.events;
    x.tx_id = calloc((size_t)n, 40);
    char(*dep)[40] = calloc(NUSERS, 40);
    CHECK(x.tx_id && dep, "oom");
    chaos_client_t cl;
    chaos_client_init(&C, &cl, 1000);
    for (int i = 0; i < NUSERS; i++) {
        char body[160], key[64];
        snprintf(body, sizeof(body),
                 "{\"email\":\"chaos%d@example.com\",\"password\":\"secret-%d!\"}", i, i);
        snprintf(key, sizeof(key), "chaos-user-%d", i);
        http_resp_t r;
        long st = chaos_call(&cl, "users", "POST", "/users", body, key, &r);
        CHECK(st == 201, "user %d: %ld %s", i, st, r.body);
        json_t *o = json_loads(r.body, 0, NULL);
        const char *id = json_string_value(json_object_get(json_object_get(o, "data"), "id"));
        CHECK(outbox_uuid_valid(id), "user %d: no id in %s", i, r.body);
        snprintf(x.users[i], sizeof(x.users[i]), "%s", id);
        json_decref(o);
    }
    PGconn *tc = NULL, *uc = NULL;
    chaos_wait_ll(&C, &tc, tdb, "SELECT count(*) FROM accounts WHERE kind = 'user'", NUSERS, 120000,
                  "accounts opened");
    for (int i = 0; i < NUSERS; i++) {
        char body[200], key[64];
        snprintf(body, sizeof(body),
                 "{\"amount\":%lld,\"description\":\"deposit\",\"toUserId\":\"%s\"}", DEPOSIT,
                 x.users[i]);
        snprintf(key, sizeof(key), "chaos-deposit-%d", i);
        http_resp_t r;
        long st = chaos_call(&cl, "tx", "POST", "/api/v1/transactions", body, key, &r);
        CHECK(st == 202, "deposit %d: %ld %s", i, st, r.body);
        json_member(r.body, "transactionId", dep[i], 40);
    }
    chaos_wait_ll(&C, &tc, tdb, "SELECT count(*) FROM transactions WHERE status = 'COMPLETED'",
                  NUSERS, 120000, "deposits completed");
    PQfinish(tc);
    tc = NULL;

    chaos_run(&C, n, op, &x);

    /* Settled: nothing PENDING, every outbox row of both services processed. */
    chaos_wait_ll(&C, &tc, tdb, "SELECT count(*) FROM transactions WHERE status = 'PENDING'", 0,
                  chaos_drain_ms(&C), "transactions still PENDING");
    chaos_wait_ll(&C, &tc, tdb, "SELECT count(*) FROM outbox WHERE status <> 'processed'", 0,
                  chaos_drain_ms(&C), "transactions outbox rows not processed");
    chaos_wait_ll(&C, &uc, udb, "SELECT count(*) FROM outbox WHERE status <> 'processed'", 0,
                  chaos_drain_ms(&C), "users outbox rows not processed");

    /* Every accepted request exactly once. */
    chaos_ids_t txs = {0};
    for (long i = 0; i < n; i++)
        chaos_ids_add(&txs, x.tx_id[i]);
    for (int i = 0; i < NUSERS; i++)
        chaos_ids_add(&txs, dep[i]);
    CHECK(chaos_ids_sort(&txs, 1) == 0, "two keys were answered with the same transaction");
    PGresult *r = tu_exec(tc, "SELECT id::text FROM transactions");
    CHECK(PQntuples(r) == n + NUSERS, "transactions: %d rows for %ld accepted keys", PQntuples(r),
          n + NUSERS);
    for (int i = 0; i < PQntuples(r); i++)
        CHECK(chaos_ids_has(&txs, PQgetvalue(r, i, 0)), "transaction %s was never accepted",
              PQgetvalue(r, i, 0));
    PQclear(r);
    CHECK(tu_query_ll(uc, "SELECT count(*) FROM users") == NUSERS, "users: want %d", NUSERS);

    /* The books, from SQL and over HTTP. */
    ledger_t L;
    memset(&L, 0, sizeof(L));
    L.tdb = tc;
    L.udb = uc;
    ledger_check_books(&L, DEPOSIT * NUSERS);
    CHECK(tu_query_ll(uc, "SELECT count(*) FROM outbox_dead_letter") == 0, "users dead letters");
    CHECK(tu_query_ll(tc, "SELECT count(*) FROM outbox_consumer_dead_letter") == 0,
          "consumer dead letters: %lld",
          tu_query_ll(tc, "SELECT count(*) FROM outbox_consumer_dead_letter"));
    CHECK(tu_query_ll(tc, "SELECT count(*) FROM outbox_inbox WHERE consumer = 'ledger'") ==
              n + NUSERS,
          "ledger inbox records: %lld, want %ld",
          tu_query_ll(tc, "SELECT count(*) FROM outbox_inbox WHERE consumer = 'ledger'"),
          n + NUSERS);
    long long sum = 0;
    for (int i = 0; i < NUSERS; i++) {
        char path[128];
        snprintf(path, sizeof(path), "/api/v1/balance/%s", x.users[i]);
        http_resp_t hr;
        CHECK(chaos_call(&cl, "tx", "GET", path, NULL, NULL, &hr) == 200, "GET %s: %ld %s", path,
              hr.status, hr.body);
        json_t *o = json_loads(hr.body, 0, NULL);
        sum += (long long)json_integer_value(json_object_get(o, "balance"));
        json_decref(o);
    }
    CHECK(sum == DEPOSIT * NUSERS, "balances over HTTP sum to %lld, want %lld", sum,
          DEPOSIT * NUSERS);
    chaos_client_term(&cl);
    r = tu_exec(tc, "SELECT coalesce(reason, ''), count(*) FROM transactions"
                    " WHERE status = 'FAILED' GROUP BY 1 ORDER BY 2 DESC LIMIT 5");
    for (int i = 0; i < PQntuples(r); i++)
        printf("FAILED (%s): %s\n", PQgetvalue(r, i, 1), PQgetvalue(r, i, 0));
    PQclear(r);

    /* Every event in the broker (Redis: read the streams back; RabbitMQ:
     * the queues are consumed, the inbox counts above are the check). */
    long tcopies = 0, ucopies = 0, tentries = 0, uentries = 0;
    if (!C.amqp) {
        tentries = check_stream(&C, tc, "transactions", &tcopies);
        uentries = check_stream(&C, uc, "users", &ucopies);
    }
    int skipped = 0;
    for (int i = 0; i < C.nprocs; i++)
        skipped += count_in_file(C.procs[i].log, "SKIPPING duplicate");

    chaos_metric(&C, "transfers", n);
    chaos_metric(&C, "completed",
                 tu_query_ll(tc, "SELECT count(*) FROM transactions WHERE status = 'COMPLETED'"));
    chaos_metric(&C, "failed",
                 tu_query_ll(tc, "SELECT count(*) FROM transactions WHERE status = 'FAILED'"));
    chaos_metric(&C, "ledger_rows", tu_query_ll(tc, "SELECT count(*) FROM ledger_entries"));
    if (!C.amqp)
        chaos_metric(&C, "stream_entries", tentries + uentries);
    chaos_metric(&C, "events_published",
                 tu_query_ll(tc, "SELECT count(*) FROM outbox") +
                     tu_query_ll(uc, "SELECT count(*) FROM outbox"));
    if (!C.amqp)
        chaos_metric(&C, "republished_copies", tcopies + ucopies);
    chaos_metric(&C, "duplicates_skipped_by_inbox", skipped);
    PQfinish(tc);
    PQfinish(uc);
    chaos_finish(&C);
    chaos_ids_free(&txs);
    free(x.tx_id);
    free(dep);
    printf("PASS chaos_%s\n", C.name);
    return 0;
}
