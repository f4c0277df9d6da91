/* One outbox table per service: "outbox" and "pizza_order_outbox" in one
 * database, a relay on each. Both tables get events on the same keys and
 * the same topic, interleaved within the same transactions, before and
 * while the relays run. Relay A publishes to Redis database 1, relay B to
 * database 2, so the stream a relay wrote shows which relay published what:
 * each stream must hold exactly its own table's events, all of them, once,
 * in per-key order. Dead letters stay per table: a key dead-lettered in one
 * table holds only that table's events, and one relay's maintenance purges
 * only its own table's expired dead letters. Invalid table names are refused
 * by outbox_enqueue, outbox_migrate_table and outbox_relay_new. */
#include "relay_common.h"

#define N 2000 /* events per table */
#define KEYS 100
#define PER_TX 20 /* i's per transaction: 2 * PER_TX events */
#define TB "pizza_order_outbox"

typedef char uuid_str_t[OUTBOX_UUID_STRLEN + 1];

static uuid_str_t ids_a[N], ids_b[N];

static void enqueue_one(PGconn *c, const char *table, const char *topic, const char *key, int seq,
                        char *id_out)
{
    char err[512], payload[160];
    snprintf(payload, sizeof(payload), "{\"seq\":%d,\"key\":\"%s\",\"table\":\"%s\"}", seq, key,
             table ? table : "outbox");
    outbox_event_t ev = {
        .topic = topic, .type = "TestEvent", .key = key, .payload = payload, .table = table};
    CHECK(outbox_enqueue(c, &ev, id_out, err, sizeof(err)) == OUTBOX_OK, "enqueue into %s: %s",
          table ? table : "outbox", err);
}

/* Events i in [from, to) of both tables; per i, A then B for even i and B
 * then A for odd i, 2 * PER_TX events per transaction. */
static void enqueue_both(PGconn *c, const char *topic, int from, int to)
{
    char key[32];
    for (int i = from; i < to; i++) {
        if ((i - from) % PER_TX == 0)
            PQclear(tu_exec(c, "BEGIN"));
        snprintf(key, sizeof(key), "k%d", i % KEYS);
        if (i % 2 == 0) {
            enqueue_one(c, NULL, topic, key, i, ids_a[i]);
            enqueue_one(c, TB, topic, key, i, ids_b[i]);
        } else {
            enqueue_one(c, TB, topic, key, i, ids_b[i]);
            enqueue_one(c, NULL, topic, key, i, ids_a[i]);
        }
        if ((i - from) % PER_TX == PER_TX - 1 || i == to - 1)
            PQclear(tu_exec(c, "COMMIT"));
    }
}

static void add_dead_letter(PGconn *c, const char *dead_table, long long seq, const char *key,
                            const char *age)
{
    char sql[768], id[OUTBOX_UUID_STRLEN + 1];
    outbox_uuid_v7(id);
    snprintf(sql, sizeof(sql),
             "INSERT INTO %s (seq, id, topic, type, key, payload, source, created_at, attempts,"
             " last_error, reason, dead_at) VALUES (%lld, '%s', 'dlq-fixture', 'T', '%s', '{}',"
             " '/outbox', now() - interval '%s', 10, 'fixture', 'max_attempts',"
             " now() - interval '%s')",
             dead_table, seq, id, key, age, age);
    PQclear(tu_exec(c, sql));
}

