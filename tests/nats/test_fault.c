/* Broker faults mid-run, the relay publishing to NATS JetStream while events
 * keep coming:
 *   A. nats-server is killed (SIGKILL) while batches are in flight, events
 *      are enqueued while it is down, then it restarts on the same port and
 *      store;
 *   B. nats-server freezes (SIGSTOP) longer than publish_timeout with
 *      batches in flight, then resumes (SIGCONT): it stores the publishes
 *      whose PubAck the relay gave up on, and the relay publishes them
 *      again.
 *   C. (after the checks) nats-server restarts with an empty store under a
 *      running relay: the stream is created again and delivery resumes.
 * After A and B every event is in the stream exactly once (the re-publishes
 * are dropped by Nats-Msg-Id; the relay's "duplicates_dropped" log lines
 * count them) and per-key order holds. */
#include <jansson.h>

#include "natstest.h"
#include "outbox/envelope.h"

#define N 1500 /* 15 bursts of 100 */
#define KEYS 30

static char ids[N][OUTBOX_UUID_STRLEN + 1];

int main(void)
{
    tn_require();
    const char *conninfo;
    PGconn *db = tn_db("nats_fault", &conninfo);
    tn_server_t srv = {0};
    tn_start(&srv);
    /* the relay's log goes to a file so the test can count duplicates_dropped */
    char logpath[200];
    snprintf(logpath, sizeof(logpath), "%s.relay.log", srv.dir);
    fflush(stderr);
    int saved_err = dup(2);
    CHECK(freopen(logpath, "w", stderr), "freopen: %s", strerror(errno));
    outbox_relay_t *relay =
        tn_relay(conninfo, srv.url,
                 (const char *const[]){"workers", "4", "batch_size", "100", "publish_timeout", "1s",
                                       "log_level", "info", NULL});
    long long t_kill = 0, t_up = 0;
    long freeze_off = 0;
    const int burst = 100;
    for (int b = 0; b * burst < N; b++) {
        if (b == 9) {
            fflush(stderr);
            freeze_off = ftell(stderr);
            kill(srv.pid, SIGSTOP);
            printf("B: nats-server frozen (SIGSTOP) for longer than publish_timeout\n");
        }
        /* one transaction per burst: the relay gets full batches */
        PQclear(tu_exec(db, "BEGIN"));
        for (int i = b * burst; i < (b + 1) * burst && i < N; i++) {
            char key[32], payload[96];
            snprintf(key, sizeof(key), "acct-%d", i % KEYS);
            snprintf(payload, sizeof(payload), "{\"n\":%d}", i);
            outbox_event_t ev = {
                .topic = "ledger", .type = "Posted", .key = key, .payload = payload};
            char err[256];
            CHECK(outbox_enqueue(db, &ev, ids[i], err, sizeof(err)) == OUTBOX_OK, "enqueue: %s",
                  err);
        }
        PQclear(tu_exec(db, "COMMIT"));
        if (b == 3) { /* A: crash with batches in flight */
            tu_sleep_ms(3);
            tn_kill(&srv, SIGKILL);
            t_kill = tu_now_ms();
            printf("A: nats-server killed (SIGKILL) with %lld events not yet acknowledged\n",
                   tu_query_ll(db, "SELECT count(*) FROM outbox"));
        }
        if (b == 6) {
            tn_start(&srv); /* same port, same store */
            t_up = tu_now_ms();
            printf("A: nats-server restarted after %lld ms down; %lld events waiting\n",
                   t_up - t_kill, tu_query_ll(db, "SELECT count(*) FROM outbox"));
            CHECK(tn_wait_drained(db, 20000) == 0, "A: not drained after restart");
            printf("A: drained %lld ms after the restart\n", tu_now_ms() - t_up);
        }
        if (b == 9) { /* B: this burst goes to a frozen server; its PubAcks come too late */
            /* resume only once a worker gave up on its PubAcks (it logs
             * broker_down), however slow the machine is */
            fflush(stderr);
            long long until = tu_now_ms() + 20000;
            int gave_up = 0;
            while (!gave_up && tu_now_ms() < until) {
                tu_sleep_ms(100);
                fflush(stderr);
                FILE *f = fopen(logpath, "r");
                char line[2048];
                if (f) {
                    fseek(f, freeze_off, SEEK_SET);
                    while (!gave_up && fgets(line, sizeof(line), f))
                        gave_up = strstr(line, "\"broker_down\"") != NULL;
                    fclose(f);
                }
            }
            CHECK(gave_up, "B: the relay never timed out on the frozen server");
            kill(srv.pid, SIGCONT);
            printf("B: nats-server resumed (SIGCONT)\n");
        }
        tu_sleep_ms(10);
    }
    CHECK(tn_wait_drained(db, 40000) == 0, "outbox not drained: %lld left",
          tu_query_ll(db, "SELECT count(*) FROM outbox"));
    outbox_relay_destroy(relay);
    fflush(stderr);
    dup2(saved_err, 2);
    close(saved_err);
    int dropped = 0;
    {
        FILE *f = fopen(logpath, "r");
        char line[2048];
        while (f && fgets(line, sizeof(line), f)) {
            const char *p = strstr(line, "\"event\":\"duplicates_dropped\"");
            const char *c = p ? strstr(p, "\"count\":\"") : NULL;
            if (c)
                dropped += atoi(c + 9);
            if (strstr(line, "\"level\":\"error\"") && !strstr(line, "broker_down"))
                fputs(line, stderr);
        }
        if (f)
            fclose(f);
        unlink(logpath);
    }
    CHECK(tu_query_ll(db, "SELECT count(*) FROM outbox_dead_letter") == 0, "dead letters: %lld",
          tu_query_ll(db, "SELECT count(*) FROM outbox_dead_letter"));

    jsCtx *js = NULL;
    natsConnection *nc = tn_connect(&srv, &js);
    long long count = tn_stream_msgs(js, "LEDGER");
    static int seen[N];
    int last[KEYS];
    for (int k = 0; k < KEYS; k++)
        last[k] = -1;
    int dups = 0;
    jsStreamInfo *si = NULL;
    CHECK(js_GetStreamInfo(&si, js, "LEDGER", NULL, NULL) == NATS_OK, "stream info");
    uint64_t first = si->State.FirstSeq, lastseq = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    for (uint64_t seq = first; seq <= lastseq; seq++) {
        natsMsg *m = NULL;
        if (js_GetMsg(&m, js, "LEDGER", seq, NULL, NULL) != NATS_OK)
            continue;
        outbox_envelope_t env;
        char err[256];
        CHECK(outbox_envelope_parse(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), &env, err,
                                    sizeof(err)) == OUTBOX_OK,
              "not CloudEvents: %s", err);
        json_t *d = json_loads(env.data, 0, NULL);
        int n = (int)json_integer_value(json_object_get(d, "n"));
        json_decref(d);
        CHECK(n >= 0 && n < N && !strcmp(ids[n], env.id), "unexpected event %s", env.id);
        if (seen[n]++)
            dups++;
        CHECK(n > last[n % KEYS], "key acct-%d out of order: %d after %d", n % KEYS, n,
              last[n % KEYS]);
        last[n % KEYS] = n;
        outbox_envelope_term(&env);
        natsMsg_Destroy(m);
    }
    int missing = 0;
    for (int i = 0; i < N; i++)
        missing += !seen[i];
    printf("stream LEDGER: %lld messages for %d events, %d missing, %d duplicates; "
           "%d re-published events dropped by Nats-Msg-Id\n",
           count, N, missing, dups, dropped);
    CHECK(missing == 0, "%d events lost", missing);
    CHECK(dups == 0 && count == N, "%d duplicates in the stream", dups);
    CHECK(dropped > 0, "B should have made the relay re-publish events the server already stored");

    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);

    /* C. the server comes back with an empty store (a memory-only or
     *    replaced server): a running relay, whose workers knew the stream
     *    existed, notices (no responders) and creates it again. */
    relay = tn_relay(conninfo, srv.url,
                     (const char *const[]){"publish_timeout", "1s", "log_level", "error", NULL});
    for (int i = 0; i < 20; i++)
        tn_enqueue(db, "ledger", "Posted", "acct-c", "{\"n\":-1}", NULL, NULL, NULL, NULL);
    CHECK(tn_wait_drained(db, 20000) == 0, "C: first events");
    tn_kill(&srv, SIGKILL);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'/jetstream", srv.dir);
    CHECK(system(cmd) == 0, "wipe store");
    tn_start(&srv);
    for (int i = 0; i < 30; i++)
        tn_enqueue(db, "ledger", "Posted", "acct-c", "{\"n\":-2}", NULL, NULL, NULL, NULL);
    CHECK(tn_wait_drained(db, 30000) == 0,
          "C: events after the store was lost not delivered: %lld left",
          tu_query_ll(db, "SELECT count(*) FROM outbox"));
    outbox_relay_destroy(relay);
    nc = tn_connect(&srv, &js);
    long long c_count = tn_stream_msgs(js, "LEDGER");
    CHECK(c_count == 30, "C: re-created stream holds %lld, want 30", c_count);
    printf("C: store lost -> stream re-created, %lld later events delivered\n", c_count);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);

    PQfinish(db);
    tn_cleanup(&srv);
    printf("PASS\n");
    return 0;
}
