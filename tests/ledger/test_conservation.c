/* ledger_conservation (Redis Streams) / ledger_conservation_amqp (RabbitMQ):
 * 50 users, 5,000 concurrent random transfers (100
 * requests in flight at a time), while the transaction processor and the
 * relays of both services are SIGKILLed at random moments and restarted.
 * At the end the users' balances still sum to what was deposited, every
 * transaction is COMPLETED or FAILED with exactly one outcome event, no
 * account is debited twice for one transaction, and the ledger's debits
 * equal its credits (ledger_check_books).
 *
 * Sizes: LEDGER_USERS (50), LEDGER_TRANSFERS (5000), LEDGER_KILLS (8);
 * LEDGER_SEED fixes the random choices (printed). */
#include <string.h>

#include "ledger_testlib.h"

#define DEPOSIT 10000LL
#define IN_FLIGHT 100

static ledger_t L;

static int env_int(const char *name, int dflt)
{
    const char *v = getenv(name);
    return v && atoi(v) > 0 ? atoi(v) : dflt;
}

static void crash_and_restart(lproc_t *p, int *kills)
{
    printf("SIGKILL %s (pid %d)\n", p->name, (int)p->pid);
    fflush(stdout);
    ledger_kill(p);
    ledger_spawn(&L, p);
    (*kills)++;
}

