/* A producer in any language writes the outbox with plain SQL and no event
 * id: the table gives a time-ordered UUID (version 7), the relay publishes
 * it, and ids made in order sort in order. */
#include "relay_common.h"

int main(void)
{
    RELAY_TEST_OPEN("plain_sql_producer");
    const char *stream = tu_unique("plainsql");
    char sql[512];
    for (int i = 0; i < 20; i++) {
        snprintf(sql, sizeof(sql),
                 "BEGIN; INSERT INTO outbox (topic, type, key, payload) VALUES ('%s', "
                 "'OrderCreated', 'k%d',"
                 " '{\"seq\":%d,\"key\":\"k%d\"}'); SELECT pg_notify('outbox_wakeup', ''); COMMIT;",
                 stream, i % 2, i, i % 2);
        PQclear(tu_exec(c, sql));
    }
    PGresult *res = tu_exec(c, "SELECT id::text FROM outbox ORDER BY seq");
    CHECK(PQntuples(res) == 20, "rows: %d", PQntuples(res));
    char prev[40] = "";
    for (int i = 0; i < PQntuples(res); i++) {
        const char *id = PQgetvalue(res, i, 0);
        CHECK(outbox_uuid_valid(id) && id[14] == '7', "id %s is not a version 7 UUID", id);
        CHECK(strchr("89ab", id[19]), "id %s: RFC 9562 variant bits", id);
        CHECK(strncmp(id, prev, 13) >= 0, "ids not time-ordered: %s after %s", id, prev);
        snprintf(prev, sizeof(prev), "%s", id);
    }
    PQclear(res);
    outbox_relay_t *relay = tu_relay_start(relay_conf(ci, host, port));
    wait_drained(c, 30000);
    outbox_relay_destroy(relay);
    long n = 0;
    entry_t *got = read_stream(r, stream, &n);
    CHECK(n == 20, "published %ld of 20", n);
    check_key_order(got, n, 2);
    free(got);
    redisFree(r);
    PQfinish(c);
    printf("PASS plain_sql_producer: 20 events inserted with plain SQL got v7 ids from the table "
           "and were published "
           "in per-key order\n");
    return 0;
}
