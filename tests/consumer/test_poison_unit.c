/* The consumer's retry / attempt / dead-letter decisions and its per-key
 * holds, without a broker or a database (src/consumer/consumer_poison.c). */
#include <string.h>

#include "consumer/consumer.h"
#include "testutil.h"

static void test_fate(void)
{
    CHECK(outbox__consumer_fate(OUTBOX_OK) == OUTBOX__FATE_DONE, "OK is done");
    CHECK(outbox__consumer_fate(OUTBOX_ERR_REJECTED) == OUTBOX__FATE_REJECT, "REJECTED rejects");
    CHECK(outbox__consumer_fate(OUTBOX_ERR_DB) == OUTBOX__FATE_RETRY_FREE, "DB is free");
    const outbox_err_t charged[] = {
        OUTBOX_ERR_INVALID_ARG, OUTBOX_ERR_BROKER, OUTBOX_ERR_TIMEOUT,   OUTBOX_ERR_NOMEM,
        OUTBOX_ERR_IO,          OUTBOX_ERR_CONFIG, OUTBOX_ERR_NOT_FOUND, OUTBOX_ERR_UNSUPPORTED};
    for (size_t i = 0; i < sizeof(charged) / sizeof(charged[0]); i++)
        CHECK(outbox__consumer_fate(charged[i]) == OUTBOX__FATE_RETRY, "%s is charged",
              outbox_err_str(charged[i]));
    /* dead: rejected at once; charged ones at max; never when free or done */
    CHECK(outbox__consumer_is_dead(OUTBOX__FATE_REJECT, 1, 10), "reject is dead at once");
    CHECK(!outbox__consumer_is_dead(OUTBOX__FATE_RETRY, 9, 10), "9/10 lives");
    CHECK(outbox__consumer_is_dead(OUTBOX__FATE_RETRY, 10, 10), "10/10 is dead");
    CHECK(outbox__consumer_is_dead(OUTBOX__FATE_RETRY, 1, 1), "1/1 is dead");
    CHECK(!outbox__consumer_is_dead(OUTBOX__FATE_RETRY_FREE, 1000, 10), "an outage never kills");
    CHECK(!outbox__consumer_is_dead(OUTBOX__FATE_DONE, 1000, 10), "done is not dead");
}

static void test_delay(void)
{
    CHECK(outbox__consumer_retry_delay(1, 200, 30000) == 200, "first retry after base");
    CHECK(outbox__consumer_retry_delay(2, 200, 30000) == 400, "doubles");
    CHECK(outbox__consumer_retry_delay(5, 200, 30000) == 3200, "doubles per attempt");
    CHECK(outbox__consumer_retry_delay(20, 200, 30000) == 30000, "capped");
    CHECK(outbox__consumer_retry_delay(1000000, 200, 30000) == 30000, "no overflow");
    CHECK(outbox__consumer_retry_delay(3, 0, 100) >= 1, "never 0 (no hot loop)");
}

static void test_holds(void)
{
    outbox__holds_t h = {0};
    int64_t now = 1000000;
    /* nothing held: everything may go */
    CHECK(outbox__holds_wait(&h, "k1", "m1", now) == 0, "free key");
    /* m1 of k1 fails: retried at now+500, k1's later messages wait behind it */
    outbox__hold_t *x = outbox__holds_fail(&h, "k1", "m1", now, now + 500, now + 60500);
    CHECK(x && x->failures == 1, "hold created");
    CHECK(outbox__holds_wait(&h, "k1", "m1", now) == 500, "head waits for its retry");
    CHECK(outbox__holds_wait(&h, "k1", "m2", now) == 500, "follower waits as long");
    CHECK(outbox__holds_wait(&h, "k1", "m2", now + 490) >= 50, "follower waits at least 50 ms");
    CHECK(outbox__holds_wait(&h, "k2", "m9", now) == 0, "other keys flow");
    /* a follower failing does not take the key over */
    CHECK(outbox__holds_fail(&h, "k1", "m2", now, now + 9000, now + 69000) == NULL, "follower");
    CHECK(outbox__holds_wait(&h, "k1", "m1", now + 500) == 0, "head due at its time");
    CHECK(outbox__holds_wait(&h, "k1", "m2", now + 500) > 0, "follower still behind the head");
    /* the head fails again: later, failures counted */
    x = outbox__holds_fail(&h, "k1", "m1", now, now + 1500, now + 61500);
    CHECK(x && x->failures == 2 && h.n == 1, "same hold, second failure");
    /* done (or dead-lettered): the key flows again */
    outbox__holds_release(&h, "k1", "m2", now + 600); /* not the head: no effect */
    CHECK(outbox__holds_wait(&h, "k1", "m2", now + 600) > 0, "release by a follower is ignored");
    /* followers seen in the order m2, m3 (m2 again: no second place) */
    CHECK(outbox__holds_wait(&h, "k1", "m3", now + 600) > 0, "m3 queued");
    CHECK(outbox__holds_wait(&h, "k1", "m2", now + 600) > 0, "m2 seen again");
    outbox__holds_release(&h, "k1", "m1", now + 600);
    /* the head is done: the first follower leads, the next waits behind it
     * even if it comes back first (JetStream redelivers in any order) */
    CHECK(outbox__holds_wait(&h, "k1", "m3", now + 600) > 0, "m3 waits for m2");
    CHECK(outbox__holds_wait(&h, "k1", "m2", now + 600) == 0, "m2 leads");
    outbox__holds_release(&h, "k1", "m2", now + 610);
    CHECK(outbox__holds_wait(&h, "k1", "m3", now + 610) == 0, "m3 leads");
    outbox__holds_release(&h, "k1", "m3", now + 620);
    CHECK(h.n == 0, "key free after its queue");
    CHECK(outbox__holds_wait(&h, "k1", "m4", now + 620) == 0, "released");
    /* a head that never comes back (taken over elsewhere) stops holding */
    outbox__holds_fail(&h, "k3", "m5", now, now + 100, now + 200);
    CHECK(outbox__holds_wait(&h, "k3", "m6", now + 150) > 0, "held until expiry");
    CHECK(outbox__holds_wait(&h, "k3", "m6", now + 200) == 0, "expired");
    CHECK(h.n == 0, "expired hold dropped");
    /* many keys */
    char k[16], m[16];
    for (int i = 0; i < 1000; i++) {
        snprintf(k, sizeof(k), "key-%d", i);
        snprintf(m, sizeof(m), "msg-%d", i);
        CHECK(outbox__holds_fail(&h, k, m, now, now + i, now + 100000), "hold %d", i);
    }
    CHECK(h.n == 1000, "1000 holds");
    CHECK(outbox__holds_wait(&h, "key-999", "msg-999", now) == 999, "lookup");
    outbox__holds_term(&h);
    CHECK(h.n == 0 && !h.v, "term");
}

int main(void)
{
    test_fate();
    test_delay();
    test_holds();
    printf("PASS consumer_poison_unit\n");
    return 0;
}
