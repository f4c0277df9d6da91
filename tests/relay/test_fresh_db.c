/* A database with no schema at all, as `make run` and a first deployment
 * meet it: outboxctl migrate creates the schema (default table and a
 * per-service one), and outbox-relay, started on another empty database,
 * migrates it itself and then publishes what a plain-SQL producer writes. */
#include "proc_common.h"

static int run(char *const argv[], char *const env[])
{
    pid_t pid = tu_spawn(argv, env, NULL);
    return tu_wait(pid, 60000);
}

int main(void)
{
    char host[64], sink[128], dburl[1100], table[64];
    int port;
    tu_redis_addr(host, sizeof(host), &port);
    snprintf(sink, sizeof(sink), "redis://%s:%d", host, port);

    /* 1. outboxctl migrate on an empty database, default and custom table. */
    const char *ci = tu_fresh_db("fresh_db_ctl");
    snprintf(dburl, sizeof(dburl), "DATABASE_URL=%s", ci);
    snprintf(table, sizeof(table), "OUTBOX_TABLE=pizza_order_outbox");
    char *ctl[] = {(char *)tu_bin("outboxctl"), "migrate", NULL};
    char *env1[] = {dburl, NULL}, *env2[] = {dburl, table, NULL};
    CHECK(run(ctl, env1) == 0, "outboxctl migrate failed on an empty database");
    CHECK(run(ctl, env2) == 0, "outboxctl migrate (OUTBOX_TABLE) failed");
    PGconn *c = tu_connect(ci);
    CHECK(tu_query_ll(
              c,
              "SELECT count(*) FROM pg_tables WHERE tablename IN ('outbox', 'outbox_dead_letter',"
              " 'pizza_order_outbox', 'pizza_order_outbox_dead_letter')") == 4,
          "tables missing after migrate");
    char *status[] = {(char *)tu_bin("outboxctl"), "status", NULL};
    CHECK(run(status, env2) == 0, "outboxctl status on the new table failed");
    PQfinish(c);

    /* 2. outbox-relay on another empty database: migrates, then publishes. */
    const char *ci2 = tu_fresh_db("fresh_db_relay");
    const char *stream = tu_unique("fresh");
    unlink("fresh_db.log"); /* appended to: a former run's lines must not count */
    pid_t relay = spawn_relay(ci2, sink, NULL, "fresh_db.log");
    c = tu_connect(ci2);
    /* The producer writes once the schema is complete (the relay logs
     * "migrated"), not as soon as the table exists: each migration is its
     * own transaction, and the id column gets its default in a later one. */
    long long t0 = tu_now_ms();
    while (log_count("fresh_db.log", "migrated", NULL) == 0) {
        CHECK(tu_now_ms() - t0 < tu_ms(30000), "the relay did not migrate the schema");
        CHECK(tu_wait(relay, 1) == -1, "the relay exited on an empty database (see fresh_db.log)");
        tu_sleep_ms(20);
    }
    CHECK(tu_query_ll(c, "SELECT count(*) FROM pg_tables WHERE tablename = 'outbox'") == 1,
          "the relay said \"migrated\" but there is no outbox table");
    char sql[512];
    snprintf(sql, sizeof(sql),
             "INSERT INTO outbox (topic, type, key, payload) VALUES ('%s', 'T', 'k0', "
             "'{\"seq\":0,\"key\":\"k0\"}')",
             stream);
    PQclear(tu_exec(c, sql));
    tu_wait_drained(c, 30000);
    CHECK(tu_wait(relay, 1) == -1, "the relay exited");
    kill(relay, SIGTERM);
    CHECK(tu_wait(relay, 15000) == 0, "relay exit status");
    redisContext *r = tu_redis_connect(host, port);
    redisReply *rep = redisCommand(r, "XLEN %s", stream);
    CHECK(rep && rep->integer == 1, "published %lld of 1", rep ? rep->integer : -1);
    freeReplyObject(rep);
    redisFree(r);
    PQfinish(c);
    printf("PASS fresh_database: outboxctl migrate and outbox-relay both start on an empty "
           "database\n");
    return 0;
}
