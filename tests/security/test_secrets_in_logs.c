/* security_secrets_in_logs: no secret reaches any log line of any process.
 *
 * The order system (orders-service: API, relay, inventory and email
 * consumers), the ledger (users-service and transactions-service: APIs,
 * relays, the transaction processor) and an outbox-relay daemon with an HTTP
 * webhook sink run a full flow, configured with distinctive secrets:
 *
 *   - a PostgreSQL password in every DSN (a role created with that password;
 *     the test server trusts loopback, but the password is in the DSN, and
 *     so wherever code might echo a conninfo), URI and key=value forms;
 *   - a Redis password (CONFIG SET requirepass; REDIS_PASSWORD);
 *   - the webhook HMAC secret (OUTBOX_WEBHOOK_SECRET) and a password in the
 *     webhook URL;
 *   - the relay's admin bearer token (OUTBOX_ADMIN_TOKEN), used once right
 *     and once wrong;
 *   - users' passwords sent to users-service (one accepted, one refused as
 *     too short);
 *   - the other secret rows of the configuration table (DB_PASSWORD,
 *     OUTBOX_OPENSEARCH_PASSWORD).
 *
 * Then the error paths: processes started with a database that is not
 * there, with a DSN libpq cannot parse (its message quotes the URI), and
 * with a wrong Redis password. Every line every process wrote (stdout and
 * stderr, at log level debug) is searched for every secret; the test fails
 * if any appears, and also if the logs do not show the redacted
 * configuration (so it cannot pass by logging nothing). */
#include <curl/curl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "../sinks/sink_test.h"
#include "ledger_testlib.h"

#define PG_USER "outbox_sec_role"
#define PG_PW "PgPw-Zq7x1kS3c"
#define REDIS_PW "RdPw-Kx93mQ7v"
#define HOOK_SECRET "HookSec-Vb28qLm4"
#define HOOK_URL_PW "HookUrlPw-Tc55d"
#define ADMIN_TOKEN "AdmTok-Nw51eRp0"
#define USER_PW1 "UserPw-Jt64r-alice"
#define USER_PW2 "UserPw-Hm20x-bob"
#define USER_PW_SHORT "Wq7$zP"
#define OS_PW "OsPw-Ya31uFe9"

static const char *const secrets[] = {PG_PW,    REDIS_PW, HOOK_SECRET,   HOOK_URL_PW, ADMIN_TOKEN,
                                      USER_PW1, USER_PW2, USER_PW_SHORT, OS_PW,       NULL};

static char logs[32][300];
static int nlogs;

static void add_log(const char *path)
{
    CHECK(nlogs < 32, "too many logs");
    snprintf(logs[nlogs++], sizeof(logs[0]), "%s", path);
}

static char pg_host[128], pg_port[16];

static void pg_addr(void)
{
    PQconninfoOption *o = PQconninfoParse(getenv("OUTBOX_TEST_PG"), NULL);
    CHECK(o, "OUTBOX_TEST_PG does not parse");
    for (PQconninfoOption *p = o; p->keyword; p++) {
        if (!strcmp(p->keyword, "host") && p->val)
            snprintf(pg_host, sizeof(pg_host), "%s", p->val);
        if (!strcmp(p->keyword, "port") && p->val)
            snprintf(pg_port, sizeof(pg_port), "%s", p->val);
    }
    PQconninfoFree(o);
    if (!pg_port[0])
        snprintf(pg_port, sizeof(pg_port), "5432");
}

static void uri_dsn(char *out, size_t size, const char *db)
{
    snprintf(out, size, "postgresql://" PG_USER ":" PG_PW "@%s:%s/%s?application_name=sec", pg_host,
             pg_port, db);
}

static void kv_dsn(char *out, size_t size, const char *db)
{
    snprintf(out, size, "host=%s port=%s user=" PG_USER " password='" PG_PW "' dbname=%s", pg_host,
             pg_port, db);
}

static void redis_requirepass(int port)
{
    redisContext *r = tu_redis_connect("127.0.0.1", port);
    redisReply *rep = redisCommand(r, "CONFIG SET requirepass %s", REDIS_PW);
    CHECK(rep && rep->type == REDIS_REPLY_STATUS, "CONFIG SET requirepass: %s",
          rep && rep->str ? rep->str : r->errstr);
    freeReplyObject(rep);
    redisFree(r);
}

