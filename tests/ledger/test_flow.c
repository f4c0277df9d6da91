/* ledger_flow_redis / ledger_flow_amqp: users-service and
 * transactions-service black-box over HTTP, over the broker of the build
 * (LEDGER_BROKER): every validation error, every status transition
 * (PENDING, then COMPLETED, or FAILED with a reason), balances, the
 * Idempotency-Key, no secret anywhere, ack_mode=mark (rows kept,
 * 'processed'), clean shutdown, and the books at the end. */
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "ledger_testlib.h"

static ledger_t L;

static void expect(const char *method, const char *base, const char *path, const char *ctype,
                   const char *body, long want, const char *want_type, const char *want_field)
{
    char url[256];
    snprintf(url, sizeof(url), "%s%s", base, path);
    http_resp_t r;
    long s = http_do(method, url, ctype, NULL, body, body ? strlen(body) : 0, &r);
    CHECK(s == want, "%s %s %s: status %ld, want %ld: %s", method, path, body ? body : "", s, want,
          r.body);
    if (want_type) {
        char t[128];
        json_member(r.body, "type", t, sizeof(t));
        CHECK(strstr(t, want_type), "%s %s %s: type \"%s\", want %s", method, path,
              body ? body : "", t, want_type);
        CHECK(strstr(r.content_type, "problem+json"), "content type %s", r.content_type);
    }
    if (want_field) {
        char f[64];
        json_member(r.body, "field", f, sizeof(f));
        CHECK(!strcmp(f, want_field), "%s %s %s: field \"%s\", want %s", method, path,
              body ? body : "", f, want_field);
    }
}

static void users_errors(void)
{
    const char *J = "application/json", *U = L.users_url;
    expect("POST", U, "/users", J, "{\"password\":\"password123\"}", 400, "validation-error",
           "email");
    expect("POST", U, "/users", J, "{\"email\":42,\"password\":\"password123\"}", 400,
           "validation-error", "email");
    static const char *bad_emails[] = {"no-at-sign",      "a@b",
                                       "@example.com",    "a@@example.com",
                                       "a b@example.com", "a@-example.com",
                                       "a@example..com",  "",
                                       ".a@example.com"};
    for (size_t i = 0; i < sizeof(bad_emails) / sizeof(*bad_emails); i++) {
        char body[256];
        snprintf(body, sizeof(body), "{\"email\":\"%s\",\"password\":\"password123\"}",
                 bad_emails[i]);
        expect("POST", U, "/users", J, body, 400, "validation-error", "email");
    }
    expect("POST", U, "/users", J, "{\"email\":\"x@example.com\"}", 400, "validation-error",
           "password");
    expect("POST", U, "/users", J, "{\"email\":\"x@example.com\",\"password\":\"1234567\"}", 400,
           "validation-error", "password");
    expect("POST", U, "/users", J, "{\"email\":\"x@example.com\",\"password\":12345678}", 400,
           "validation-error", "password");
    expect("POST", U, "/users", J, "{\"email\":", 400, NULL, NULL);
    expect("POST", U, "/users", J, "[1,2]", 400, NULL, NULL);
    expect("POST", U, "/users", "text/plain", "{}", 415, NULL, NULL);
    CHECK(tu_query_ll(L.udb, "SELECT count(*) FROM users") == 0, "a bad request wrote a user");
}

