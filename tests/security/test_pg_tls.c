/* security_pg_tls: PostgreSQL over TLS with sslmode=verify-full.
 *
 * A private PostgreSQL (tests/security/pg_tls_server.sh: a self-signed CA,
 * a server certificate for localhost / 127.0.0.1, ssl=on, pg_hba hostssl
 * with scram-sha-256 only) serves orders-service (API, relay, consumers)
 * and an outbox-relay daemon (file: sink), both with DSNs that say
 * sslmode=verify-full sslrootcert=<ca>: a full event flow works, and the
 * server sees their sessions as TLS. Then, each refused with a clear reason
 * in the process's log and without the password: another CA (certificate
 * verify failed), a host name the certificate does not name, and plain TCP
 * (sslmode=disable: no pg_hba entry). */
#include <curl/curl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "orders_testlib.h"

#define PW "TlsPw-Lr82vQ1x"

static char dir[256];
static int port;

static void stop_server(void)
{
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "bash %s/tests/security/pg_tls_server.sh stop %s; rm -rf %s",
             OUTBOX_SOURCE_DIR, dir, dir);
    if (system(cmd) != 0)
        fprintf(stderr, "stopping the TLS server failed\n");
}

static void start_server(void)
{
    snprintf(dir, sizeof(dir), "/tmp/outbox-pgtls.XXXXXX");
    CHECK(mkdtemp(dir), "mkdtemp");
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "bash %s/tests/security/pg_tls_server.sh start %s > %s/port",
             OUTBOX_SOURCE_DIR, dir, dir);
    int rc = system(cmd);
    atexit(stop_server);
    if (WIFEXITED(rc) && WEXITSTATUS(rc) == 77)
        tu_skip("openssl is not installed");
    CHECK(rc == 0, "pg_tls_server.sh start failed (%d)", rc);
    char p[300];
    snprintf(p, sizeof(p), "%s/port", dir);
    FILE *f = fopen(p, "r");
    CHECK(f && fscanf(f, "%d", &port) == 1, "no port from pg_tls_server.sh");
    fclose(f);
}

/* A superuser session over the Unix socket (trust; set-up and checks only). */
static PGconn *admin(const char *db)
{
    char ci[512];
    snprintf(ci, sizeof(ci), "host=%s/pg port=%d user=postgres dbname=%s", dir, port, db);
    return tu_connect(ci);
}

static void dsn(char *out, size_t size, const char *host, const char *db, const char *ca,
                const char *mode)
{
    snprintf(out, size,
             "host=%s hostaddr=127.0.0.1 port=%d user=outbox_tls password=" PW
             " dbname=%s sslmode=%s sslrootcert=%s/%s",
             host, port, db, mode, dir, ca);
}

/* Starts bin with env for up to ms (or until it exits); returns its log path. */
static const char *refused(const char *bin, const char *name, char *const env[], int ms)
{
    static char log[300];
    snprintf(log, sizeof(log), "%s/../tests/security-pgtls-%s.log", OUTBOX_BIN_DIR, name);
    unlink(log);
    char *argv[] = {(char *)tu_bin(bin), NULL};
    pid_t pid = tu_spawn(argv, env, log);
    if (tu_wait(pid, ms) == -1) {
        kill(pid, SIGKILL);
        tu_wait(pid, 5000);
    }
    CHECK(count_in_file(log, PW) == 0, "%s's log shows the password; see %s", bin, log);
    return log;
}

