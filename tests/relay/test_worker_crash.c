/* Scenario "worker crash mid-processing": a worker's database session dies
 * after the broker confirmed its batch but before the acknowledgement
 * committed (pg_terminate_backend). The worker reconnects, the batch is
 * published again, nothing is lost, and an inbox consumer applies each
 * effect once. The process itself never crashes. */
#include "relay_common.h"

#define N 1000

int main(void)
{
    PGconn *c;
    const char *ci = setup_db("scenario_worker_crash", &c);
    char host[64], err[512];
    int port;
    tu_redis_addr(host, sizeof(host), &port);
    redisContext *r = tu_redis_connect(host, port);
    const char *stream = tu_unique("crash");
    static char ids[N][OUTBOX_UUID_STRLEN + 1];
    enqueue_many(c, stream, N, 40, 100, ids);

    outbox_conf_t *conf = relay_conf(ci, host, port);
    conf_set(conf, "fault_ack_delay", "400ms");
    conf_set(conf, "batch_size", "50");
    outbox_relay_t *relay = outbox_relay_new(conf, err, sizeof(err));
    CHECK(relay && outbox_relay_start(relay, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    int killed = 0;
    long long end = tu_now_ms() + 20000;
    while (killed < 3 && tu_now_ms() < end) {
        /* a worker inside its batch transaction, waiting to acknowledge */
        PGresult *res = tu_exec(c, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                   " WHERE datname = current_database() AND application_name LIKE "
                                   "'outbox-relay % worker-%'"
                                   "   AND state = 'idle in transaction' LIMIT 1");
        killed += PQntuples(res);
        PQclear(res);
        tu_sleep_ms(150);
    }
    CHECK(killed >= 1, "never caught a worker mid-batch");
    conf = NULL;
    wait_drained(c, 60000);
    outbox_relay_destroy(relay);

    long n = 0, dups = 0;
    entry_t *got = read_stream(r, stream, &n);
    CHECK(check_all_present(ids, N, got, n, &dups) == N, "events lost");
    CHECK(dups > 0, "no re-publish: the crash did not land mid-batch");
    check_key_order(got, n, 40);
    PQclear(tu_exec(c, "CREATE TABLE effects (id uuid PRIMARY KEY)"));
    for (long i = 0; i < n; i++) {
        int is_new;
        PQclear(tu_exec(c, "BEGIN"));
        CHECK(outbox_inbox_record(c, "effects", got[i].id, &is_new, err, sizeof(err)) == OUTBOX_OK,
              "%s", err);
        if (is_new) {
            const char *p[1] = {got[i].id};
            PGresult *ins =
                PQexecParams(c, "INSERT INTO effects VALUES ($1::uuid)", 1, NULL, p, NULL, NULL, 0);
            CHECK(PQresultStatus(ins) == PGRES_COMMAND_OK, "effect applied twice: %s",
                  PQerrorMessage(c));
            PQclear(ins);
        }
        PQclear(tu_exec(c, "COMMIT"));
    }
    CHECK(tu_query_ll(c, "SELECT count(*) FROM effects") == N, "effects != events");
    free(got);
    redisFree(r);
    PQfinish(c);
    printf("PASS scenario_worker_crash_mid_processing: %d worker sessions killed mid-batch, 0 "
           "lost, %ld re-published, "
           "%d effects applied once\n",
           killed, dups, N);
    return 0;
}