static outbox_relay_t *start_relay(const char *ci, const char *host, int port, int db,
                                   const char *table, const char *dlq_retention)
{
    char err[512], sink[256];
    outbox_conf_t *conf = relay_conf(ci, host, port);
    snprintf(sink, sizeof(sink), "redis://%s:%d/%d", host, port, db);
    conf_set(conf, "sink", sink);
    if (table)
        conf_set(conf, "outbox_table", table);
    conf_set(conf, "workers", "3");
    conf_set(conf, "batch_size", "50");
    conf_set(conf, "maintenance_interval", "200ms");
    conf_set(conf, "dlq_retention", dlq_retention);
    outbox_relay_t *relay = outbox_relay_new(conf, err, sizeof(err));
    CHECK(relay, "relay on %s: %s", table ? table : "outbox", err);
    CHECK(outbox_relay_start(relay, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    return relay;
}

/* Checks stream (Redis database db) holds exactly own[0..N) plus extra_id
 * (key extra_key), once each, none of other[], per-key order kept. */
static void check_stream(redisContext *r, int db, const char *stream, uuid_str_t *own,
                         uuid_str_t *other, const char *extra_id, const char *extra_key,
                         const char *who)
{
    redisReply *sel = redisCommand(r, "SELECT %d", db);
    CHECK(sel && sel->type == REDIS_REPLY_STATUS, "SELECT %d failed", db);
    freeReplyObject(sel);
    long n = 0, dups = 0;
    entry_t *got = read_stream(r, stream, &n);

    uuid_str_t *sorted = malloc(sizeof(uuid_str_t) * N);
    CHECK(sorted, "out of memory");
    memcpy(sorted, other, sizeof(uuid_str_t) * N);
    qsort(sorted, N, sizeof(uuid_str_t), cmp_id);
    long foreign = 0, extras = 0, k = 0;
    for (long i = 0; i < n; i++) {
        if (bsearch(got[i].id, sorted, N, sizeof(uuid_str_t), cmp_id))
            foreign++;
        if (!strcmp(got[i].key, extra_key)) {
            CHECK(!strcmp(got[i].id, extra_id), "%s: unexpected %s event %s", who, extra_key,
                  got[i].id);
            extras++;
        } else {
            got[k++] = got[i]; /* keep the k<i> entries for the order check */
        }
    }
    free(sorted);
    CHECK(foreign == 0, "%s: %ld events of the other table in this relay's stream", who, foreign);
    CHECK(extras == 1, "%s: the %s event published %ld times, want 1", who, extra_key, extras);
    long distinct = check_all_present(own, N, got, k, &dups);
    CHECK(distinct == N && k == N && dups == 0,
          "%s: %ld table entries, %ld distinct, %ld duplicates, want %d", who, k, distinct, dups,
          N);
    check_key_order(got, k, KEYS);
    free(got);
}

static void check_refused(PGconn *c, const char *table)
{
    char err[512] = "";
    outbox_event_t ev = {.topic = "t", .type = "T", .key = "k", .payload = "{}", .table = table};
    outbox_err_t e = outbox_enqueue(c, &ev, NULL, err, sizeof(err));
    CHECK(e == OUTBOX_ERR_INVALID_ARG, "enqueue into table \"%s\": %s, want INVALID_ARG", table,
          outbox_err_str(e));
    CHECK(strstr(err, "outbox table") && strstr(err, table) && strstr(err, "lower-case"),
          "enqueue into \"%s\": unclear error \"%s\"", table, err);

    e = outbox_migrate_table(c, table, NULL, err, sizeof(err));
    CHECK(e == OUTBOX_ERR_INVALID_ARG && strstr(err, "outbox table"),
          "migrate_table(\"%s\"): %s: %s", table, outbox_err_str(e), err);

    outbox_conf_t *conf = outbox_conf_new();
    outbox_err_t set = outbox_conf_set(conf, "outbox_table", table, err, sizeof(err));
    if (set == OUTBOX_OK) { /* refused later, by outbox_relay_new */
        conf_set(conf, "database_url", "host=127.0.0.1 dbname=unused");
        conf_set(conf, "sink", "redis://127.0.0.1:1");
        conf_set(conf, "metrics_addr", "off");
        err[0] = '\0';
        outbox_relay_t *relay = outbox_relay_new(conf, err, sizeof(err));
        CHECK(!relay, "outbox_relay_new accepted outbox_table \"%s\"", table);
        CHECK(strstr(err, "outbox_table"),
              "outbox_relay_new(outbox_table=\"%s\"): unclear error "
              "\"%s\"",
              table, err);
    } else {
        CHECK(strstr(err, "outbox_table"), "outbox_table=\"%s\": unclear error \"%s\"", table, err);
    }
    outbox_conf_destroy(conf);
}

int main(void)
{
    PGconn *c;
    const char *ci = setup_db("relay_tables", &c);
    char host[64], err[512];
    int port;
    tu_redis_addr(host, sizeof(host), &port);
    redisContext *r = tu_redis_connect(host, port);
    const char *topic = tu_unique("tables");

    /* Invalid names: refused with a sentence, before any SQL; the caller's
     * transaction stays usable. */
    PQclear(tu_exec(c, "BEGIN"));
    const char *bad[] = {
        "Pizza_Orders", "pizza-orders",
        "1pizza",       "outbox\"; DROP TABLE outbox; --",
        "pizza orders", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" /* 49 */};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        check_refused(c, bad[i]);
    outbox_event_t ev = {.topic = "t", .type = "T", .key = "k", .payload = "{}"};
    CHECK(outbox_enqueue(c, &ev, NULL, err, sizeof(err)) == OUTBOX_OK,
          "transaction unusable after a refused table name: %s", err);
    PQclear(tu_exec(c, "ROLLBACK"));
    /* A valid name without a table: the database's own error, naming it. */
    PQclear(tu_exec(c, "BEGIN"));
    ev.table = "no_such_outbox";
    outbox_err_t e = outbox_enqueue(c, &ev, NULL, err, sizeof(err));
    CHECK(e == OUTBOX_ERR_DB && strstr(err, "no_such_outbox"),
          "enqueue into a missing table: %s: %s", outbox_err_str(e), err);
    PQclear(tu_exec(c, "ROLLBACK"));

    int applied = -1;
    CHECK(outbox_migrate_table(c, TB, &applied, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    CHECK(outbox_migrate_table(c, TB, &applied, err, sizeof(err)) == OUTBOX_OK,
          "second migrate_table: %s", err);
    CHECK(tu_query_ll(c, "SELECT count(*) FROM pg_tables WHERE tablename IN"
                         " ('" TB "', '" TB "_dead_letter')") == 2,
          TB " and its dead letters not created");

    /* Dead letters per table: "held-*" holds its key in its own table only;
     * "old-*" is two days old: relay A (dlq_retention 1h) purges its own,
     * relay B keeps dead letters for ever, so old-b must survive. */
    add_dead_letter(c, "outbox_dead_letter", 900000001, "held-a", "1 second");
    add_dead_letter(c, "outbox_dead_letter", 900000002, "old-a", "2 days");
    add_dead_letter(c, TB "_dead_letter", 900000001, "held-b", "1 second");
    add_dead_letter(c, TB "_dead_letter", 900000002, "old-b", "2 days");
    char a_held[OUTBOX_UUID_STRLEN + 1], a_free[OUTBOX_UUID_STRLEN + 1];
    char b_held[OUTBOX_UUID_STRLEN + 1], b_free[OUTBOX_UUID_STRLEN + 1];
    PQclear(tu_exec(c, "BEGIN"));
    enqueue_one(c, NULL, topic, "held-a", 0, a_held); /* held by A's own dead letter */
    enqueue_one(c, NULL, topic, "held-b", 0, a_free); /* B's dead letter: not A's business */
    enqueue_one(c, TB, topic, "held-b", 0, b_held);
    enqueue_one(c, TB, topic, "held-a", 0, b_free);
    PQclear(tu_exec(c, "COMMIT"));

    /* Half the backlog before the relays start, half while they run, and a
     * mixed transaction rolled back in between. */
    enqueue_both(c, topic, 0, N / 2);
    outbox_relay_t *ra = start_relay(ci, host, port, 1, NULL, "1h");
    outbox_relay_t *rb = start_relay(ci, host, port, 2, TB, "0");
    PQclear(tu_exec(c, "BEGIN"));
    char rolled[2][OUTBOX_UUID_STRLEN + 1];
    enqueue_one(c, NULL, topic, "k0", -1, rolled[0]);
    enqueue_one(c, TB, topic, "k0", -1, rolled[1]);
    PQclear(tu_exec(c, "ROLLBACK"));
    enqueue_both(c, topic, N / 2, N);

    wait_query_ll(c, "SELECT count(*) FROM outbox WHERE key <> 'held-a'", 0, 120000,
                  "outbox drained by relay A");
    wait_query_ll(c, "SELECT count(*) FROM " TB " WHERE key <> 'held-b'", 0, 120000,
                  TB " drained by relay B");
    /* A's maintenance has run once old-a is gone; it must not touch B's. */
    wait_query_ll(c, "SELECT count(*) FROM outbox_dead_letter WHERE key = 'old-a'", 0, 30000,
                  "relay A purges its own expired dead letter");
    outbox_relay_stop(ra);
    outbox_relay_stop(rb);
    CHECK(outbox_relay_wait(ra, 15000) == OUTBOX_OK && outbox_relay_wait(rb, 15000) == OUTBOX_OK,
          "workers did not stop");

    CHECK(tu_query_ll(c, "SELECT count(*) FROM " TB "_dead_letter WHERE key = 'old-b'") == 1,
          "relay A's maintenance purged a dead letter of " TB);
    CHECK(tu_query_ll(c, "SELECT count(*) FROM " TB "_dead_letter") == 2 &&
              tu_query_ll(c, "SELECT count(*) FROM outbox_dead_letter") == 1,
          "dead letters changed: a relay dead-lettered events or touched the other's table");
    CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox WHERE key = 'held-a'") == 1 &&
              tu_query_ll(c, "SELECT count(*) FROM " TB " WHERE key = 'held-b'") == 1,
          "an event of a dead-lettered key left its table");

    uint64_t total[2] = {0, 0};
    outbox_relay_t *relays[2] = {ra, rb};
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < outbox_relay_worker_count(relays[k]); i++) {
            outbox_worker_stats_t st;
            CHECK(outbox_relay_worker_stats(relays[k], i, &st) == OUTBOX_OK, "stats");
            total[k] += st.published;
        }
    CHECK(total[0] == N + 1 && total[1] == N + 1,
          "acknowledged: relay A %llu, relay B %llu, want %d each", (unsigned long long)total[0],
          (unsigned long long)total[1], N + 1);
    outbox_relay_destroy(ra);
    outbox_relay_destroy(rb);

    check_stream(r, 1, topic, ids_a, ids_b, a_free, "held-b", "relay A (outbox)");
    check_stream(r, 2, topic, ids_b, ids_a, b_free, "held-a", "relay B (" TB ")");
    (void)a_held;
    (void)b_held;
    redisFree(r);
    PQfinish(c);
    printf("PASS relay_tables: 2 tables x %d events, each relay published exactly its own table's "
           "events in key order; dead letters held and purged per table; bad names refused\n",
           N);
    return 0;
}