static void tx_errors(const char *a, const char *b)
{
    const char *J = "application/json", *T = L.tx_url, *P = "/api/v1/transactions";
    char body[512];
    expect("POST", T, P, J, "{\"toUserId\":\"01a2297c-a146-75e1-860e-b7d85e7907d7\"}", 400,
           "validation-error", "amount");
    static const char *bad_amounts[] = {"0",    "-5",  "\"100\"", "1.5", "10000000000000000",
                                        "null", "true"};
    for (size_t i = 0; i < sizeof(bad_amounts) / sizeof(*bad_amounts); i++) {
        snprintf(body, sizeof(body), "{\"amount\":%s,\"toUserId\":\"%s\"}", bad_amounts[i], a);
        expect("POST", T, P, J, body, 400, "validation-error", "amount");
    }
    snprintf(body, sizeof(body), "{\"amount\":5,\"fromUserId\":\"no pe\",\"toUserId\":\"%s\"}", a);
    expect("POST", T, P, J, body, 400, "validation-error", "fromUserId");
    snprintf(body, sizeof(body), "{\"amount\":5,\"fromUserId\":\"%s\",\"toUserId\":5}", a);
    expect("POST", T, P, J, body, 400, "validation-error", "toUserId");
    expect("POST", T, P, J, "{\"amount\":5,\"description\":\"nobody\"}", 400, "validation-error",
           "toUserId");
    snprintf(body, sizeof(body), "{\"amount\":5,\"fromUserId\":\"%s\",\"toUserId\":\"%s\"}", a, a);
    expect("POST", T, P, J, body, 400, "validation-error", "toUserId");
    snprintf(body, sizeof(body), "{\"amount\":5,\"description\":7,\"toUserId\":\"%s\"}", b);
    expect("POST", T, P, J, body, 400, "validation-error", "description");
    expect("POST", T, P, J, "{\"amount\":", 400, NULL, NULL);
    expect("POST", T, P, "text/plain", "{}", 415, NULL, NULL);
    expect("GET", T, "/api/v1/transactions/not-a-uuid", NULL, NULL, 400, "invalid-transaction-id",
           NULL);
    expect("GET", T, "/api/v1/transactions/01a2297c-a146-75e1-860e-b7d85e7907d7", NULL, NULL, 404,
           "transaction-not-found", NULL);
    expect("GET", T, "/api/v1/balance/xyz", NULL, NULL, 404, "account-not-found", NULL);
    expect("GET", T, "/api/v1/balance/01a2297c-a146-75e1-860e-b7d85e7907d7", NULL, NULL, 404,
           "account-not-found", NULL);
    CHECK(tu_query_ll(L.tdb, "SELECT count(*) FROM transactions") == 0,
          "a bad request wrote a transaction");
}

static void expect_status(const char *id, const char *want, const char *reason_part)
{
    char st[32], reason[256];
    ledger_tx_status(&L, id, st, sizeof(st), reason, sizeof(reason));
    CHECK(!strcmp(st, want), "transaction %s is %s, want %s", id, st, want);
    if (reason_part)
        CHECK(strstr(reason, reason_part), "transaction %s reason \"%s\", want \"%s\"", id, reason,
              reason_part);
    else
        CHECK(!reason[0], "transaction %s has a reason \"%s\"", id, reason);
}

/* Value of key in a "k=v k=v" conninfo ("" if absent). */
static void conninfo_get(const char *ci, const char *key, char *out, size_t size)
{
    out[0] = '\0';
    size_t kl = strlen(key);
    for (const char *p = ci; (p = strstr(p, key)); p += kl)
        if ((p == ci || p[-1] == ' ') && p[kl] == '=') {
            snprintf(out, size, "%.*s", (int)strcspn(p + kl + 1, " "), p + kl + 1);
            return;
        }
}

/* The seed's environment alone (no DATABASE_URL): SERVER_PORT, DB_HOST,
 * DB_PORT, DB_USER, DB_PASSWORD, DB_NAME, OUTBOX_WORKER_INTERVAL; ack_mode
 * is mark without being asked. */
