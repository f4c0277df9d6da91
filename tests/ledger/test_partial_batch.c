/* ledger_partial_batch: a RabbitMQ broker that refuses some writes. A
 * queue with x-max-length=20 and x-overflow=reject-publish is bound to the
 * "transactions" exchange next to the processor's queue, so once it is full
 * the broker nacks every further publish routed to it. The test empties it
 * now and then: each relay batch gets some events confirmed and the rest
 * refused (a partial batch), and the refused ones are retried. At the end
 * every transaction is decided exactly once and the books balance. */
#include <string.h>

#include "ledger_testlib.h"

#define N 200

static ledger_t L;

/* Relay log lines of batches with some events published and some not. */
static int partial_batches(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int n = 0;
    char line[8192];
    while (fgets(line, sizeof(line), f)) {
        if (!strstr(line, "batch_published"))
            continue;
        json_t *o = json_loads(line, 0, NULL);
        json_t *p = json_object_get(o, "published"), *np = json_object_get(o, "not_published");
        long long pv = json_is_string(p) ? atoll(json_string_value(p)) : json_integer_value(p);
        long long npv = json_is_string(np) ? atoll(json_string_value(np)) : json_integer_value(np);
        if (pv > 0 && npv > 0)
            n++;
        json_decref(o);
    }
    fclose(f);
    return n;
}

int main(void)
{
    ledger_init(&L, "ledger_partial_batch", LEDGER_AMQP);
    ledger_env(&L, "OUTBOX_MAX_ATTEMPTS=100000"); /* refusals must not dead-letter here */
    ledger_env(&L, "OUTBOX_BACKOFF_BASE=100ms");
    ledger_env(&L, "OUTBOX_BACKOFF_MAX=500ms");
    ledger_env(&L, "OUTBOX_BATCH_SIZE=50");
    ledger_start_all_in_one(&L);
    lproc_t *tx = &L.procs[0];
    char a[37], b[37];
    CHECK(ledger_create_user(&L, "partial-a@example.com", "password123", a) == 201, "a");
    CHECK(ledger_create_user(&L, "partial-b@example.com", "password123", b) == 201, "b");
    ledger_wait_account(&L, a, 60000);
    ledger_wait_account(&L, b, 60000);
    CHECK(ledger_post_tx(&L, 100000, NULL, a, NULL) == 202, "deposit a");
    CHECK(ledger_post_tx(&L, 100000, NULL, b, NULL) == 202, "deposit b");
    ledger_wait_settled(&L, 60000);

    ledger_amqp_limiter("transactions", "limiter", 20);
    for (int i = 0; i < N; i++)
        CHECK(ledger_post_tx(&L, 1 + i % 100, i % 2 ? a : b, i % 2 ? b : a, NULL) == 202, "post %d",
              i);
    /* Let some through now and then until the relay has had partial batches
     * and every transaction is decided. */
    long long end = tu_now_ms() + 120000;
    int partial;
    for (;;) {
        partial = partial_batches(tx->log);
        long long pend =
            tu_query_ll(L.tdb, "SELECT count(*) FROM transactions WHERE status = 'PENDING'");
        if (partial >= 3 && pend == 0)
            break;
        CHECK(tu_now_ms() < end, "after 120 s: %d partial batches, %lld PENDING", partial, pend);
        tu_sleep_ms(300);
        ledger_amqp_purge("limiter");
    }
    ledger_amqp_delete("limiter");
    ledger_wait_settled(&L, 60000);
    long long retried = tu_query_ll(L.tdb, "SELECT count(*) FROM outbox WHERE attempts > 0");
    printf("%d partial batches; %lld events needed more than one publish\n", partial, retried);
    ledger_check_books(&L, 200000);
    CHECK(tu_query_ll(L.tdb, "SELECT count(*) FROM transactions") == N + 2, "transactions");
    ledger_teardown(&L);
    printf("PASS ledger_partial_batch\n");
    return 0;
}
