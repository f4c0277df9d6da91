#include "ledger_testlib.h"

#include <curl/curl.h>
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../amqp/amqptest.h"

static ledger_t *g_L; /* for the atexit clean-up */

static void cleanup(void)
{
    if (!g_L)
        return;
    for (int i = 0; i < g_L->nprocs; i++)
        if (g_L->procs[i].pid > 0) {
            kill(g_L->procs[i].pid, SIGKILL);
            tu_wait(g_L->procs[i].pid, 5000);
            g_L->procs[i].pid = 0;
        }
    if (g_L->redis_pid > 0) {
        kill(g_L->redis_pid, SIGKILL);
        tu_wait(g_L->redis_pid, 5000);
        g_L->redis_pid = 0;
    }
}

static void redis_start(ledger_t *L)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", L->redis_port);
    int aof = L->broker == LEDGER_REDIS_AOF;
    char *argv[] = {"redis-server",     "--port",        port,     "--bind",
                    "127.0.0.1",        "--save",        "",       "--appendonly",
                    aof ? "yes" : "no", "--appendfsync", "always", "--dir",
                    L->redis_dir,       "--logfile",     "",       NULL};
    L->redis_pid = tu_spawn(argv, NULL, "/dev/null");
    for (int i = 0; i < 400; i++) {
        redisContext *r = redisConnect("127.0.0.1", L->redis_port);
        int ok = r && !r->err;
        redisReply *rep = ok ? redisCommand(r, "PING") : NULL;
        ok = rep && rep->type == REDIS_REPLY_STATUS;
        if (rep)
            freeReplyObject(rep);
        if (r)
            redisFree(r);
        if (ok)
            return;
        tu_sleep_ms(25);
    }
    CHECK(0, "redis-server did not start on port %d", L->redis_port);
}

void ledger_init(ledger_t *L, const char *name, ledger_broker_t broker)
{
    memset(L, 0, sizeof(*L));
    snprintf(L->name, sizeof(L->name), "%s", name);
    L->broker = broker;
    char n[96];
    snprintf(n, sizeof(n), "%s_users", name);
    snprintf(L->users_db, sizeof(L->users_db), "%s", tu_fresh_db(n));
    snprintf(n, sizeof(n), "%s_tx", name);
    snprintf(L->tx_db, sizeof(L->tx_db), "%s", tu_fresh_db(n));
    curl_global_init(CURL_GLOBAL_DEFAULT);
    g_L = L;
    atexit(cleanup);
    if (broker == LEDGER_AMQP) {
        snprintf(L->sink, sizeof(L->sink), "%s", ta_start());
        ledger_env(L, "OUTBOX_AMQP_MANDATORY=true"); /* no queue bound yet: retry, not drop */
    } else {
        char h[64];
        int p;
        tu_redis_addr(h, sizeof(h), &p); /* skips without test servers */
        L->redis_port = tu_free_port();
        snprintf(L->redis_dir, sizeof(L->redis_dir), "%s/../tests/redis-%s", OUTBOX_BIN_DIR, name);
        mkdir(L->redis_dir, 0755);
        char f[512];
        snprintf(f, sizeof(f), "%s/appendonly.aof", L->redis_dir);
        unlink(f);
        snprintf(f, sizeof(f), "rm -rf '%s/appendonlydir'", L->redis_dir);
        CHECK(system(f) == 0, "rm appendonlydir");
        redis_start(L);
        snprintf(L->sink, sizeof(L->sink), "redis://127.0.0.1:%d", L->redis_port);
    }
    L->udb = tu_connect(L->users_db);
    L->tdb = tu_connect(L->tx_db);
    printf("ledger test %s: broker %s\n", name, L->sink);
    fflush(stdout);
}

void ledger_env(ledger_t *L, const char *kv)
{
    CHECK(L->nextra < 12, "too many env entries");
    snprintf(L->extra_env[L->nextra++], sizeof(L->extra_env[0]), "%s", kv);
}