static void seed_environment(void)
{
    char host[128], port[16], user[64], dbname[128], env[10][256];
    conninfo_get(L.users_db, "host", host, sizeof(host));
    conninfo_get(L.users_db, "port", port, sizeof(port));
    conninfo_get(L.users_db, "user", user, sizeof(user));
    conninfo_get(L.users_db, "dbname", dbname, sizeof(dbname));
    int http = tu_free_port();
    snprintf(env[0], sizeof(env[0]), "DATABASE_URL=");
    snprintf(env[1], sizeof(env[1]), "DB_HOST=%s", host[0] ? host : "127.0.0.1");
    snprintf(env[2], sizeof(env[2]), "DB_PORT=%s", port[0] ? port : "5432");
    snprintf(env[3], sizeof(env[3]), "DB_USER=%s", user[0] ? user : "postgres");
    snprintf(env[4], sizeof(env[4]), "DB_PASSWORD=postgres");
    snprintf(env[5], sizeof(env[5]), "DB_NAME=%s", dbname);
    snprintf(env[6], sizeof(env[6]), "SERVER_PORT=%d", http);
    snprintf(env[7], sizeof(env[7]), "OUTBOX_WORKER_INTERVAL=5s");
    snprintf(env[8], sizeof(env[8]), "OUTBOX_SINK=%s", L.sink);
    snprintf(env[9], sizeof(env[9]), "OUTBOX_METRICS_ADDR=off");
    char *envp[11];
    for (int i = 0; i < 10; i++)
        envp[i] = env[i];
    envp[10] = NULL;
    char log[256];
    snprintf(log, sizeof(log), "%s/../tests/ledger-%s-seed-env.log", OUTBOX_BIN_DIR, L.name);
    unlink(log);
    char *argv[] = {(char *)tu_bin("users-service"), NULL};
    pid_t pid = tu_spawn(argv, envp, log);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/readyz", http);
    http_resp_t r;
    int ready = 0;
    for (int i = 0; i < 600 && !ready; i++) {
        ready = http_do("GET", url, NULL, NULL, NULL, 0, &r) == 200;
        if (!ready) {
            CHECK(tu_wait(pid, 0) == -1, "users-service (seed env) exited; see %s", log);
            tu_sleep_ms(50);
        }
    }
    CHECK(ready, "users-service (seed env) not ready on SERVER_PORT %d; see %s", http, log);
    CHECK(count_in_file(log, "poll_interval=5s") == 1 && count_in_file(log, "ack_mode=mark") == 1,
          "the seed environment was not honoured; see %s", log);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/users", http);
    const char *body = "{\"email\":\"seed@example.com\",\"password\":\"password123\"}";
    CHECK(http_do("POST", url, "application/json", NULL, body, strlen(body), &r) == 201,
          "POST /users on the seed-env service: %ld %s", r.status, r.body);
    CHECK(wait_ll(L.udb,
                  "SELECT count(*) FROM outbox WHERE status = 'processed' AND payload::text LIKE "
                  "'%seed@example.com%'",
                  1, 30000) == 1,
          "the seed-env service's event was not published and marked processed");
    kill(pid, SIGTERM);
    CHECK(tu_wait(pid, 30000) == 0, "users-service (seed env) did not stop cleanly; see %s", log);
}

