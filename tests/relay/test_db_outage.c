/* Database down: every relay session is terminated and new connections are
 * refused for 3 s. The relay keeps running, reconnects with backoff, logs
 * the outage once, and publishes everything afterwards. */
#include "relay_common.h"

int main(void)
{
    PGconn *c;
    const char *ci = setup_db("db_outage_reconnect", &c);
    char host[64], err[512];
    int port;
    tu_redis_addr(host, sizeof(host), &port);
    redisContext *r = tu_redis_connect(host, port);
    const char *stream = tu_unique("dbdown");
    static char ids[2000][OUTBOX_UUID_STRLEN + 1];
    enqueue_many(c, stream, 1000, 50, 100, ids);
    outbox_conf_t *conf = relay_conf(ci, host, port);
    conf_set(conf, "backoff_max", "1s");
    outbox_relay_t *relay = outbox_relay_new(conf, err, sizeof(err));
    CHECK(relay && outbox_relay_start(relay, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    wait_drained(c, 30000);

    PGconn *admin = tu_connect(getenv("OUTBOX_TEST_PG"));
    PQclear(tu_exec(admin, "ALTER DATABASE t_db_outage_reconnect ALLOW_CONNECTIONS false"));
    PQclear(tu_exec(admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                           " WHERE datname = 't_db_outage_reconnect' AND application_name LIKE 'outbox-relay%'"));
    tu_sleep_ms(500);
    CHECK(tu_query_ll(admin, "SELECT count(*) FROM pg_stat_activity WHERE datname = 't_db_outage_reconnect'"
                             " AND application_name LIKE 'outbox-relay%'") == 0,
          "relay connected while connections were refused");
    enqueue_many(c, stream, 1000, 50, 100, ids + 1000); /* the app's own session still works */
    tu_sleep_ms(2500);
    PQclear(tu_exec(admin, "ALTER DATABASE t_db_outage_reconnect ALLOW_CONNECTIONS true"));
    long long t0 = tu_now_ms();
    wait_drained(c, 30000);
    long long back_ms = tu_now_ms() - t0;
    outbox_relay_destroy(relay);
    long n = 0, dups = 0;
    entry_t *got = read_stream(r, stream, &n);
    CHECK(check_all_present(ids, 2000, got, n, &dups) == 2000, "lost events");
    check_key_order(got, n, 50);
    free(got);
    PQfinish(admin);
    redisFree(r);
    PQfinish(c);
    printf("PASS db_outage_reconnect: relay survived a 3 s database outage and drained %lld ms after it ended\n",
           back_ms);
    return 0;
}
