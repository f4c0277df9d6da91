/* Acknowledgement mode "mark": every event is published once, in per-key
 * order; its row stays with status 'processed' and a processed_at (nothing
 * pending, nothing deleted) until it is older than processed_retention, and
 * then maintenance purges it. The pending lookups go through the partial
 * indexes (WHERE status = 'pending'), so kept rows do not slow claims. */
#include "relay_common.h"

#define N 600
#define KEYS 60
#define RETENTION_MS 5000

/* The plan of sql as one string (caller frees). */
static char *explain(PGconn *c, const char *sql)
{
    char q[1024];
    snprintf(q, sizeof(q), "EXPLAIN %s", sql);
    PGresult *r = tu_exec(c, q);
    size_t cap = 1, len = 0;
    for (int i = 0; i < PQntuples(r); i++)
        cap += strlen(PQgetvalue(r, i, 0)) + 1;
    char *plan = malloc(cap);
    CHECK(plan, "out of memory");
    plan[0] = '\0';
    for (int i = 0; i < PQntuples(r); i++)
        len += (size_t)snprintf(plan + len, cap - len, "%s\n", PQgetvalue(r, i, 0));
    PQclear(r);
    return plan;
}

static void check_uses_partial_index(PGconn *c, const char *sql)
{
    char *plan = explain(c, sql);
    CHECK(strstr(plan, "outbox_pending_") && !strstr(plan, "Seq Scan"),
          "pending lookup does not use a partial index (WHERE status = 'pending'):\n%s\n%s", sql,
          plan);
    free(plan);
}

int main(void)
{
    PGconn *c;
    const char *ci = setup_db("relay_ack_mark", &c);
    char host[64], err[512], ret[32];
    int port;
    tu_redis_addr(host, sizeof(host), &port);
    redisContext *r = tu_redis_connect(host, port);
    const char *stream = tu_unique("ackmark");
    static char ids[N][OUTBOX_UUID_STRLEN + 1];
    enqueue_many(c, stream, N, KEYS, 50, ids);
    CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox WHERE status = 'pending'") == N,
          "backlog not in place");

    /* Every row processed from here on has processed_at >= t_start. */
    PQclear(tu_exec(c, "CREATE TEMP TABLE t0 AS SELECT clock_timestamp() AS t"));
    outbox_conf_t *conf = relay_conf(ci, host, port);
    conf_set(conf, "workers", "3");
    conf_set(conf, "batch_size", "50");
    conf_set(conf, "ack_mode", "mark");
    snprintf(ret, sizeof(ret), "%dms", RETENTION_MS);
    conf_set(conf, "processed_retention", ret);
    conf_set(conf, "maintenance_interval", "200ms");
    outbox_relay_t *relay = outbox_relay_new(conf, err, sizeof(err));
    CHECK(relay, "%s", err);
    CHECK(outbox_relay_start(relay, err, sizeof(err)) == OUTBOX_OK, "%s", err);

    long long drain_ms = wait_query_ll(c, "SELECT count(*) FROM outbox WHERE status = 'pending'", 0,
                                       60000, "mark mode drain");

    /* One snapshot. A purge committed before it used a now() earlier than
     * this snapshot's, so while elapsed < retention it cannot have removed
     * any row processed after t_start: every row must still be there. */
    PGresult *s =
        tu_exec(c, "SELECT count(*),"
                   " count(*) FILTER (WHERE status = 'processed' AND processed_at IS NOT NULL"
                   "                  AND processed_at >= (SELECT t FROM t0)),"
                   " count(*) FILTER (WHERE status = 'pending'),"
                   " count(*) FILTER (WHERE processed_at IS NULL),"
                   " (extract(epoch FROM now() - (SELECT t FROM t0)) * 1000)::bigint"
                   " FROM outbox");
    long long rows = atoll(PQgetvalue(s, 0, 0)), processed = atoll(PQgetvalue(s, 0, 1)),
              pending = atoll(PQgetvalue(s, 0, 2)), no_at = atoll(PQgetvalue(s, 0, 3)),
              elapsed = atoll(PQgetvalue(s, 0, 4));
    PQclear(s);
    CHECK(elapsed < RETENTION_MS,
          "drain took %lld ms, longer than processed_retention (%d ms): cannot observe the "
          "kept rows before their purge",
          elapsed, RETENTION_MS);
    CHECK(pending == 0 && no_at == 0, "%lld pending, %lld without processed_at", pending, no_at);
    CHECK(rows == N && processed == N,
          "mark mode keeps every row: %lld rows, %lld processed with processed_at, want %d", rows,
          processed, N);

    /* Published: all, once, in per-key order. */
    check_stream_exactly_once(r, stream, ids, N, KEYS);

    /* Pending lookups use the partial indexes, not the kept rows. */
    PQclear(tu_exec(c, "ANALYZE outbox"));
    check_uses_partial_index(c, "SELECT seq FROM outbox WHERE lane = ANY('{1,2,3}'::smallint[])"
                                " AND status = 'pending' ORDER BY seq LIMIT 100");
    check_uses_partial_index(c, "SELECT 1 FROM outbox WHERE key = 'k7' AND seq < 1000000"
                                " AND status = 'pending'");

    /* After the retention, maintenance purges them. */
    long long purge_ms = wait_query_ll(c, "SELECT count(*) FROM outbox", 0, RETENTION_MS + 30000,
                                       "processed rows purged after processed_retention");
    long long age_ms =
        tu_query_ll(c, "SELECT (extract(epoch FROM now() - (SELECT t FROM t0)) * 1000)::bigint");
    CHECK(age_ms >= RETENTION_MS, "rows purged %lld ms after the relay started, retention %d ms",
          age_ms, RETENTION_MS);

    outbox_relay_stop(relay);
    CHECK(outbox_relay_wait(relay, 15000) == OUTBOX_OK, "workers did not stop");
    uint64_t total = 0;
    for (int i = 0; i < outbox_relay_worker_count(relay); i++) {
        outbox_worker_stats_t st;
        CHECK(outbox_relay_worker_stats(relay, i, &st) == OUTBOX_OK, "stats");
        total += st.published;
    }
    CHECK(total == N, "workers acknowledged %llu, want %d", (unsigned long long)total, N);
    outbox_relay_destroy(relay);
    redisFree(r);
    PQfinish(c);
    printf("PASS relay_ack_mark: %d events published once, %d rows kept as processed "
           "(drained in %lld ms), purged %lld ms later (retention %d ms)\n",
           N, N, drain_ms, purge_ms, RETENTION_MS);
    return 0;
}