void ledger_spawn(ledger_t *L, lproc_t *p)
{
    static char env[32][1200];
    char *envp[34];
    int k = 0;
    snprintf(env[k], sizeof(env[k]), "DATABASE_URL=%s", p->service ? L->tx_db : L->users_db);
    envp[k] = env[k], k++;
    snprintf(env[k], sizeof(env[k]), "OUTBOX_SINK=%s", L->sink), envp[k] = env[k], k++;
    if (p->port)
        snprintf(env[k], sizeof(env[k]), "SERVER_PORT=%d", p->port), envp[k] = env[k], k++;
    snprintf(env[k], sizeof(env[k]), "OUTBOX_METRICS_ADDR=off"), envp[k] = env[k], k++;
    snprintf(env[k], sizeof(env[k]), "OUTBOX_HTTP_ADDR=127.0.0.1"), envp[k] = env[k], k++;
    snprintf(env[k], sizeof(env[k]), "OUTBOX_CONSUMER_CLAIM_IDLE=2s"), envp[k] = env[k], k++;
    snprintf(env[k], sizeof(env[k]), "OUTBOX_WORKER_INTERVAL=500ms"), envp[k] = env[k], k++;
    snprintf(env[k], sizeof(env[k]), "OUTBOX_WORKERS=2"), envp[k] = env[k], k++;
    for (int i = 0; i < L->nextra; i++)
        snprintf(env[k], sizeof(env[k]), "%s", L->extra_env[i]), envp[k] = env[k], k++;
    envp[k] = NULL;
    char *argv[6] = {(char *)tu_bin(p->bin)};
    int a = 1;
    for (int i = 0; i < p->nargs; i++)
        argv[a++] = p->args[i];
    argv[a] = NULL;
    p->pid = tu_spawn(argv, envp, p->log);
    if (!p->port) {
        tu_sleep_ms(100);
        CHECK(tu_wait(p->pid, 0) == -1, "%s exited at once; see %s", p->name, p->log);
        return;
    }
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/readyz", p->port);
    http_resp_t r;
    for (int i = 0; i < 600; i++) {
        if (http_do("GET", url, NULL, NULL, NULL, 0, &r) == 200)
            return;
        CHECK(tu_wait(p->pid, 0) == -1, "%s exited early; see %s", p->name, p->log);
        tu_sleep_ms(50);
    }
    CHECK(0, "%s not ready after 30 s; see %s", p->name, p->log);
}

lproc_t *ledger_add(ledger_t *L, const char *name, int service, int api, const char *a1,
                    const char *a2, const char *a3)
{
    CHECK(L->nprocs < LEDGER_MAX_PROCS, "too many processes");
    lproc_t *p = &L->procs[L->nprocs++];
    memset(p, 0, sizeof(*p));
    snprintf(p->name, sizeof(p->name), "%s", name);
    snprintf(p->bin, sizeof(p->bin), "%s", service ? "transactions-service" : "users-service");
    p->service = service;
    const char *as[3] = {a1, a2, a3};
    for (int i = 0; i < 3; i++)
        if (as[i])
            snprintf(p->args[p->nargs++], sizeof(p->args[0]), "%s", as[i]);
    if (api) {
        p->port = tu_free_port();
        snprintf(service ? L->tx_url : L->users_url, sizeof(L->tx_url), "http://127.0.0.1:%d",
                 p->port);
    }
    char test[64];
    snprintf(test, sizeof(test), "%s", L->name);
    snprintf(p->log, sizeof(p->log), "%s/../tests/ledger-%s-%s.log", OUTBOX_BIN_DIR, test, name);
    unlink(p->log);
    ledger_spawn(L, p);
    return p;
}

void ledger_start_all_in_one(ledger_t *L)
{
    ledger_add(L, "tx", 1, 1, NULL, NULL, NULL);
    ledger_add(L, "users", 0, 1, NULL, NULL, NULL);
}

void ledger_kill(lproc_t *p)
{
    if (p->pid <= 0)
        return;
    kill(p->pid, SIGKILL);
    tu_wait(p->pid, 10000);
    p->pid = 0;
}

void ledger_stop(lproc_t *p)
{
    if (p->pid <= 0)
        return;
    kill(p->pid, SIGTERM);
    int rc = tu_wait(p->pid, 30000);
    if (rc == -1) {
        kill(p->pid, SIGKILL);
        tu_wait(p->pid, 5000);
    }
    p->pid = 0;
    CHECK(rc == 0, "%s did not stop cleanly on SIGTERM (status %d); see %s", p->name, rc, p->log);
}

