/* A wake-up hint that arrives while a worker's session is in a transaction
 * is delivered by PostgreSQL with the transaction's end, before the
 * COMMIT's reply: libpq reads it into its queue of notifications while it
 * reads that reply, and the socket has nothing more to say. A worker that
 * then waits on the socket alone sleeps its whole poll_interval with the
 * hint already in hand (seen in bench_wakeup: one event in 50 waited
 * 1,004 ms for its relay). Here, against a real server: a session that
 * LISTENs begins a transaction, another session commits a NOTIFY on the
 * channel, the first commits; its wait for work must end at once, not
 * after its timeout. And a wait with nothing pending still waits. */
#include <unistd.h>

#include "relay_common.h"
#include "store/store.h"

#define WAIT_MS 4000

static int64_t timed_wait(outbox_store_t *s, int fd)
{
    int64_t t0 = tu_now_ms();
    s->ops->wait_for_work(s, fd, WAIT_MS);
    return tu_now_ms() - t0;
}

int main(void)
{
    RELAY_TEST_OPEN("notify_buffered");
    (void)r;
    (void)host;
    (void)port;
    char err[512];
    outbox_store_cfg_t cfg = {.url = ci,
                              .table = "outbox",
                              .appname = "notify-buffered",
                              .listen = 1,
                              .claims = 1,
                              .generic_plans = 1};
    outbox_store_t *s = outbox__store_open(&cfg, err, sizeof(err));
    CHECK(s, "%s", err);
    int pipefd[2];
    CHECK(pipe(pipefd) == 0, "pipe");

    /* 1. The hint arrives with the COMMIT's reply. */
    int lanes[OUTBOX_LANES];
    for (int i = 0; i < OUTBOX_LANES; i++)
        lanes[i] = i;
    outbox_batch_t b;
    CHECK(s->ops->begin(s, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    /* BEGIN goes with the claim: from here the session is in a transaction */
    CHECK(s->ops->claim(s, lanes, OUTBOX_LANES, 10, &b, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    CHECK(b.n == 0, "the outbox is empty, %zu claimed", b.n);
    s->ops->batch_term(s, &b);
    PQclear(tu_exec(c, "NOTIFY outbox_wakeup")); /* committed: held for the open transaction */
    CHECK(tu_query_ll(c, "SELECT count(*) FROM pg_stat_activity WHERE application_name ="
                         " 'notify-buffered' AND state = 'idle in transaction'") == 1,
          "the listening session is not in a transaction: the test shows nothing");
    CHECK(s->ops->commit(s, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    int64_t waited = timed_wait(s, pipefd[0]);
    CHECK(waited < WAIT_MS / 2,
          "a hint delivered with the COMMIT's reply was not seen: the wait took %lld ms "
          "(its timeout: %d ms)",
          (long long)waited, WAIT_MS);

    /* 2. It was taken: the next wait, with nothing new, waits. */
    waited = timed_wait(s, pipefd[0]);
    CHECK(waited >= WAIT_MS - 200, "a wait with no hint pending ended after %lld ms",
          (long long)waited);

    /* 3. A hint sent while the session waits ends the wait too (the socket). */
    PGconn *c2 = tu_connect(ci);
    CHECK(PQsendQuery(c2, "SELECT pg_sleep(0.3); NOTIFY outbox_wakeup"), "%s", PQerrorMessage(c2));
    waited = timed_wait(s, pipefd[0]);
    CHECK(waited < WAIT_MS / 2, "a hint sent during the wait was not seen (%lld ms)",
          (long long)waited);
    for (PGresult *x; (x = PQgetResult(c2));)
        PQclear(x);
    PQfinish(c2);

    close(pipefd[0]);
    close(pipefd[1]);
    outbox__store_close(s);
    redisFree(r);
    PQfinish(c);
    printf("PASS notify_buffered: a hint read with a COMMIT's reply ends the wait\n");
    return 0;
}
