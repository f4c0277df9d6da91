/* 5 workers drain a 10,000-event backlog: none missing, none published
 * twice (crash-free run), per-key order kept, and every worker took a share. */
#include "relay_common.h"

#define N 10000
#define KEYS 500

int main(void)
{
    RELAY_TEST_OPEN("relay_drain_10k");
    const char *stream = tu_unique("drain");
    static char ids[N][OUTBOX_UUID_STRLEN + 1];
    enqueue_many(c, stream, N, KEYS, 500, ids);
    CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox") == N, "backlog not in place");

    char err[512];
    outbox_conf_t *conf = relay_conf(ci, host, port);
    conf_set(conf, "workers", "5");
    conf_set(conf, "batch_size", "50");
    outbox_relay_t *relay = outbox_relay_new(conf, err, sizeof(err));
    CHECK(relay, "%s", err);
    long long t0 = tu_now_ms();
    CHECK(outbox_relay_start(relay, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    wait_drained(c, 120000);
    long long ms = tu_now_ms() - t0;
    tu_sleep_ms(300);
    outbox_relay_stop(relay);
    CHECK(outbox_relay_wait(relay, 15000) == OUTBOX_OK, "workers did not stop");

    uint64_t total = 0;
    for (int i = 0; i < outbox_relay_worker_count(relay); i++) {
        outbox_worker_stats_t st;
        CHECK(outbox_relay_worker_stats(relay, i, &st) == OUTBOX_OK, "stats");
        printf("worker-%d published %llu in %llu batches\n", i + 1,
               (unsigned long long)st.published, (unsigned long long)st.batches);
        CHECK(st.published > 0, "worker-%d took no share", i + 1);
        total += st.published;
    }
    CHECK(total == N, "workers acknowledged %llu, want %d", (unsigned long long)total, N);
    outbox_relay_destroy(relay);

    check_stream_exactly_once(r, stream, ids, N, KEYS);
    redisFree(r);
    PQfinish(c);
    printf("PASS relay_drain_10k_5_workers: %d events, 0 missing, 0 duplicates, %lld ms (%.0f "
           "events/s)\n",
           N, ms, N * 1000.0 / (double)(ms ? ms : 1));
    return 0;
}