void ledger_teardown(ledger_t *L)
{
    for (int i = 0; i < L->nprocs; i++)
        ledger_stop(&L->procs[i]);
    if (L->redis_pid > 0) {
        tu_stop(L->redis_pid);
        L->redis_pid = 0;
    }
    PQfinish(L->udb);
    PQfinish(L->tdb);
    L->udb = L->tdb = NULL;
    g_L = NULL;
}

void ledger_broker_stop(ledger_t *L)
{
    if (L->broker == LEDGER_AMQP) {
        ta_halt();
        return;
    }
    tu_stop(L->redis_pid); /* SIGTERM: Redis writes its AOF and exits */
    L->redis_pid = 0;
}

void ledger_broker_restart(ledger_t *L)
{
    if (L->broker == LEDGER_AMQP) {
        ta_restart();
        return;
    }
    redis_start(L);
}

static const char *member_of(const char *json, const char *path1, const char *path2, char *out,
                             size_t size)
{
    out[0] = '\0';
    json_t *o = json_loads(json, 0, NULL);
    json_t *v = json_object_get(o, path1);
    if (path2)
        v = json_object_get(v, path2);
    if (json_is_string(v))
        snprintf(out, size, "%s", json_string_value(v));
    json_decref(o);
    return out;
}

long ledger_create_user(ledger_t *L, const char *email, const char *password, char *id)
{
    json_t *b = json_pack("{s:s,s:s}", "email", email, "password", password);
    char *body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    char url[128];
    snprintf(url, sizeof(url), "%s/users", L->users_url);
    http_resp_t r;
    http_do("POST", url, "application/json", NULL, body, strlen(body), &r);
    free(body);
    if (id) {
        id[0] = '\0';
        if (r.status == 201)
            member_of(r.body, "data", "id", id, 37);
    }
    return r.status;
}

long ledger_post_tx(ledger_t *L, long long amount, const char *from, const char *to, char *id)
{
    json_t *b = json_pack("{s:I,s:s}", "amount", (json_int_t)amount, "description", "test");
    if (from)
        json_object_set_new(b, "fromUserId", json_string(from));
    if (to)
        json_object_set_new(b, "toUserId", json_string(to));
    char *body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    char url[128];
    snprintf(url, sizeof(url), "%s/api/v1/transactions", L->tx_url);
    http_resp_t r;
    http_do("POST", url, "application/json", NULL, body, strlen(body), &r);
    free(body);
    if (id) {
        id[0] = '\0';
        if (r.status == 202)
            member_of(r.body, "transactionId", NULL, id, 37);
    }
    return r.status;
}

void ledger_tx_status(ledger_t *L, const char *id, char *status, size_t ssize, char *reason,
                      size_t rsize)
{
    char url[160];
    snprintf(url, sizeof(url), "%s/api/v1/transactions/%s", L->tx_url, id);
    http_resp_t r;
    status[0] = '\0';
    if (reason)
        reason[0] = '\0';
    if (http_do("GET", url, NULL, NULL, NULL, 0, &r) != 200)
        return;
    member_of(r.body, "status", NULL, status, ssize);
    if (reason)
        member_of(r.body, "reason", NULL, reason, rsize);
}

const char *ledger_wait_decided(ledger_t *L, const char *id, int timeout_ms)
{
    static char st[32];
    long long end = tu_now_ms() + timeout_ms;
    for (;;) {
        ledger_tx_status(L, id, st, sizeof(st), NULL, 0);
        if ((st[0] && strcmp(st, "PENDING")) || tu_now_ms() >= end)
            return st;
        tu_sleep_ms(50);
    }
}

long long ledger_balance(ledger_t *L, const char *user)
{
    char url[160];
    snprintf(url, sizeof(url), "%s/api/v1/balance/%s", L->tx_url, user);
    http_resp_t r;
    long s = http_do("GET", url, NULL, NULL, NULL, 0, &r);
    if (s == 404)
        return -1;
    CHECK(s == 200, "GET %s: %ld %s", url, s, r.body);
    json_t *o = json_loads(r.body, 0, NULL);
    long long b = (long long)json_integer_value(json_object_get(o, "balance"));
    json_decref(o);
    return b;
}

