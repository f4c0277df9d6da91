/* The consumer poison scenario; see poisonlib.h. */
#include "poisonlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "outbox/consumer.h"
#include "pgproxy.h"
#include "testutil.h"

#define N 1000
#define NKEYS 20
#define POISON 500 /* its seq; key k-0 */
#define MAX_ATTEMPTS 3
#define GROUP "billing"
#define CUT_AFTER 200 /* phase 3: effects applied before the database goes away */
#define OUTAGE_MS 10000

typedef struct ctx_s {
    const char *proxied; /* the consumer's database, through the proxy */
    PGconn *db;
    pgproxy_t *px;
    int fixed;        /* phase 2: the poison succeeds */
    int cut_at;       /* phase 3: cut after this many effects (0: never) */
    long long cut_ms; /* when the cut happened */
    long applied, calls, poison_calls, db_errors;
    char *poison_body; /* as the consumer delivered it */
    size_t poison_len;
    char poison_id[64];
} ctx_t;

static long long q(PGconn *db, const char *sql)
{
    return tu_query_ll(db, sql);
}

/* The handler: inbox + effect in one transaction on its own connection
 * (through the proxy); reconnects after the database was lost. */
static outbox_err_t handler(const outbox_delivery_t *d, void *opaque)
{
    ctx_t *x = opaque;
    x->calls++;
    int poison = d->env.data && strstr(d->env.data, "\"poison\"") != NULL;
    if (poison) {
        x->poison_calls++;
        printf("poison call %ld at +%lld ms, %ld applied\n", x->poison_calls, tu_now_ms() % 100000,
               x->applied);
        fflush(stdout);
        snprintf(x->poison_id, sizeof(x->poison_id), "%s", d->env.id);
        if (!x->poison_body) {
            x->poison_body = malloc(d->body_len + 1);
            CHECK(x->poison_body, "out of memory");
            memcpy(x->poison_body, d->body, d->body_len);
            x->poison_len = d->body_len;
        }
        if (!x->fixed) {
            outbox_delivery_set_error(d, "poison pill: seq %d cannot be billed", POISON);
            return OUTBOX_ERR_INVALID_ARG; /* charged: dead after MAX_ATTEMPTS */
        }
    }
    if (!x->db || PQstatus(x->db) != CONNECTION_OK) {
        if (x->db)
            PQfinish(x->db);
        x->db = PQconnectdb(x->proxied);
        if (PQstatus(x->db) != CONNECTION_OK) {
            x->db_errors++;
            outbox_delivery_set_error(d, "billing database: %s", PQerrorMessage(x->db));
            return OUTBOX_ERR_DB;
        }
    }
    char err[512];
    int is_new = 0;
    PGresult *r = PQexec(x->db, "BEGIN");
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (ok)
        ok = outbox_inbox_record(x->db, GROUP, d->env.id, &is_new, err, sizeof(err)) == OUTBOX_OK;
    if (ok && is_new) {
        const char *p[3] = {d->env.id, d->env.subject ? d->env.subject : "",
                            d->env.data ? d->env.data : ""};
        r = PQexecParams(x->db,
                         "INSERT INTO effects (msg_id, key, seq)"
                         " VALUES ($1, $2, ($3::jsonb ->> 'seq')::int)",
                         3, NULL, p, NULL, NULL, 0);
        ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
    }
    if (ok) {
        r = PQexec(x->db, "COMMIT");
        ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
    }
    if (!ok) {
        x->db_errors++;
        outbox_delivery_set_error(d, "billing database: %s", PQerrorMessage(x->db));
        PQclear(PQexec(x->db, "ROLLBACK"));
        return OUTBOX_ERR_DB; /* never charged: an outage dead-letters nothing */
    }
    if (is_new)
        x->applied++;
    if (x->cut_at && x->applied == x->cut_at && !x->cut_ms) {
        pgproxy_set_down(x->px, 1); /* the database goes away mid-stream */
        x->cut_ms = tu_now_ms();
        printf("[%s] consumer's database cut after %ld effects\n", "outage", x->applied);
    }
    return OUTBOX_OK;
}

