/* Ordering torture: 3 relay processes x 4 workers, 1,000 keys x 50 events
 * produced while relays are killed with SIGKILL at random every 0.5-1.5 s and
 * restarted, with 2% of publishes failed on purpose. From the consumer's
 * side (the Redis stream): every event present, and for every key the
 * events in strict order (a duplicate may only repeat a position already
 * seen). */
#include "proc_common.h"

#define KEYS 1000
#define PER_KEY 50
#define N (KEYS * PER_KEY)
#define RELAYS 3

int main(void)
{
    PGconn *c;
    const char *ci = setup_db("ordering_torture", &c);
    char host[64], sink[128];
    int port;
    tu_redis_addr(host, sizeof(host), &port);
    snprintf(sink, sizeof(sink), "redis://%s:%d", host, port);
    redisContext *r = tu_redis_connect(host, port);
    const char *stream = tu_unique("torture");
    static char ids[N][OUTBOX_UUID_STRLEN + 1];

    char *extra[] = {"OUTBOX_WORKERS=4",
                     "OUTBOX_BATCH_SIZE=100",
                     "OUTBOX_FAULT_PUBLISH_FAIL_RATE=0.02",
                     "OUTBOX_BACKOFF_BASE=20ms",
                     "OUTBOX_BACKOFF_MAX=500ms",
                     "OUTBOX_REBALANCE_INTERVAL=300ms",
                     "OUTBOX_LOG_LEVEL=warn",
                     "OUTBOX_FAULT_ACK_DELAY=30ms",
                     /* widen the publish→ack window the kills aim at */ NULL};
    pid_t relays[RELAYS];
    for (int i = 0; i < RELAYS; i++)
        relays[i] = spawn_relay(ci, sink, extra, "ordering_torture.log");

    /* 200 transactions 50 ms apart: production lasts >= 10 s, so the kills
     * (one every 0.5-1.5 s) land while events are being produced and
     * published, however fast the relays drain. */
    producer_t prod = {.conninfo = ci,
                       .topic = stream,
                       .n = N,
                       .nkeys = KEYS,
                       .per_tx = 250,
                       .pause_ms = 50,
                       .ids = ids};
    producer_start(&prod);

    srand((unsigned)getpid());
    int kills = 0;
    long long deadline = tu_now_ms() + 240000;
    long long next_kill = tu_now_ms() + 500 + rand() % 1000;
    for (;;) {
        CHECK(tu_now_ms() < deadline, "not drained in time: %lld pending",
              tu_query_ll(c, "SELECT count(*) FROM outbox"));
        if (prod.done && tu_query_ll(c, "SELECT count(*) FROM outbox") == 0)
            break;
        if (tu_now_ms() >= next_kill && kills < 30) {
            int victim = rand() % RELAYS;
            kill(relays[victim], SIGKILL);
            tu_wait(relays[victim], 5000);
            relays[victim] = spawn_relay(ci, sink, extra, "ordering_torture.log");
            kills++;
            next_kill = tu_now_ms() + 500 + rand() % 1000;
        }
        tu_sleep_ms(50);
    }
    pthread_join(prod.thread, NULL);
    for (int i = 0; i < RELAYS; i++) {
        kill(relays[i], SIGTERM);
        CHECK(tu_wait(relays[i], 20000) == 0, "relay %d did not exit 0 on SIGTERM", i);
    }
    CHECK(kills >= 5, "only %d kills happened: run too short to prove anything", kills);
    CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox_dead_letter") == 0,
          "unexpected dead letters");

    long n = 0, dups = 0;
    entry_t *got = read_stream(r, stream, &n);
    long distinct = check_all_present(ids, N, got, n, &dups);
    CHECK(distinct == N, "distinct %ld != %d", distinct, N);
    check_key_order(got, n, KEYS);
    free(got);
    redisFree(r);
    PQfinish(c);
    printf("PASS ordering_torture: %d events, %d keys, %d relays x 4 workers, %d SIGKILLs, 2%% "
           "injected failures: "
           "0 missing, per-key order strict, %ld duplicates (re-publish of seen positions)\n",
           N, KEYS, RELAYS, kills, dups);
    return 0;
}