int main(void)
{
#ifndef LEDGER_BROKER
#define LEDGER_BROKER LEDGER_REDIS
#endif
    ledger_init(&L, LEDGER_BROKER == LEDGER_AMQP ? "ledger_flow_amqp" : "ledger_flow_redis",
                LEDGER_BROKER);
    /* The API alone (PENDING stays PENDING), the relay + consumers apart. */
    ledger_add(&L, "tx-api", 1, 1, "--no-relay", "--no-consumers", NULL);
    lproc_t *worker = ledger_add(&L, "tx-worker", 1, 0, "--no-api", NULL, NULL);
    ledger_add(&L, "users", 0, 1, NULL, NULL, NULL);

    users_errors();
    const char *pw_a = "correct horse battery", *pw_b = "pässwörd-ß€";
    char a[37], b[37], b2[37], stranger[37];
    CHECK(ledger_create_user(&L, "Alice@Example.COM", pw_a, a) == 201, "create alice");
    CHECK(outbox_uuid_valid(a), "alice id %s", a);
    CHECK(ledger_create_user(&L, "alice@example.com", "another-password", NULL) == 409,
          "duplicate email (case-insensitive) must be 409");
    {
        char url[128];
        snprintf(url, sizeof(url), "%s/users", L.users_url);
        char body[256];
        snprintf(body, sizeof(body), "{\"email\":\"bob@example.com\",\"password\":\"%s\"}", pw_b);
        http_resp_t r, r2, r3;
        CHECK(http_do("POST", url, "application/json", "key-bob", body, strlen(body), &r) == 201,
              "bob: %s", r.body);
        json_t *o = json_loads(r.body, 0, NULL);
        CHECK(json_integer_value(json_object_get(o, "code")) == 201, "code: %s", r.body);
        CHECK(
            !strcmp(json_string_value(json_object_get(o, "message")), "user created successfully"),
            "message: %s", r.body);
        snprintf(b, sizeof(b), "%s",
                 json_string_value(json_object_get(json_object_get(o, "data"), "id")));
        json_decref(o);
        CHECK(http_do("POST", url, "application/json", "key-bob", body, strlen(body), &r2) == 201 &&
                  r2.replayed && !strcmp(r.body, r2.body),
              "replay with the same key: %ld %s", r2.status, r2.body);
        const char *other = "{\"email\":\"carol@example.com\",\"password\":\"password123\"}";
        CHECK(http_do("POST", url, "application/json", "key-bob", other, strlen(other), &r3) == 422,
              "same key, other email: %ld %s", r3.status, r3.body);
    }
    CHECK(ledger_create_user(&L, "stranger@example.org", "password123", stranger) == 201,
          "stranger");
    CHECK(tu_query_ll(L.udb, "SELECT count(*) FROM users") == 3, "3 users");
    CHECK(tu_query_ll(L.udb, "SELECT count(*) FROM users WHERE password_hash LIKE "
                             "'$argon2id$v=19$%'") == 3,
          "every password stored as an Argon2id hash");

    /* Accounts come from UserCreated events only. */
    ledger_wait_account(&L, a, 30000);
    ledger_wait_account(&L, b, 30000);
    ledger_wait_account(&L, stranger, 30000);
    CHECK(ledger_balance(&L, a) == 0, "new account starts at 0");
    tx_errors(a, b);

    /* Phase A: the worker is down: PENDING, and it stays PENDING. */
    ledger_stop(worker);
    char dep[37];
    CHECK(ledger_post_tx(&L, 1000, NULL, a, dep) == 202, "deposit");
    expect_status(dep, "PENDING", NULL);
    {
        char url[128];
        snprintf(url, sizeof(url), "%s/api/v1/transactions", L.tx_url);
        char body[256];
        snprintf(body, sizeof(body), "{\"amount\":50,\"description\":\"d2\",\"toUserId\":\"%s\"}",
                 stranger);
        http_resp_t r, r2;
        CHECK(http_do("POST", url, "application/json", "key-dep", body, strlen(body), &r) == 202,
              "keyed deposit: %s", r.body);
        CHECK(http_do("POST", url, "application/json", "key-dep", body, strlen(body), &r2) == 202 &&
                  r2.replayed && !strcmp(r.body, r2.body),
              "keyed deposit replay: %s", r2.body);
        char st[32];
        json_member(r.body, "status", st, sizeof(st));
        CHECK(!strcmp(st, "PENDING"), "POST answers PENDING: %s", r.body);
    }
    tu_sleep_ms(300); /* nothing can decide it: it must still be PENDING */
    expect_status(dep, "PENDING", NULL);
    ledger_spawn(&L, worker);
    CHECK(!strcmp(ledger_wait_decided(&L, dep, 30000), "COMPLETED"), "deposit not COMPLETED");
    expect_status(dep, "COMPLETED", NULL);
    CHECK(ledger_balance(&L, a) == 1000, "alice after the deposit: %lld", ledger_balance(&L, a));

    /* Phase B: outcomes that do not depend on each other's order. */
    char t1[37], wd[37], poor[37], unknown_to[37], unknown_from[37], seedstyle[37];
    CHECK(ledger_post_tx(&L, 300, a, b, t1) == 202, "transfer");
    CHECK(ledger_post_tx(&L, 100, a, NULL, wd) == 202, "withdrawal");
    CHECK(ledger_post_tx(&L, 5000, b, a, poor) == 202, "insufficient");
    CHECK(ledger_post_tx(&L, 10, a, "01a2297c-0000-7000-8000-000000000001", unknown_to) == 202,
          "to unknown");
    CHECK(ledger_post_tx(&L, 10, "01a2297c-0000-7000-8000-000000000002", b, unknown_from) == 202,
          "from unknown");
    /* Seed 002's own example names users "user-1" and "user-2": accepted,
     * then FAILED (no account has such an id). */
    CHECK(ledger_post_tx(&L, 100, "user-1", "user-2", seedstyle) == 202, "seed-style ids");
    ledger_wait_settled(&L, 60000);
    expect_status(t1, "COMPLETED", NULL);
    expect_status(wd, "COMPLETED", NULL);
    expect_status(poor, "FAILED", "insufficient funds");
    expect_status(unknown_to, "FAILED", "(toUserId)");
    expect_status(unknown_from, "FAILED", "(fromUserId)");
    expect_status(seedstyle, "FAILED", "unknown user user-1 (fromUserId)");
    CHECK(ledger_balance(&L, a) == 600, "alice: %lld", ledger_balance(&L, a));
    CHECK(ledger_balance(&L, b) == 300, "bob: %lld", ledger_balance(&L, b));
    CHECK(ledger_balance(&L, stranger) == 50, "stranger: %lld", ledger_balance(&L, stranger));
    ledger_check_books(&L, 1000 + 50 - 100);

    /* ack_mode=mark: rows kept as processed (the seed's PENDING -> PROCESSED). */
    CHECK(tu_query_ll(L.tdb, "SELECT count(*) FROM outbox WHERE status = 'processed'") == 2 * 8,
          "transactions outbox: 8 created + 8 outcomes, processed");
    CHECK(tu_query_ll(L.udb, "SELECT count(*) FROM outbox WHERE status = 'processed' AND type = "
                             "'UserCreated'") == 3,
          "users outbox: 3 UserCreated, processed");
    /* No secret in any event, row or log line. */
    CHECK(tu_query_ll(L.udb, "SELECT count(*) FROM outbox WHERE payload::text ILIKE '%password%'"
                             " OR payload::text LIKE '%argon2%'") == 0,
          "a UserCreated event carries a secret");
    CHECK(tu_query_ll(L.udb, "SELECT count(*) FROM users WHERE password_hash LIKE '%horse%'") == 0,
          "plain password stored");
    for (int i = 0; i < L.nprocs; i++) {
        CHECK(count_in_file(L.procs[i].log, pw_a) == 0, "password in %s", L.procs[i].log);
        CHECK(count_in_file(L.procs[i].log, "horse") == 0, "password in %s", L.procs[i].log);
        CHECK(count_in_file(L.procs[i].log, "argon2id") == 0, "hash in %s", L.procs[i].log);
    }
    (void)b2;
    seed_environment();
    CHECK(wait_ll(L.tdb, "SELECT count(*) FROM accounts WHERE kind = 'user'", 4, 30000) == 4,
          "no account for the user created through the seed environment");
    ledger_teardown(&L); /* every process must exit 0 on SIGTERM */
    printf("PASS ledger flow over %s\n", LEDGER_BROKER == LEDGER_AMQP ? "RabbitMQ" : "Redis");
    return 0;
}