static void publish(const char *ci, PGconn *db, const pl_broker_t *b, int from, int to)
{
    char err[512];
    for (int i = from; i < to; i++) {
        char key[16], payload[96];
        snprintf(key, sizeof(key), "k-%d", i % NKEYS);
        if (i == POISON)
            snprintf(payload, sizeof(payload), "{\"seq\": %d,  \"poison\": true, \"amount\": 1.10}",
                     i);
        else
            snprintf(payload, sizeof(payload), "{\"seq\":%d,\"amount\":%d.25}", i, i);
        PQclear(tu_exec(db, "BEGIN"));
        outbox_event_t ev = {
            .topic = b->topic, .type = "InvoiceIssued", .key = key, .payload = payload};
        CHECK(outbox_enqueue(db, &ev, NULL, err, sizeof(err)) == OUTBOX_OK, "enqueue: %s", err);
        PQclear(tu_exec(db, "COMMIT"));
    }
    outbox_conf_t *conf = outbox_conf_new();
    const char *kv[] = {"database_url", ci,        "sink", b->url,          "metrics_addr",
                        "off",          "workers", "2",    "poll_interval", "100ms",
                        "log_level",    "warn",    NULL};
    for (int i = 0; kv[i]; i += 2)
        tu_conf_set(conf, kv[i], kv[i + 1]);
    for (int i = 0; b->relay && b->relay[i]; i += 2)
        tu_conf_set(conf, b->relay[i], b->relay[i + 1]);
    outbox_relay_t *relay = tu_relay_start(conf);
    tu_wait_drained(db, 60000);
    outbox_relay_destroy(relay);
    CHECK(q(db, "SELECT count(*) FROM outbox_dead_letter") == 0, "the relay dead-lettered events");
}

static outbox_consumer_t *consumer(const pl_broker_t *b, const char *proxied, int max_attempts)
{
    outbox_conf_t *conf = outbox_conf_new();
    char maxa[16];
    snprintf(maxa, sizeof(maxa), "%d", max_attempts);
    const char *kv[] = {"database_url",
                        proxied,
                        "consumer_max_attempts",
                        maxa,
                        "consumer_retry_backoff",
                        "100ms",
                        "consumer_retry_backoff_max",
                        "1s",
                        "consumer_batch",
                        "50",
                        "log_level",
                        getenv("PL_LOG_LEVEL") ? getenv("PL_LOG_LEVEL") : "warn",
                        NULL};
    for (int i = 0; kv[i]; i += 2)
        tu_conf_set(conf, kv[i], kv[i + 1]);
    for (int i = 0; b->consumer && b->consumer[i]; i += 2)
        tu_conf_set(conf, b->consumer[i], b->consumer[i + 1]);
    outbox__log_setup(getenv("PL_LOG_LEVEL") ? getenv("PL_LOG_LEVEL") : "warn", "json");
    char err[512];
    const char *topics[1] = {b->topic};
    outbox_consumer_t *c =
        outbox_consumer_new(b->url, GROUP, GROUP "-1", topics, 1, conf, err, sizeof(err));
    CHECK(c, "consumer_new: %s", err);
    outbox_conf_destroy(conf);
    return c;
}

/* Runs outboxctl with DATABASE_URL=ci; returns its output (static). */
static const char *ctl(const char *ci, char *const args[], int want_rc)
{
    static char out[65536];
    char log[128], env[1200];
    snprintf(log, sizeof(log), "/tmp/pl-ctl-%d.out", (int)getpid());
    unlink(log);
    snprintf(env, sizeof(env), "DATABASE_URL=%s", ci);
    char *argv[8] = {(char *)tu_bin("outboxctl")};
    for (int i = 0; args[i] && i < 6; i++)
        argv[i + 1] = args[i];
    char *envp[] = {env, "OUTBOX_LOG_LEVEL=warn", NULL};
    int rc = tu_wait(tu_spawn(argv, envp, log), 30000);
    FILE *f = fopen(log, "r");
    size_t n = f ? fread(out, 1, sizeof(out) - 1, f) : 0;
    out[n] = '\0';
    if (f)
        fclose(f);
    unlink(log);
    CHECK(rc == want_rc, "outboxctl %s %s: exit %d, want %d; output:\n%s", args[0],
          args[1] ? args[1] : "", rc, want_rc, out);
    return out;
}

