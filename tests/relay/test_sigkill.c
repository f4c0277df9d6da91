/* The relay daemon is killed with SIGKILL in the middle of a batch (after
 * the broker confirmed, before the acknowledgement committed) and
 * restarted: every event is in Redis at least once, per-key order holds,
 * and a consumer using the inbox applies each effect exactly once. */
#include <signal.h>

#include "relay_common.h"

#define N 3000
#define KEYS 100

int main(void)
{
    RELAY_TEST_OPEN("relay_sigkill");
    const char *stream = tu_unique("sigkill");
    static char ids[N][OUTBOX_UUID_STRLEN + 1];
    enqueue_many(c, stream, N, KEYS, 100, ids);

    char env_db[1200], env_sink[256];
    snprintf(env_db, sizeof(env_db), "DATABASE_URL=%s", ci);
    snprintf(env_sink, sizeof(env_sink), "OUTBOX_SINK=redis://%s:%d", host, port);
    /* Run 1: a 300 ms pause between broker confirmation and acknowledgement
     * makes the kill land inside a batch. */
    char *env1[] = {env_db,
                    env_sink,
                    "OUTBOX_METRICS_ADDR=off",
                    "OUTBOX_BATCH_SIZE=100",
                    "OUTBOX_FAULT_ACK_DELAY=300ms",
                    "OUTBOX_WORKERS=5",
                    NULL};
    char *argv[] = {(char *)tu_bin("outbox-relay"), NULL};
    const char *log = "relay_sigkill.log";
    pid_t pid = tu_spawn(argv, env1, log);

    /* Kill once a good part is published but not all acknowledged. */
    long long end = tu_now_ms() + 60000;
    long long published = 0;
    while (tu_now_ms() < end) {
        redisReply *x = redisCommand(r, "XLEN %s", stream);
        published = x ? x->integer : 0;
        freeReplyObject(x);
        if (published >= N / 3)
            break;
        tu_sleep_ms(20);
    }
    CHECK(published > 0, "relay published nothing before the kill (see %s)", log);
    kill(pid, SIGKILL);
    CHECK(tu_wait(pid, 10000) == 128 + SIGKILL, "relay did not die by SIGKILL");
    long long left = tu_query_ll(c, "SELECT count(*) FROM outbox");
    printf("killed with %lld entries in Redis, %lld events not acknowledged\n", published, left);
    CHECK(left > 0 && left < N, "kill did not land mid-run (left=%lld)", left);

    /* Run 2: restart normally and drain. */
    char *env2[] = {env_db, env_sink, "OUTBOX_METRICS_ADDR=off", "OUTBOX_WORKERS=5", NULL};
    pid = tu_spawn(argv, env2, log);
    wait_drained(c, 120000);
    kill(pid, SIGTERM);
    CHECK(tu_wait(pid, 15000) == 0, "relay did not exit 0 on SIGTERM");

    long n = 0, dups = 0;
    entry_t *got = read_stream(r, stream, &n);
    long distinct = check_all_present(ids, N, got, n, &dups);
    CHECK(distinct == N, "distinct %ld != %d", distinct, N);
    CHECK(dups > 0, "no duplicates: the kill did not land between publish and acknowledgement");
    check_key_order(got, n, KEYS);
    printf("stream: %ld entries, %d distinct events, %ld re-published after the kill\n", n, N,
           dups);

    /* A consumer using the inbox applies each effect exactly once. */
    PQclear(
        tu_exec(c, "CREATE TABLE effects (message_id uuid, applied_at timestamptz default now())"));
    long skipped = 0;
    char err[256];
    for (long i = 0; i < n; i++) {
        PQclear(tu_exec(c, "BEGIN"));
        int is_new = 0;
        CHECK(outbox_inbox_record(c, "test-consumer", got[i].id, &is_new, err, sizeof(err)) ==
                  OUTBOX_OK,
              "%s", err);
        if (is_new) {
            const char *p[1] = {got[i].id};
            PQclear(PQexecParams(c, "INSERT INTO effects (message_id) VALUES ($1::uuid)", 1, NULL,
                                 p, NULL, NULL, 0));
        } else {
            skipped++;
        }
        PQclear(tu_exec(c, "COMMIT"));
    }
    CHECK(tu_query_ll(c, "SELECT count(*) FROM effects") == N,
          "effects applied %lld times, want %d", tu_query_ll(c, "SELECT count(*) FROM effects"), N);
    CHECK(tu_query_ll(c, "SELECT count(DISTINCT message_id) FROM effects") == N,
          "an effect applied twice");
    CHECK(skipped == dups, "skipped %ld, duplicates %ld", skipped, dups);
    free(got);
    redisFree(r);
    PQfinish(c);
    printf("PASS relay_sigkill_mid_batch: 0 lost, %ld duplicates delivered, %ld skipped by the "
           "inbox, effects = %d\n",
           dups, skipped, N);
    return 0;
}
