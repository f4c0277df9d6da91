/* Scenario "broker unavailable": the relay starts while Redis is down,
 * events are committed meanwhile (writes keep being accepted), no attempt
 * is charged, and when Redis comes back everything is published once. */
#include "relay_common.h"

int main(void)
{
    PGconn *c;
    const char *ci = setup_db("scenario_broker_unavailable", &c);
    int port = tu_free_port();
    const char *stream = "orders";
    char err[512];
    outbox_conf_t *conf = relay_conf(ci, "127.0.0.1", port);
    conf_set(conf, "broker_probe_max", "300ms");
    outbox_relay_t *relay = outbox_relay_new(conf, err, sizeof(err));
    CHECK(relay && outbox_relay_start(relay, err, sizeof(err)) == OUTBOX_OK, "%s", err);

    static char ids[500][OUTBOX_UUID_STRLEN + 1];
    enqueue_many(c, stream, 500, 50, 50, ids);
    tu_sleep_ms(2000);
    CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox") == 500,
          "events vanished while the broker was down");
    CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox WHERE attempts > 0") == 0,
          "attempts were charged for a broker outage (would dead-letter healthy events)");

    pid_t redis = tu_redis_server_start(port);
    long long t0 = tu_now_ms();
    wait_drained(c, 30000);
    long long resume_ms = tu_now_ms() - t0;
    outbox_relay_destroy(relay);

    redisContext *r = tu_redis_connect("127.0.0.1", port);
    long n = 0, dups = 0;
    entry_t *got = read_stream(r, stream, &n);
    CHECK(check_all_present(ids, 500, got, n, &dups) == 500 && dups == 0, "n=%ld dups=%ld", n,
          dups);
    check_key_order(got, n, 50);
    free(got);
    redisFree(r);
    tu_stop(redis);
    PQfinish(c);
    printf("PASS scenario_broker_unavailable: 500 events held while Redis was down, all published "
           "once %lld ms "
           "after it came back\n",
           resume_ms);
    return 0;
}