void ledger_wait_account(ledger_t *L, const char *user, int timeout_ms)
{
    long long end = tu_now_ms() + timeout_ms;
    while (ledger_balance(L, user) < 0) {
        CHECK(tu_now_ms() < end, "no account for user %s after %d ms (UserCreated not applied)",
              user, timeout_ms);
        tu_sleep_ms(50);
    }
}

void ledger_wait_settled(ledger_t *L, int timeout_ms)
{
    long long end = tu_now_ms() + timeout_ms, t0 = tu_now_ms();
    for (;;) {
        long long pend = tu_query_ll(L->tdb, "SELECT count(*) FROM transactions WHERE status = "
                                             "'PENDING'");
        long long tx_out = tu_query_ll(L->tdb, "SELECT count(*) FROM outbox WHERE status <> "
                                               "'processed'");
        long long u_out = tu_query_ll(L->udb, "SELECT count(*) FROM outbox WHERE status <> "
                                              "'processed'");
        if (pend == 0 && tx_out == 0 && u_out == 0) {
            printf("settled in %lld ms\n", tu_now_ms() - t0);
            fflush(stdout);
            return;
        }
        CHECK(tu_now_ms() < end,
              "not settled after %d ms: %lld transactions PENDING, %lld/%lld outbox rows not "
              "processed (transactions/users)",
              timeout_ms, pend, tx_out, u_out);
        tu_sleep_ms(100);
    }
}

static void expect_zero(PGconn *c, const char *what, const char *sql)
{
    long long n = tu_query_ll(c, sql);
    CHECK(n == 0, "%s: %lld (%s)", what, n, sql);
}

void ledger_check_books(ledger_t *L, long long want_user_sum)
{
    PGconn *c = L->tdb;
    expect_zero(c, "transactions still PENDING",
                "SELECT count(*) FROM transactions WHERE status = 'PENDING'");
    expect_zero(c, "transactions without exactly one outcome event",
                "SELECT count(*) FROM transactions t LEFT JOIN (SELECT key, count(*) AS n"
                " FROM outbox WHERE type IN ('TransactionCompleted', 'TransactionFailed')"
                " GROUP BY key) o ON o.key = t.id::text WHERE o.n IS DISTINCT FROM 1");
    expect_zero(c, "outcome events that disagree with the status",
                "SELECT count(*) FROM outbox o JOIN transactions t ON o.key = t.id::text"
                " WHERE (o.type = 'TransactionCompleted' AND t.status <> 'COMPLETED')"
                "    OR (o.type = 'TransactionFailed' AND t.status <> 'FAILED')");
    expect_zero(c, "transactions without exactly one TransactionCreated event",
                "SELECT count(*) FROM transactions t LEFT JOIN (SELECT key, count(*) AS n"
                " FROM outbox WHERE type = 'TransactionCreated' GROUP BY key) o"
                " ON o.key = t.id::text WHERE o.n IS DISTINCT FROM 1");
    expect_zero(c, "COMPLETED transactions without one DEBIT and one CREDIT of their amount",
                "SELECT count(*) FROM transactions t LEFT JOIN (SELECT transaction_id,"
                " count(*) AS n, count(*) FILTER (WHERE side = 'DEBIT') AS d,"
                " count(*) FILTER (WHERE side = 'CREDIT') AS c, min(amount) AS lo,"
                " max(amount) AS hi FROM ledger_entries GROUP BY 1) e"
                " ON e.transaction_id = t.id WHERE t.status = 'COMPLETED' AND"
                " (e.n = 2 AND e.d = 1 AND e.c = 1 AND e.lo = t.amount AND e.hi = t.amount)"
                " IS NOT TRUE");
    expect_zero(c, "accounts debited twice for one transaction",
                "SELECT count(*) FROM (SELECT transaction_id, account_id FROM ledger_entries"
                " WHERE side = 'DEBIT' GROUP BY 1, 2 HAVING count(*) > 1) x");
    expect_zero(c, "ledger rows of FAILED transactions",
                "SELECT count(*) FROM ledger_entries e JOIN transactions t"
                " ON t.id = e.transaction_id WHERE t.status <> 'COMPLETED'");
    expect_zero(c, "debits minus credits",
                "SELECT coalesce(sum(CASE side WHEN 'DEBIT' THEN amount ELSE -amount END), 0)"
                " FROM ledger_entries");
    expect_zero(c, "accounts whose balance is not credits - debits",
                "SELECT count(*) FROM accounts a LEFT JOIN (SELECT account_id,"
                " sum(CASE side WHEN 'CREDIT' THEN amount ELSE -amount END) AS net"
                " FROM ledger_entries GROUP BY 1) e ON e.account_id = a.user_id"
                " WHERE a.balance <> coalesce(e.net, 0)");
    expect_zero(c, "sum of all balances (users + external)",
                "SELECT coalesce(sum(balance), 0) FROM accounts");
    expect_zero(c, "negative user balances",
                "SELECT count(*) FROM accounts WHERE kind = 'user' AND balance < 0");
    expect_zero(c, "transactions in the dead-letter table",
                "SELECT count(*) FROM outbox_dead_letter");
    expect_zero(c, "ledger messages handled twice (inbox)",
                "SELECT count(*) - count(DISTINCT (consumer, message_id)) FROM outbox_inbox");
    expect_zero(L->udb, "UserCreated events in the dead-letter table",
                "SELECT count(*) FROM outbox_dead_letter");
    expect_zero(c, "accounts opened for users that users_db does not have (or vice versa)",
                "SELECT abs((SELECT count(*) FROM accounts WHERE kind = 'user') - "
                "(SELECT count(DISTINCT consumer || message_id::text) FROM outbox_inbox"
                " WHERE consumer = 'accounts'))");
    if (want_user_sum >= 0) {
        long long sum =
            tu_query_ll(c, "SELECT coalesce(sum(balance), 0) FROM accounts WHERE kind = 'user'");
        CHECK(sum == want_user_sum, "users' balances sum to %lld, want %lld", sum, want_user_sum);
    }
    long long done = tu_query_ll(c, "SELECT count(*) FROM transactions WHERE status='COMPLETED'"),
              failed = tu_query_ll(c, "SELECT count(*) FROM transactions WHERE status='FAILED'");
    printf("books balance: %lld COMPLETED, %lld FAILED, %lld ledger rows\n", done, failed,
           tu_query_ll(c, "SELECT count(*) FROM ledger_entries"));
    fflush(stdout);
}