int main(void)
{
    int nusers = env_int("LEDGER_USERS", 50), ntx = env_int("LEDGER_TRANSFERS", 5000),
        nkills = env_int("LEDGER_KILLS", 8);
    unsigned seed = (unsigned)env_int("LEDGER_SEED", (int)(tu_now_ms() % 1000000));
    srand(seed);
    printf("users %d, transfers %d, kills %d, seed %u\n", nusers, ntx, nkills, seed);

#ifndef LEDGER_BROKER
#define LEDGER_BROKER LEDGER_REDIS
#endif
    ledger_init(&L,
                LEDGER_BROKER == LEDGER_AMQP ? "ledger_conservation_amqp" : "ledger_conservation",
                LEDGER_BROKER);
    lproc_t *tx_relay = ledger_add(&L, "tx-relay", 1, 0, "--no-api", "--no-consumers", NULL);
    lproc_t *tx_proc = ledger_add(&L, "tx-proc", 1, 0, "--no-api", "--no-relay", NULL);
    ledger_add(&L, "tx-api", 1, 1, "--no-relay", "--no-consumers", NULL);
    lproc_t *u_relay = ledger_add(&L, "users-relay", 0, 0, "--no-api", NULL, NULL);
    ledger_add(&L, "users-api", 0, 1, "--no-relay", NULL, NULL);
    lproc_t *victims[3] = {tx_proc, tx_relay, u_relay};
    int kills = 0;

    /* Users, all at once; the users relay crashes while they are written. */
    char **bodies = calloc((size_t)(ntx > nusers ? ntx : nusers), sizeof(char *));
    http_resp_t *resp = calloc(IN_FLIGHT > nusers ? IN_FLIGHT : (size_t)nusers, sizeof(*resp));
    char(*ids)[37] = calloc((size_t)nusers, 37);
    CHECK(bodies && resp && ids, "oom");
    for (int i = 0; i < nusers; i++) {
        bodies[i] = malloc(128);
        snprintf(bodies[i], 128, "{\"email\":\"user%d@example.com\",\"password\":\"secret-%d!\"}",
                 i, i);
    }
    char url[160];
    snprintf(url, sizeof(url), "%s/users", L.users_url);
    http_post_many(url, nusers, (const char *const *)bodies, NULL, resp);
    crash_and_restart(u_relay, &kills);
    for (int i = 0; i < nusers; i++) {
        CHECK(resp[i].status == 201, "user %d: %ld %s", i, resp[i].status, resp[i].body);
        json_t *o = json_loads(resp[i].body, 0, NULL);
        snprintf(ids[i], 37, "%s",
                 json_string_value(json_object_get(json_object_get(o, "data"), "id")));
        json_decref(o);
        free(bodies[i]);
    }
    char q[128];
    snprintf(q, sizeof(q), "SELECT count(*) FROM accounts WHERE kind = 'user'");
    CHECK(wait_ll(L.tdb, q, nusers, 60000) == nusers, "not every user got an account");

    /* Money enters: one deposit per user. */
    snprintf(url, sizeof(url), "%s/api/v1/transactions", L.tx_url);
    for (int i = 0; i < nusers; i++) {
        bodies[i] = malloc(160);
        snprintf(bodies[i], 160,
                 "{\"amount\":%lld,\"description\":\"deposit\",\"toUserId\":\"%s\"}", DEPOSIT,
                 ids[i]);
    }
    http_post_many(url, nusers, (const char *const *)bodies, NULL, resp);
    for (int i = 0; i < nusers; i++) {
        CHECK(resp[i].status == 202, "deposit %d: %ld %s", i, resp[i].status, resp[i].body);
        free(bodies[i]);
    }
    ledger_wait_settled(&L, 60000);
    const long long total = DEPOSIT * nusers;
    ledger_check_books(&L, total);

    /* Transfers, IN_FLIGHT at a time; crashes at random rounds. */
    int rounds = (ntx + IN_FLIGHT - 1) / IN_FLIGHT;
    char *crash_round = calloc((size_t)rounds + 1, 1);
    for (int k = 0; k < nkills - 2 && rounds > 0; k++)
        crash_round[rand() % rounds] = 1;
    long long t0 = tu_now_ms();
    for (int r = 0, sent = 0; r < rounds; r++) {
        int n = ntx - sent < IN_FLIGHT ? ntx - sent : IN_FLIGHT;
        for (int i = 0; i < n; i++) {
            int a = rand() % nusers, b = rand() % (nusers - 1);
            if (b >= a)
                b++;
            bodies[i] = malloc(200);
            snprintf(bodies[i], 200,
                     "{\"amount\":%d,\"description\":\"t%d\",\"fromUserId\":\"%s\",\"toUserId\":"
                     "\"%s\"}",
                     1 + rand() % 3000, sent + i, ids[a], ids[b]);
        }
        http_post_many(url, n, (const char *const *)bodies, NULL, resp);
        for (int i = 0; i < n; i++) {
            CHECK(resp[i].status == 202, "transfer %d: %ld %s", sent + i, resp[i].status,
                  resp[i].body);
            free(bodies[i]);
        }
        sent += n;
        if (crash_round[r]) {
            tu_sleep_ms(rand() % 200); /* a random moment inside the work that follows */
            crash_and_restart(victims[rand() % 3], &kills);
        }
    }
    printf("%d transfers accepted in %lld ms\n", ntx, tu_now_ms() - t0);
    /* Two more while the backlog drains: the processor, then the relay. */
    tu_sleep_ms(200 + rand() % 500);
    crash_and_restart(tx_proc, &kills);
    tu_sleep_ms(200 + rand() % 500);
    crash_and_restart(tx_relay, &kills);
    printf("%d crashes\n", kills);
    fflush(stdout);

    ledger_wait_settled(&L, 150000);
    CHECK(tu_query_ll(L.tdb, "SELECT count(*) FROM transactions") == ntx + nusers,
          "transactions: want %d", ntx + nusers);
    ledger_check_books(&L, total);
    long long sum = 0;
    for (int i = 0; i < nusers; i++)
        sum += ledger_balance(&L, ids[i]);
    CHECK(sum == total, "balances over HTTP sum to %lld, want %lld", sum, total);
    int dups = 0;
    for (int i = 0; i < L.nprocs; i++)
        dups += count_in_file(L.procs[i].log, "SKIPPING duplicate");
    printf("duplicate deliveries skipped by the inbox: %d\n", dups);
    ledger_teardown(&L);
    free(bodies);
    free(resp);
    free(ids);
    free(crash_round);
    printf("PASS %s: %d users, %d transfers, %d crashes, sum %lld kept\n", L.name, nusers, ntx,
           kills, total);
    return 0;
}