static const char *log_path(const char *name)
{
    static char p[300];
    snprintf(p, sizeof(p), "%s/../tests/security-%s.log", OUTBOX_BIN_DIR, name);
    unlink(p);
    add_log(p);
    return p;
}

/* ------------------------------------------------------------------------ */
/* The order system                                                          */

static void orders_flow(void)
{
    svc_t s;
    memset(&s, 0, sizeof(s));
    char admin[1024];
    snprintf(admin, sizeof(admin), "%s", tu_fresh_db("sec_orders"));
    uri_dsn(s.db, sizeof(s.db), "t_sec_orders");
    s.redis_port = tu_free_port();
    s.redis_pid = tu_redis_server_start(s.redis_port);
    redis_requirepass(s.redis_port);
    snprintf(s.redis_addr, sizeof(s.redis_addr), "127.0.0.1:%d", s.redis_port);
    s.port = tu_free_port();
    snprintf(s.url, sizeof(s.url), "http://127.0.0.1:%d", s.port);
    snprintf(s.log, sizeof(s.log), "%s", log_path("orders"));
    int admin_port = tu_free_port();
    char metrics[64];
    snprintf(metrics, sizeof(metrics), "OUTBOX_METRICS_ADDR=127.0.0.1:%d", admin_port);
    char *env[] = {"REDIS_PASSWORD=" REDIS_PW,
                   "OUTBOX_WEBHOOK_SECRET=" HOOK_SECRET,
                   "OUTBOX_ADMIN_TOKEN=" ADMIN_TOKEN,
                   "DB_PASSWORD=" PG_PW,
                   "OUTBOX_OPENSEARCH_PASSWORD=" OS_PW,
                   "OUTBOX_LOG_LEVEL=debug",
                   metrics,
                   NULL};
    svc_spawn(&s, env);
    PGconn *db = tu_connect(admin);
    char url[128];
    snprintf(url, sizeof(url), "%s/orders", s.url);
    for (int i = 0; i < 3; i++) {
        char body[256], key[32];
        snprintf(body, sizeof(body),
                 "{\"user_id\":\"user-%d\",\"items\":[{\"sku\":\"SKU-1\",\"quantity\":1}],"
                 "\"amount\":1000}",
                 i);
        snprintf(key, sizeof(key), "sec-order-%d", i);
        http_resp_t r;
        CHECK(http_do("POST", url, "application/json", key, body, strlen(body), &r) == 201,
              "POST /orders: %ld %s", r.status, r.body);
    }
    CHECK(wait_ll(db, "SELECT count(*) FROM orders WHERE status = 'confirmed'", 3, 20000) == 3,
          "orders not confirmed through Redis with a password; see %s", s.log);
    CHECK(wait_count(s.log, "Email sent successfully", 3, 10000) == 3, "emails; see %s", s.log);

    /* The admin API: a wrong bearer token (refused and logged), then the right one. */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/api/dlq/requeue", admin_port);
    const char *auths[] = {"Authorization: Bearer wrong-" ADMIN_TOKEN "-x",
                           "Authorization: Bearer " ADMIN_TOKEN};
    long want[] = {401, 0};
    for (int i = 0; i < 2; i++) {
        CURL *e = curl_easy_init();
        struct curl_slist *h = curl_slist_append(NULL, auths[i]);
        h = curl_slist_append(h, "Content-Type: application/json");
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS,
                         "{\"id\":\"01a2297c-0000-7000-8000-000000000009\"}");
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, fwrite);
        FILE *sink = fopen("/dev/null", "w");
        curl_easy_setopt(e, CURLOPT_WRITEDATA, sink);
        long code = 0;
        if (curl_easy_perform(e) == CURLE_OK)
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
        fclose(sink);
        curl_slist_free_all(h);
        curl_easy_cleanup(e);
        CHECK(want[i] ? code == want[i] : code != 401 && code != 0,
              "admin requeue with %s: status %ld", i ? "the token" : "a wrong token", code);
    }
    PQfinish(db);
    svc_teardown(&s);

    /* Error paths of the same service: a wrong Redis password, then a
     * database that is not there, then a DSN libpq cannot parse. */
    s.redis_pid = tu_redis_server_start(s.redis_port);
    redis_requirepass(s.redis_port);
    snprintf(s.log, sizeof(s.log), "%s", log_path("orders-bad-redis-password"));
    char *bad_redis[] = {"REDIS_PASSWORD=wrong-" REDIS_PW "-x", "OUTBOX_LOG_LEVEL=debug", NULL};
    char *argv[] = {(char *)tu_bin("orders-service"), NULL};
    char envs[4][1200];
    char *e2[8];
    int k = 0;
    snprintf(envs[k], sizeof(envs[k]), "DATABASE_URL=%s", s.db), e2[k] = envs[k], k++;
    snprintf(envs[k], sizeof(envs[k]), "REDIS_ADDR=%s", s.redis_addr), e2[k] = envs[k], k++;
    snprintf(envs[k], sizeof(envs[k]), "PORT=%d", tu_free_port()), e2[k] = envs[k], k++;
    e2[k++] = "OUTBOX_METRICS_ADDR=off";
    e2[k++] = bad_redis[0];
    e2[k++] = bad_redis[1];
    e2[k] = NULL;
    pid_t pid = tu_spawn(argv, e2, s.log);
    tu_sleep_ms(2500);
    kill(pid, SIGKILL);
    tu_wait(pid, 5000);
    CHECK(count_in_file(s.log, "AUTH") + count_in_file(s.log, "WRONGPASS") > 0,
          "no Redis AUTH failure logged; see %s", s.log);
    tu_stop(s.redis_pid);

    const char *bad_db[] = {"down", "unparsable"};
    for (int i = 0; i < 2; i++) {
        char dsn[1100];
        if (i == 0)
            snprintf(dsn, sizeof(dsn),
                     "DATABASE_URL=postgresql://" PG_USER ":" PG_PW "@127.0.0.1:1/t_sec_orders");
        else
            snprintf(dsn, sizeof(dsn),
                     "DATABASE_URL=postgresql://" PG_USER ":" PG_PW "@[::1/t_sec_orders");
        char name[64];
        snprintf(name, sizeof(name), "orders-db-%s", bad_db[i]);
        const char *lp = log_path(name);
        char *e3[] = {dsn, "OUTBOX_METRICS_ADDR=off", "OUTBOX_LOG_LEVEL=debug", NULL};
        pid = tu_spawn(argv, e3, lp);
        int rc = tu_wait(pid, 3000);
        if (rc == -1) {
            kill(pid, SIGKILL);
            tu_wait(pid, 5000);
        }
        CHECK(count_in_file(lp, "cannot connect to PostgreSQL") > 0,
              "no connection error logged; see %s", lp);
    }
}