/* ---- RabbitMQ raw helpers ---- */

void ledger_amqp_limiter(const char *exchange, const char *queue, int maxlen)
{
    amqp_connection_state_t c = ta_raw_connect();
    amqp_exchange_declare(c, 1, amqp_cstring_bytes(exchange), amqp_cstring_bytes("topic"), 0, 1, 0,
                          0, amqp_empty_table);
    ta_die_on(amqp_get_rpc_reply(c), "exchange.declare");
    amqp_table_entry_t e[2];
    e[0].key = amqp_cstring_bytes("x-max-length");
    e[0].value.kind = AMQP_FIELD_KIND_I32;
    e[0].value.value.i32 = maxlen;
    e[1].key = amqp_cstring_bytes("x-overflow");
    e[1].value.kind = AMQP_FIELD_KIND_UTF8;
    e[1].value.value.bytes = amqp_cstring_bytes("reject-publish");
    amqp_table_t args = {2, e};
    amqp_queue_declare(c, 1, amqp_cstring_bytes(queue), 0, 1, 0, 0, args);
    ta_die_on(amqp_get_rpc_reply(c), "queue.declare (limiter)");
    amqp_queue_bind(c, 1, amqp_cstring_bytes(queue), amqp_cstring_bytes(exchange),
                    amqp_cstring_bytes("#"), amqp_empty_table);
    ta_die_on(amqp_get_rpc_reply(c), "queue.bind (limiter)");
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
}

void ledger_amqp_purge(const char *queue)
{
    amqp_connection_state_t c = ta_raw_connect();
    amqp_queue_purge(c, 1, amqp_cstring_bytes(queue));
    ta_die_on(amqp_get_rpc_reply(c), "queue.purge");
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
}

void ledger_amqp_delete(const char *queue)
{
    amqp_connection_state_t c = ta_raw_connect();
    amqp_queue_delete(c, 1, amqp_cstring_bytes(queue), 0, 0);
    ta_die_on(amqp_get_rpc_reply(c), "queue.delete");
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
}