/* Polls c until cond(db) holds; fails after timeout_ms. */
static void poll_until(outbox_consumer_t *c, ctx_t *x, PGconn *db, const char *cond_sql,
                       int timeout_ms, const char *what)
{
    long long end = tu_now_ms() + timeout_ms, last_check = 0;
    for (;;) {
        outbox_consumer_poll(c, 100, handler, x);
        if (tu_now_ms() - last_check < 50)
            continue;
        last_check = tu_now_ms();
        if (q(db, cond_sql) == 1) /* cond_sql: SELECT (...)::int */
            return;
        CHECK(tu_now_ms() < end, "%s within %d ms: effects %lld, dead letters %lld, attempts %lld",
              what, timeout_ms, q(db, "SELECT count(*) FROM effects"),
              q(db, "SELECT count(*) FROM outbox_consumer_dead_letter"),
              q(db, "SELECT count(*) FROM outbox_consumer_attempt"));
    }
}

static void check_effects(PGconn *db, int want)
{
    long long n = q(db, "SELECT count(*) FROM effects");
    long long distinct = q(db, "SELECT count(DISTINCT msg_id) FROM effects");
    long long inbox = q(db, "SELECT count(*) FROM outbox_inbox WHERE consumer = '" GROUP "'");
    CHECK(n == want && distinct == want && inbox == want,
          "effects %lld (distinct %lld, inbox %lld), want %d each", n, distinct, inbox, want);
    /* per key, applied in commit order (the requeued poison aside) */
    long long bad = q(db, "SELECT count(*) FROM (SELECT seq, lag(seq) OVER (PARTITION BY key "
                          "ORDER BY n) AS prev FROM effects WHERE seq <> 500) x "
                          "WHERE prev IS NOT NULL AND seq <= prev");
    if (bad) { /* which, for the diagnosis */
        PGresult *r = tu_exec(db, "SELECT key, seq, prev, n FROM (SELECT key, seq, n, lag(seq) "
                                  "OVER (PARTITION BY key ORDER BY n) AS prev FROM effects WHERE "
                                  "seq <> 500) x WHERE prev IS NOT NULL AND seq <= prev");
        for (int i = 0; i < PQntuples(r); i++)
            fprintf(stderr, "out of order: key %s seq %s applied (n %s) after seq %s\n",
                    PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 3),
                    PQgetvalue(r, i, 2));
        PQclear(r);
        r = tu_exec(db, "SELECT string_agg(seq::text || '@' || n::text, ' ' ORDER BY n) FROM "
                        "effects WHERE key = 'k-0'");
        fprintf(stderr, "key k-0 (seq@n): %s\n", PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    CHECK(bad == 0, "%lld effects applied out of per-key order", bad);
}

void pl_run(const char *test_name, const pl_broker_t *b)
{
    PGconn *db;
    const char *ci0 = tu_outbox_db(test_name, &db);
    char ci[1024];
    snprintf(ci, sizeof(ci), "%s", ci0);
    PQclear(tu_exec(db, "CREATE TABLE effects (n bigserial, msg_id uuid NOT NULL, key text NOT "
                        "NULL, seq int NOT NULL)"));

    /* The consumer's database through the proxy. */
    pgproxy_t *px = pgproxy_start_for(ci);
    char sql_a[256];
    char proxied[1200];
    snprintf(proxied, sizeof(proxied),
             "%s host=127.0.0.1 port=%d sslmode=disable gssencmode=disable connect_timeout=3", ci,
             pgproxy_port(px));

    ctx_t x = {.proxied = proxied, .px = px};
    /* First with attempts to spare: the poison keeps failing while the rest flows. */
    outbox_consumer_t *c = consumer(b, proxied, 1000);
    outbox_consumer_poll(c, 100, handler, &x); /* creates group / durable / queue first */
    long long t0 = tu_now_ms();
    publish(ci, db, b, 0, N);
    printf("[%s] relay published %d events (poison: seq %d)\n", b->name, N, POISON);

    /* 1a. Not stalled: every event that is not behind the poison (same key,
     * or same partition on Kafka) is applied while the poison is retried;
     * none of those behind it overtakes it. */
    int behind = b->behind ? b->behind(b->arg, POISON) : (N - 1 - POISON) / NKEYS;
    int free_n = N - 1 - behind;
    char cond[256];
    snprintf(cond, sizeof(cond), "SELECT ((SELECT count(*) FROM effects) = %d)::int", free_n);
    long long end = tu_now_ms() + 120000;
    for (;;) {
        outbox_consumer_poll(c, 100, handler, &x);
        if (x.poison_calls >= 2 && q(db, cond) == 1)
            break;
        CHECK(tu_now_ms() < end, "poison retried %ld times, effects %lld of %d free ones",
              x.poison_calls, q(db, "SELECT count(*) FROM effects"), free_n);
    }
    CHECK(q(db, "SELECT count(*) FROM outbox_consumer_dead_letter") == 0, "dead too early");
    snprintf(sql_a, sizeof(sql_a),
             "SELECT attempts FROM outbox_consumer_attempt WHERE group_name = '" GROUP "'"
             " AND message_id = '%s'",
             x.poison_id);
    CHECK(q(db, sql_a) == x.poison_calls, "attempts on record %lld, handler calls %ld",
          q(db, sql_a), x.poison_calls);
    for (int i = 0; i < 3; i++) /* still held: nothing behind the poison moves */
        outbox_consumer_poll(c, 100, handler, &x);
    CHECK(q(db, cond) == 1, "an event behind the poison overtook it");
    printf("[%s] %d events applied while the poison was retried %ld times; %d wait behind it\n",
           b->name, free_n, x.poison_calls, N - 1 - free_n);

    /* 1b. Restart with consumer_max_attempts 3: the count survived (in the
     * database), so the next failure dead-letters it; the key flows again. */
    outbox_consumer_destroy(c);
    c = consumer(b, proxied, MAX_ATTEMPTS);
    poll_until(c, &x, db,
               "SELECT ((SELECT count(*) FROM effects) = 999 AND"
               " (SELECT count(*) FROM outbox_consumer_dead_letter) = 1)::int",
               120000, "999 effects and 1 dead letter");
    printf("[%s] 999 applied, poison dead-lettered after %d calls, in %.1f s\n", b->name,
           (int)x.poison_calls, (tu_now_ms() - t0) / 1000.0);
    check_effects(db, 999);
    CHECK(x.poison_calls >= MAX_ATTEMPTS, "handler saw the poison %ld times, want >= %d",
          x.poison_calls, MAX_ATTEMPTS);
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM outbox_consumer_dead_letter WHERE group_name = '" GROUP "'"
             " AND message_id = '%s' AND topic = '%s' AND key = 'k-0' AND attempts = %ld"
             " AND reason = 'max_attempts' AND jsonb_array_length(errors) = %ld"
             " AND last_error LIKE '%%poison pill: seq 500 cannot be billed%%'"
             " AND first_failed_at < last_failed_at AND requeued_at IS NULL",
             x.poison_id, b->topic, x.poison_calls, x.poison_calls);
    CHECK(q(db, sql) == 1, "dead letter row does not match:\n%s",
          ctl(ci, (char *[]){"consumer-dlq", "show", "1", NULL}, 0));
    /* body byte for byte */
    PGresult *r = PQexecParams(db, "SELECT id, body FROM outbox_consumer_dead_letter", 0, NULL,
                               NULL, NULL, NULL, 1 /* binary */);
    CHECK(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1, "read dead letter");
    CHECK((size_t)PQgetlength(r, 0, 1) == x.poison_len &&
              !memcmp(PQgetvalue(r, 0, 1), x.poison_body, x.poison_len),
          "dead letter body differs from the delivered one (%d vs %zu bytes)", PQgetlength(r, 0, 1),
          x.poison_len);
    PQclear(r);
    long long dl_id = q(db, "SELECT id FROM outbox_consumer_dead_letter");
    CHECK(q(db, "SELECT count(*) FROM outbox_consumer_attempt") == 0, "attempt rows left over");
    /* the poison's key went on after it: its later events were applied */
    CHECK(q(db, "SELECT count(*) FROM effects WHERE key = 'k-0' AND seq > 500") ==
              (N - POISON - 1) / NKEYS,
          "events of the poison's key after it are missing");

    /* ... visible through outboxctl */
    const char *out = ctl(ci, (char *[]){"consumer-dlq", "list", "--group", GROUP, NULL}, 0);
    CHECK(strstr(out, x.poison_id) && strstr(out, "max_attempts") &&
              strstr(out, "(1 consumer dead letter)"),
          "outboxctl consumer-dlq list:\n%s", out);
    char ids[24];
    snprintf(ids, sizeof(ids), "%lld", dl_id);
    out = ctl(ci, (char *[]){"consumer-dlq", "show", ids, NULL}, 0);
    CHECK(strstr(out, x.poison_id) && strstr(out, "\"errors\"") &&
              strstr(out, "poison pill: seq 500") && strstr(out, "poison\\\"") &&
              strstr(out, "\"body_base64\""),
          "outboxctl consumer-dlq show:\n%s", out);
    ctl(ci, (char *[]){"consumer-dlq", "show", "999999", NULL}, 3);
    printf("[%s] outboxctl consumer-dlq list/show see dead letter %lld\n", b->name, dl_id);

    /* 2. Fixed and requeued: applied once, the dead letter goes. */
    x.fixed = 1;
    out = ctl(ci, (char *[]){"consumer-dlq", "requeue", ids, NULL}, 0);
    CHECK(strstr(out, "requeued: 1"), "requeue: %s", out);
    poll_until(c, &x, db,
               "SELECT ((SELECT count(*) FROM effects) = 1000 AND"
               " (SELECT count(*) FROM outbox_consumer_dead_letter) = 0)::int",
               30000, "the requeued dead letter applied");
    check_effects(db, N);
    printf("[%s] requeued poison applied; no dead letter left\n", b->name);

    /* 3. A 10 s outage of the consumer's database mid-stream. */
    publish(ci, db, b, N, 2 * N);
    x.cut_at = (int)x.applied + CUT_AFTER;
    end = tu_now_ms() + 120000;
    while (!x.cut_ms) {
        outbox_consumer_poll(c, 100, handler, &x);
        CHECK(tu_now_ms() < end, "only %ld effects of the second 1,000 after 120 s", x.applied - N);
    }
    long errors_before = x.db_errors;
    while (tu_now_ms() - x.cut_ms < OUTAGE_MS) { /* the outage lasts 10 s; the consumer polls on */
        outbox_consumer_poll(c, 100, handler, &x);
        CHECK(q(db, "SELECT count(*) FROM outbox_consumer_dead_letter") == 0,
              "a message was dead-lettered during the outage");
    }
    long long during = q(db, "SELECT count(*) FROM effects");
    pgproxy_set_down(px, 0);
    printf("[%s] database back after %.1f s; %ld handler calls failed on it meanwhile\n", b->name,
           (tu_now_ms() - x.cut_ms) / 1000.0, x.db_errors - errors_before);
    CHECK(x.db_errors > errors_before, "the handler never saw the outage");
    CHECK(during == N + CUT_AFTER, "effects changed during the outage: %lld", during);
    poll_until(c, &x, db, "SELECT ((SELECT count(*) FROM effects) = 2000)::int", 120000,
               "all 2,000 effects after the outage");
    check_effects(db, 2 * N);
    CHECK(q(db, "SELECT count(*) FROM outbox_consumer_dead_letter") == 0,
          "dead letters after the outage");
    /* an outage charges nothing: no attempt on record (the poison's are gone too) */
    CHECK(q(db, "SELECT count(*) FROM outbox_consumer_attempt") == 0,
          "attempts were charged during the outage");
    out = ctl(ci, (char *[]){"consumer-dlq", "list", NULL}, 0);
    CHECK(strstr(out, "(0 consumer dead letters)"), "outboxctl after the outage:\n%s", out);
    printf("[%s] after the outage: 2,000 effects once each, in per-key order, nothing "
           "dead-lettered, no attempt charged (%.1f s in all)\n",
           b->name, (tu_now_ms() - t0) / 1000.0);

    outbox_consumer_destroy(c);
    if (x.db)
        PQfinish(x.db);
    free(x.poison_body);
    pgproxy_stop(px);
    PQfinish(db);
    printf("PASS %s\n", test_name);
}