/* ------------------------------------------------------------------------ */
/* The ledger                                                                */

static void ledger_flow(void)
{
    ledger_t L;
    ledger_init(&L, "sec_ledger", LEDGER_REDIS);
    redis_requirepass(L.redis_port);
    kv_dsn(L.users_db, sizeof(L.users_db), "t_sec_ledger_users");
    uri_dsn(L.tx_db, sizeof(L.tx_db), "t_sec_ledger_tx");
    ledger_env(&L, "REDIS_PASSWORD=" REDIS_PW);
    ledger_env(&L, "OUTBOX_WEBHOOK_SECRET=" HOOK_SECRET);
    ledger_env(&L, "OUTBOX_ADMIN_TOKEN=" ADMIN_TOKEN);
    ledger_env(&L, "DB_PASSWORD=" PG_PW);
    ledger_env(&L, "OUTBOX_OPENSEARCH_PASSWORD=" OS_PW);
    ledger_env(&L, "OUTBOX_LOG_LEVEL=debug");
    ledger_start_all_in_one(&L);
    for (int i = 0; i < L.nprocs; i++)
        add_log(L.procs[i].log);
    char a[40], b[40], t[40];
    CHECK(ledger_create_user(&L, "alice@example.com", USER_PW1, a) == 201, "create alice");
    CHECK(ledger_create_user(&L, "bob@example.com", USER_PW2, b) == 201, "create bob");
    CHECK(ledger_create_user(&L, "carol@example.com", USER_PW_SHORT, NULL) == 400,
          "a short password is refused");
    CHECK(ledger_create_user(&L, "alice@example.com", USER_PW1, NULL) == 409,
          "a second alice is refused");
    ledger_wait_account(&L, a, 30000);
    ledger_wait_account(&L, b, 30000);
    CHECK(ledger_post_tx(&L, 1000, NULL, a, t) == 202, "deposit");
    CHECK(!strcmp(ledger_wait_decided(&L, t, 30000), "COMPLETED"), "deposit");
    CHECK(ledger_post_tx(&L, 400, a, b, t) == 202, "transfer");
    CHECK(!strcmp(ledger_wait_decided(&L, t, 30000), "COMPLETED"), "transfer");
    ledger_wait_settled(&L, 30000);
    ledger_check_books(&L, 1000);
    ledger_teardown(&L);

    /* users-service with a database that is not there, and with a DSN that
     * libpq quotes back */
    const char *dsns[] = {"DATABASE_URL=host=127.0.0.1 port=1 user=" PG_USER " password=" PG_PW
                          " dbname=x",
                          "DATABASE_URL=postgresql://" PG_USER ":" PG_PW "@[]:5432/x"};
    const char *bins[] = {"users-service", "transactions-service"};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            char name[64];
            snprintf(name, sizeof(name), "%s-db-%d", bins[j], i);
            const char *lp = log_path(name);
            char *argv[] = {(char *)tu_bin(bins[j]), NULL};
            char port[32];
            snprintf(port, sizeof(port), "SERVER_PORT=%d", tu_free_port());
            char *env[] = {(char *)dsns[i], port, "OUTBOX_METRICS_ADDR=off",
                           "OUTBOX_LOG_LEVEL=debug", NULL};
            pid_t pid = tu_spawn(argv, env, lp);
            if (tu_wait(pid, 3000) == -1) {
                kill(pid, SIGKILL);
                tu_wait(pid, 5000);
            }
            CHECK(count_in_file(lp, "PostgreSQL") > 0, "no connection error logged; see %s", lp);
        }
}