int main(void)
{
    if (!getenv("OUTBOX_TEST_PG") || !getenv("OUTBOX_TEST_REDIS"))
        tu_skip("OUTBOX_TEST_PG / OUTBOX_TEST_REDIS are not set: run through scripts/test.sh");
    start_server();
    PGconn *a = admin("postgres");
    PQclear(tu_exec(a, "CREATE ROLE outbox_tls LOGIN SUPERUSER PASSWORD '" PW "'"));
    PQclear(tu_exec(a, "CREATE DATABASE tls_orders"));
    PQclear(tu_exec(a, "CREATE DATABASE tls_relay"));

    /* orders-service over verify-full: order -> relay -> Redis -> consumers */
    svc_t s;
    memset(&s, 0, sizeof(s));
    dsn(s.db, sizeof(s.db), "localhost", "tls_orders", "ca.crt", "verify-full");
    curl_global_init(CURL_GLOBAL_DEFAULT);
    s.redis_port = tu_free_port();
    s.redis_pid = tu_redis_server_start(s.redis_port);
    snprintf(s.redis_addr, sizeof(s.redis_addr), "127.0.0.1:%d", s.redis_port);
    s.port = tu_free_port();
    snprintf(s.url, sizeof(s.url), "http://127.0.0.1:%d", s.port);
    snprintf(s.log, sizeof(s.log), "%s/../tests/security-pgtls-orders.log", OUTBOX_BIN_DIR);
    unlink(s.log);
    svc_spawn(&s, NULL);
    PGconn *odb = admin("tls_orders");
    char url[128];
    snprintf(url, sizeof(url), "%s/orders", s.url);
    for (int i = 0; i < 2; i++) {
        const char *body =
            "{\"user_id\":\"u-tls\",\"items\":[{\"sku\":\"SKU-1\",\"quantity\":1}],\"amount\":500}";
        http_resp_t r;
        CHECK(http_do("POST", url, "application/json", NULL, body, strlen(body), &r) == 201,
              "POST /orders: %ld %s", r.status, r.body);
    }
    CHECK(wait_ll(odb, "SELECT count(*) FROM orders WHERE status = 'confirmed'", 2, 20000) == 2,
          "orders not confirmed over TLS; see %s", s.log);
    long long tls = tu_query_ll(a, "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity"
                                   " USING (pid) WHERE usename = 'outbox_tls' AND ssl");
    long long plain = tu_query_ll(a, "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity"
                                     " USING (pid) WHERE usename = 'outbox_tls' AND NOT ssl");
    CHECK(tls > 0 && plain == 0, "orders-service sessions: %lld TLS, %lld plain", tls, plain);
    printf("orders-service: 2 orders confirmed, %lld TLS sessions (verify-full)\n", tls);
    svc_teardown(&s);
    PQfinish(odb);

    /* outbox-relay over verify-full (URI form, the certificate's IP name) */
    char uri[600], env_db[700], env_sink[400], events[300];
    snprintf(uri, sizeof(uri),
             "postgresql://outbox_tls:" PW "@127.0.0.1:%d/tls_relay?sslmode=verify-full"
             "&sslrootcert=%s/ca.crt",
             port, dir);
    snprintf(env_db, sizeof(env_db), "DATABASE_URL=%s", uri);
    snprintf(events, sizeof(events), "%s/events.jsonl", dir);
    snprintf(env_sink, sizeof(env_sink), "OUTBOX_SINK=file:%s", events);
    char *renv[] = {env_db, env_sink, "OUTBOX_METRICS_ADDR=off", "OUTBOX_POLL_INTERVAL=100ms",
                    NULL};
    char rlog[300];
    snprintf(rlog, sizeof(rlog), "%s/../tests/security-pgtls-relay.log", OUTBOX_BIN_DIR);
    unlink(rlog);
    char *argv[] = {(char *)tu_bin("outbox-relay"), NULL};
    pid_t relay = tu_spawn(argv, renv, rlog);
    PGconn *rdb = admin("tls_relay");
    /* the whole schema, not the first table: each migration is its own
     * transaction (a later one adds the priority column enqueue writes) */
    CHECK(wait_count(rlog, "\"migrated\"", 1, 30000) >= 1,
          "outbox-relay did not migrate over TLS; see %s", rlog);
    for (int i = 0; i < 5; i++) {
        char err[256], id[OUTBOX_UUID_STRLEN + 1];
        PQclear(tu_exec(rdb, "BEGIN"));
        outbox_event_t ev = {
            .topic = "payments", .type = "TlsChecked", .key = "k", .payload = "{}"};
        CHECK(outbox_enqueue(rdb, &ev, id, err, sizeof(err)) == OUTBOX_OK, "enqueue: %s", err);
        PQclear(tu_exec(rdb, "COMMIT"));
    }
    tu_wait_drained(rdb, 20000);
    CHECK(wait_count(events, "TlsChecked", 5, 5000) == 5, "events in %s", events);
    kill(relay, SIGTERM);
    CHECK(tu_wait(relay, 20000) == 0, "outbox-relay did not stop cleanly; see %s", rlog);
    printf("outbox-relay: 5 events published over TLS (verify-full)\n");
    PQfinish(rdb);

    /* refused: another CA, a host name the certificate does not name, plain TCP */
    char bad[700];
    dsn(bad, sizeof(bad), "localhost", "tls_relay", "other-ca.crt", "verify-full");
    snprintf(env_db, sizeof(env_db), "DATABASE_URL=%s", bad);
    const char *l = refused("outbox-relay", "relay-other-ca", renv, 2500);
    CHECK(count_in_file(l, "certificate verify failed") > 0,
          "outbox-relay with another CA: no \"certificate verify failed\"; see %s", l);
    char oenv_db[700], oenv_redis[64], oenv_port[32];
    snprintf(oenv_db, sizeof(oenv_db), "DATABASE_URL=%s", bad);
    snprintf(oenv_redis, sizeof(oenv_redis), "REDIS_ADDR=127.0.0.1:%d", tu_free_port());
    snprintf(oenv_port, sizeof(oenv_port), "PORT=%d", tu_free_port());
    char *oenv[] = {
        oenv_db, oenv_redis, oenv_port, "OUTBOX_METRICS_ADDR=off", "OUTBOX_HTTP_ADDR=127.0.0.1",
        NULL};
    l = refused("orders-service", "orders-other-ca", oenv, 2500);
    CHECK(count_in_file(l, "certificate verify failed") > 0,
          "orders-service with another CA: no \"certificate verify failed\"; see %s", l);
    dsn(bad, sizeof(bad), "db.example.invalid", "tls_relay", "ca.crt", "verify-full");
    snprintf(env_db, sizeof(env_db), "DATABASE_URL=%s", bad);
    l = refused("outbox-relay", "relay-wrong-host", renv, 2500);
    CHECK(count_in_file(l, "does not match host name") > 0,
          "outbox-relay with a host the certificate does not name: no mismatch error; see %s", l);
    dsn(bad, sizeof(bad), "localhost", "tls_relay", "ca.crt", "disable");
    snprintf(env_db, sizeof(env_db), "DATABASE_URL=%s", bad);
    l = refused("outbox-relay", "relay-plain", renv, 2500);
    CHECK(count_in_file(l, "no encryption") > 0,
          "outbox-relay over plain TCP: not refused for want of encryption; see %s", l);
    printf("refused with a clear reason: another CA, wrong host name, plain TCP\n");
    PQfinish(a);
    printf("PASS security_pg_tls\n");
    return 0;
}
