/* Broker stopped for 30 s under load: a producer keeps committing events;
 * Redis is killed, stays down 30 s, comes back on the same port. Zero loss,
 * per-key order, and the relay resumes by itself. */
#include "proc_common.h"

#define N 6000
#define KEYS 200

/* Redis with every write fsync'd, so a SIGKILL loses nothing it confirmed. */
static pid_t start_redis_durable(int port, const char *dir)
{
    char portbuf[16];
    snprintf(portbuf, sizeof(portbuf), "%d", port);
    char *argv[] = {"redis-server", "--port", portbuf,        "--bind", "127.0.0.1",
                    "--save",       "",       "--appendonly", "yes",    "--appendfsync",
                    "always",       "--dir",  (char *)dir,    NULL};
    pid_t pid = tu_spawn(argv, NULL, "/dev/null");
    for (int i = 0; i < 400; i++) {
        redisContext *r = redisConnect("127.0.0.1", port);
        if (r && !r->err) {
            redisReply *x = redisCommand(r, "PING");
            int ok = x && x->type == REDIS_REPLY_STATUS;
            if (x)
                freeReplyObject(x);
            redisFree(r);
            if (ok)
                return pid;
        } else if (r) {
            redisFree(r);
        }
        tu_sleep_ms(25);
    }
    CHECK(0, "redis-server did not start on port %d", port);
    return -1;
}

int main(void)
{
    PGconn *c;
    const char *ci = setup_db("broker_outage_30s", &c);
    int port = tu_free_port();
    char sink[128];
    snprintf(sink, sizeof(sink), "redis://127.0.0.1:%d", port);
    char dir[] = "/tmp/outbox-redis-XXXXXX";
    CHECK(mkdtemp(dir), "mkdtemp");
    pid_t redis = start_redis_durable(port, dir);
    static char ids[N][OUTBOX_UUID_STRLEN + 1];
    char *extra[] = {"OUTBOX_WORKERS=5", "OUTBOX_BROKER_PROBE_MAX=1s", "OUTBOX_LOG_FORMAT=text",
                     NULL};
    pid_t relay = spawn_relay(ci, sink, extra, "broker_outage_30s.log");
    producer_t prod = {.conninfo = ci,
                       .topic = "load",
                       .n = N,
                       .nkeys = KEYS,
                       .per_tx = 20,
                       .pause_ms = 80,
                       .ids = ids};
    producer_start(&prod); /* ~250 events/s for ~24 s... spread over the outage */

    tu_sleep_ms(3000);
    redisContext *r = tu_redis_connect("127.0.0.1", port);
    redisReply *x = redisCommand(r, "XLEN load");
    long before_n = x ? (long)x->integer : 0;
    freeReplyObject(x);
    redisFree(r);
    CHECK(before_n > 0, "nothing published before the outage");
    kill(redis, SIGKILL);
    tu_wait(redis, 5000);
    long long down_at = tu_now_ms();
    printf("redis killed; producer keeps committing for 30 s\n");
    long long pending_peak = 0;
    while (tu_now_ms() - down_at < 30000) {
        long long p = tu_query_ll(c, "SELECT count(*) FROM outbox");
        if (p > pending_peak)
            pending_peak = p;
        tu_sleep_ms(500);
    }
    CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox WHERE attempts > 0") == 0,
          "outage charged attempts");
    redis = start_redis_durable(port, dir);
    r = tu_redis_connect("127.0.0.1", port);
    long long up_at = tu_now_ms();
    pthread_join(prod.thread, NULL);
    wait_drained(c, 60000);
    long long drained_ms = tu_now_ms() - up_at;
    kill(relay, SIGTERM);
    CHECK(tu_wait(relay, 20000) == 0, "relay did not exit 0");

    long n = 0, dups = 0;
    entry_t *all = read_stream(r, "load", &n);
    CHECK(check_all_present(ids, N, all, n, &dups) == N, "events lost");
    check_key_order(all, n, KEYS);
    free(all);
    redisFree(r);
    tu_stop(redis);
    char rm[128];
    snprintf(rm, sizeof(rm), "rm -rf %s", dir);
    (void)!system(rm);
    PQfinish(c);
    printf("PASS broker_outage_30s_under_load: %d events (%ld before the outage), pending peaked "
           "at %lld during "
           "the 30 s outage, drained %lld ms after Redis returned, 0 lost, %ld duplicates\n",
           N, before_n, pending_peak, drained_ms, dups);
    return 0;
}