/* ------------------------------------------------------------------------ */
/* outbox-relay with an HTTP webhook sink                                    */

static int hooks_signed, hooks_total;

static void hook(st_req_t *q, void *arg)
{
    (void)arg;
    __atomic_add_fetch(&hooks_total, 1, __ATOMIC_SEQ_CST);
    const char *sig = MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND, "webhook-signature");
    if (!sig)
        sig = MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND, "X-Outbox-Signature");
    if (sig)
        __atomic_add_fetch(&hooks_signed, 1, __ATOMIC_SEQ_CST);
}

static void relay_flow(void)
{
    PGconn *db;
    tu_outbox_db("sec_relay", &db);
    st_server_t srv;
    memset(&srv, 0, sizeof(srv));
    st_server_start_tls(&srv, hook, NULL, NULL, NULL);
    char sink[256], dsn[1100], metrics[64];
    snprintf(sink, sizeof(sink), "OUTBOX_SINK=http://hook:" HOOK_URL_PW "@127.0.0.1:%d/hooks",
             srv.port);
    char d[1024];
    kv_dsn(d, sizeof(d), "t_sec_relay");
    snprintf(dsn, sizeof(dsn), "DATABASE_URL=%s", d);
    snprintf(metrics, sizeof(metrics), "OUTBOX_METRICS_ADDR=127.0.0.1:%d", tu_free_port());
    char *env[] = {dsn,
                   sink,
                   metrics,
                   "OUTBOX_WEBHOOK_SECRET=" HOOK_SECRET,
                   "OUTBOX_ADMIN_TOKEN=" ADMIN_TOKEN,
                   "REDIS_PASSWORD=" REDIS_PW,
                   "DB_PASSWORD=" PG_PW,
                   "OUTBOX_OPENSEARCH_PASSWORD=" OS_PW,
                   "OUTBOX_LOG_LEVEL=debug",
                   "OUTBOX_POLL_INTERVAL=100ms",
                   NULL};
    char *argv[] = {(char *)tu_bin("outbox-relay"), NULL};
    const char *lp = log_path("relay-webhook");
    pid_t pid = tu_spawn(argv, env, lp);
    for (int i = 0; i < 5; i++) {
        char id[OUTBOX_UUID_STRLEN + 1];
        st_enqueue(db, "payments", "PaymentCaptured", "order-1", "{\"amount\":1}", NULL, id);
    }
    tu_wait_drained(db, 20000);
    CHECK(hooks_total >= 5, "webhook got %d events; see %s", hooks_total, lp);
    CHECK(hooks_signed == hooks_total, "%d of %d webhook requests signed", hooks_signed,
          hooks_total);
    kill(pid, SIGTERM);
    CHECK(tu_wait(pid, 20000) == 0, "outbox-relay did not stop cleanly; see %s", lp);
    MHD_stop_daemon(srv.d);
    PQfinish(db);

    /* the relay daemon's database error paths */
    const char *dsns[] = {"DATABASE_URL=postgresql://" PG_USER ":" PG_PW "@127.0.0.1:1/x",
                          "DATABASE_URL=postgresql://" PG_USER ":" PG_PW "@[::1/x",
                          "DATABASE_URL=host=127.0.0.1 port=1 password = '" PG_PW "'"};
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof(name), "relay-db-%d", i);
        const char *l = log_path(name);
        char *e[] = {(char *)dsns[i], "OUTBOX_METRICS_ADDR=off", "OUTBOX_LOG_LEVEL=debug", NULL};
        pid = tu_spawn(argv, e, l);
        if (tu_wait(pid, 2500) == -1) {
            kill(pid, SIGTERM);
            if (tu_wait(pid, 10000) == -1) {
                kill(pid, SIGKILL);
                tu_wait(pid, 5000);
            }
        }
        CHECK(count_in_file(l, "PostgreSQL") > 0, "no connection error logged; see %s", l);
    }
}

