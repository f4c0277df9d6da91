/* Scenario "partial batch processing": in one batch the broker accepts some
 * events and refuses others (Redis WRONGTYPE on one topic). The accepted
 * ones are acknowledged, the refused ones retried with attempts and the
 * error recorded, other keys keep flowing; when the broker accepts again
 * the rest arrive, each once, in per-key order. */
#include "relay_common.h"

int main(void)
{
    PGconn *c;
    const char *ci = setup_db("scenario_partial_batch", &c);
    char host[64], err[512];
    int port;
    tu_redis_addr(host, sizeof(host), &port);
    redisContext *r = tu_redis_connect(host, port);
    char good[64], bad[64];
    snprintf(good, sizeof(good), "%s", tu_unique("partial-good"));
    snprintf(bad, sizeof(bad), "%s", tu_unique("partial-bad"));
    freeReplyObject(redisCommand(r, "SET %s not-a-stream", bad)); /* XADD → WRONGTYPE */

    static char gid[200][OUTBOX_UUID_STRLEN + 1], bid[200][OUTBOX_UUID_STRLEN + 1];
    /* Interleave the two topics in the same transactions, so batches mix them. */
    PQclear(tu_exec(c, "BEGIN"));
    for (int i = 0; i < 200; i++) {
        char key[16], payload[64];
        snprintf(key, sizeof(key), "k%d", i % 20);
        snprintf(payload, sizeof(payload), "{\"seq\":%d}", i);
        outbox_event_t g = {.topic = good, .type = "T", .key = key, .payload = payload};
        outbox_event_t b = {.topic = bad, .type = "T", .key = key, .payload = payload};
        /* same key on both topics would block the good events behind the bad
         * (per-key order is per key, not per topic): use distinct keys */
        char bkey[16];
        snprintf(bkey, sizeof(bkey), "b%d", i % 20);
        b.key = bkey;
        CHECK(outbox_enqueue(c, &g, gid[i], err, sizeof(err)) == OUTBOX_OK, "%s", err);
        CHECK(outbox_enqueue(c, &b, bid[i], err, sizeof(err)) == OUTBOX_OK, "%s", err);
    }
    PQclear(tu_exec(c, "COMMIT"));

    outbox_conf_t *conf = relay_conf(ci, host, port);
    conf_set(conf, "backoff_base", "100ms");
    conf_set(conf, "backoff_max", "400ms");
    conf_set(conf, "max_attempts", "1000");
    conf_set(conf, "batch_size", "64");
    outbox_relay_t *relay = outbox_relay_new(conf, err, sizeof(err));
    CHECK(relay && outbox_relay_start(relay, err, sizeof(err)) == OUTBOX_OK, "%s", err);

    long long end = tu_now_ms() + 30000;
    while (tu_query_ll(c, "SELECT count(*) FROM outbox WHERE topic NOT LIKE 'partial-bad%'") > 0)
        CHECK(tu_now_ms() < end, "good events did not flow past the failing ones");
    tu_sleep_ms(800);
    CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox") == 200, "bad-topic events left the outbox");
    CHECK(tu_query_ll(
              c, "SELECT count(*) FROM outbox WHERE attempts > 0 AND last_error LIKE '%WRONGTYPE%'"
                 " AND next_attempt_at IS NOT NULL") >= 20,
          "failed attempts not recorded with their error");
    CHECK(tu_query_ll(c, "SELECT max(jsonb_array_length(errors)) FROM outbox") >= 2,
          "error history not kept");
    long n = 0, dups = 0;
    entry_t *got = read_stream(r, good, &n);
    CHECK(check_all_present(gid, 200, got, n, &dups) == 200 && dups == 0,
          "good topic: n=%ld dups=%ld", n, dups);
    free(got);

    freeReplyObject(redisCommand(r, "DEL %s", bad)); /* the broker accepts again */
    wait_drained(c, 30000);
    outbox_relay_destroy(relay);
    got = read_stream(r, bad, &n);
    CHECK(check_all_present(bid, 200, got, n, &dups) == 200 && dups == 0,
          "bad topic: n=%ld dups=%ld", n, dups);
    for (int k = 0; k < 20; k++) { /* per-key order on the recovered topic */
        int last = -1;
        for (long i = 0; i < n; i++) {
            char bkey[16];
            snprintf(bkey, sizeof(bkey), "b%d", k);
            if (strcmp(got[i].key, bkey))
                continue;
            CHECK(got[i].seq > last, "key %s out of order: %d after %d", bkey, got[i].seq, last);
            last = got[i].seq;
        }
    }
    free(got);
    redisFree(r);
    PQfinish(c);
    printf("PASS scenario_partial_batch_processing: 200 accepted events acknowledged while 200 "
           "refused ones retried; "
           "after recovery all 400 published once, in per-key order\n");
    return 0;
}