int main(void)
{
    if (!getenv("OUTBOX_TEST_PG") || !getenv("OUTBOX_TEST_REDIS"))
        tu_skip("OUTBOX_TEST_PG / OUTBOX_TEST_REDIS are not set: run through scripts/test.sh");
    pg_addr();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    PGconn *admin = tu_connect(getenv("OUTBOX_TEST_PG"));
    /* the role may be left from an earlier run (it owns that run's tables) */
    PQclear(tu_exec(admin, "DO $$ BEGIN"
                           " IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '" PG_USER "')"
                           " THEN CREATE ROLE " PG_USER " LOGIN SUPERUSER PASSWORD '" PG_PW "';"
                           " ELSE ALTER ROLE " PG_USER " LOGIN SUPERUSER PASSWORD '" PG_PW "';"
                           " END IF; END $$"));
    PQfinish(admin);

    orders_flow();
    ledger_flow();
    relay_flow();

    /* Every line of every log, for every secret. */
    int failures = 0, lines = 0, redacted = 0;
    for (int i = 0; i < nlogs; i++) {
        FILE *f = fopen(logs[i], "r");
        CHECK(f, "log %s is missing", logs[i]);
        /* the whole file at once: a secret cannot hide across a line buffer */
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        fseek(f, 0, SEEK_SET);
        char *text = malloc((size_t)size + 1);
        CHECK(text && fread(text, 1, (size_t)size, f) == (size_t)size, "reading %s", logs[i]);
        text[size] = '\0';
        fclose(f);
        int n = 0;
        for (char *line = text, *next; line && *line; line = next) {
            next = strchr(line, '\n');
            if (next)
                *next++ = '\0';
            n++;
            redacted += strstr(line, "****") != NULL;
            for (const char *const *sec = secrets; *sec; sec++)
                if (strstr(line, *sec)) {
                    fprintf(stderr, "LEAK of \"%s\" in %s line %d: %s\n", *sec, logs[i], n, line);
                    failures++;
                }
        }
        free(text);
        CHECK(n > 0, "log %s is empty", logs[i]);
        lines += n;
    }
    CHECK(redacted > 0, "no log line shows a redacted secret: is the configuration logged?");
    CHECK(!failures, "%d secret(s) found in the logs", failures);
    printf("PASS security_secrets_in_logs: %d logs, %d lines, %d with redacted values, no secret "
           "found\n",
           nlogs, lines, redacted);
    return 0;
}
