/* The search projection converges whatever the broker does: events fed
 * straight into the cars stream arrive twice (same event id) and out of
 * order (versions 3, 1, 2 ...), on two consumer threads; the inbox records
 * of the search database expire. The index ends at
 * each car's newest version; a delete leaves a tombstone that older events
 * arriving later do not bring back; a duplicate is skipped by the inbox.
 * Last, an event without a version is refused as poison (OUTBOX_ERR_REJECTED:
 * dead letter under the consumer contract; today's Redis consumer leaves it
 * pending and retries it, so it is fed after everything else). */
#include <hiredis/hiredis.h>
#include <string.h>

#include "cars_testlib.h"

#define A "01900000-0000-7000-8000-00000000000a"
#define B "01900000-0000-7000-8000-00000000000b"
#define C "01900000-0000-7000-8000-00000000000c"

typedef struct {
    const char *id, *type, *car;
    int version;
    const char *make, *model;
    long long price;
} ev_t;

static void xadd(redisContext *rc, const ev_t *e)
{
    char data[512], doc[1024];
    if (!strcmp(e->type, "CarDeleted"))
        snprintf(data, sizeof(data),
                 "{\"schema_version\":1,\"id\":\"%s\",\"vin\":\"X\",\"version\":%d}", e->car,
                 e->version);
    else if (e->version == 0) /* poison: no version */
        snprintf(data, sizeof(data), "{\"schema_version\":1,\"id\":\"%s\",\"make\":\"P\"}", e->car);
    else
        snprintf(data, sizeof(data),
                 "{\"schema_version\":1,\"id\":\"%s\",\"vin\":\"VIN%s\",\"make\":\"%s\","
                 "\"model\":\"%s\",\"year\":2020,\"price\":%lld,\"version\":%d}",
                 e->car, e->car + 30, e->make, e->model, e->price, e->version);
    snprintf(doc, sizeof(doc),
             "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"/cars\",\"type\":\"%s\","
             "\"subject\":\"%s\",\"time\":\"2026-01-01T00:00:00Z\",\"datacontenttype\":"
             "\"application/json\",\"partitionkey\":\"%s\",\"data\":%s}",
             e->id, e->type, e->car, e->car, data);
    redisReply *x =
        redisCommand(rc, "XADD cars * id %s type %s key %s event %s", e->id, e->type, e->car, doc);
    CHECK(x && x->type == REDIS_REPLY_STRING, "XADD");
    freeReplyObject(x);
}

int main(void)
{
    cars_svc_t s;
    char *env[] = {"OUTBOX_CONSUMER_THREADS=2", "OUTBOX_INBOX_RETENTION=3s",
                   "OUTBOX_MAINTENANCE_INTERVAL=500ms", NULL};
    cars_start(&s, "cars_projection_order", env);
    PGconn *sdb = tu_connect(s.search_db);
    redisContext *rc = tu_redis_connect("127.0.0.1", s.redis_port);

    const ev_t
        a1 = {"01900000-0000-7000-8000-0000000000a1", "CarCreated", A, 1, "Amake", "One", 100},
        a2 = {"01900000-0000-7000-8000-0000000000a2", "CarUpdated", A, 2, "Amake", "One", 200},
        a3 = {"01900000-0000-7000-8000-0000000000a3", "CarUpdated", A, 3, "Amake", "One", 300},
        b1 = {"01900000-0000-7000-8000-0000000000b1", "CarCreated", B, 1, "Bmake", "Two", 100},
        b2 = {"01900000-0000-7000-8000-0000000000b2", "CarUpdated", B, 2, "Bmake", "Two", 200},
        b3 = {"01900000-0000-7000-8000-0000000000b3", "CarDeleted", B, 3, NULL, NULL, 0},
        c1 = {"01900000-0000-7000-8000-0000000000c1", "CarCreated", C, 1, "Cmake", "Old", 100},
        c2 = {"01900000-0000-7000-8000-0000000000c2", "CarUpdated", C, 2, "Cmake", "New", 250},
        px = {"01900000-0000-7000-8000-0000000000f1", "CarUpdated", C, 0, NULL, NULL, 0};
    /* Reordered and duplicated: A 1,3,2,3,1; B 3,2,1,3; C 2,1. */
    const ev_t *order[] = {&a1, &b3, &c2, &a3, &b2, &a2, &c1, &b1, &a3, &a1, &b3};
    int n = (int)(sizeof(order) / sizeof(order[0]));
    for (int i = 0; i < n; i++)
        xadd(rc, order[i]);
    printf("fed %d events (3 duplicates, reordered) into stream cars\n", n);

    /* The newest state of each car, and B's tombstone. */
    CHECK(wait_ll(sdb,
                  "SELECT count(*) FROM car_search WHERE"
                  " (car_id = '" A "' AND version = 3 AND price = 300 AND NOT deleted)"
                  " OR (car_id = '" B "' AND version = 3 AND deleted AND make IS NULL)"
                  " OR (car_id = '" C "' AND version = 2 AND model = 'New' AND price = 250)",
                  3, 30000) == 3,
          "the projection did not converge to A v3, B deleted at v3, C v2");
    /* Every duplicate was seen and skipped by the inbox. */
    CHECK(wait_count(s.log, "SKIPPING duplicate message", 3, 10000) == 3,
          "%d duplicates skipped, want 3 (see %s)", count_in_file(s.log, "SKIPPING duplicate"),
          s.log);

    /* The API answers from that index. */
    http_resp_t r;
    CHECK(cars_wait_total(&s, "amake", 1, 5000) == 1, "car A not found");
    cars_search_total(&s, "amake", &r);
    CHECK(strstr(r.body, "\"price\" : 300"), "car A not at its newest price: %s", r.body);
    CHECK(cars_search_total(&s, "bmake", &r) == 0, "deleted car B found: %s", r.body);
    CHECK(cars_search_total(&s, "cmake new", &r) == 1, "car C not at its newest model: %s", r.body);
    CHECK(cars_search_total(&s, "old", &r) == 0, "car C's old model found: %s", r.body);

    /* Later, older events again under new ids (a replay): nothing changes;
     * B stays deleted. */
    const ev_t b2late = {"01900000-0000-7000-8000-0000000000b4",
                         "CarUpdated",
                         B,
                         2,
                         "Bmake",
                         "Zombie",
                         999},
               a2late = {
                   "01900000-0000-7000-8000-0000000000a4", "CarUpdated", A, 2, "Amake", "One", 222};
    int stale_before = count_in_file(s.log, "stale_event");
    xadd(rc, &b2late);
    xadd(rc, &a2late);
    CHECK(wait_count(s.log, "stale_event", stale_before + 2, 10000) >= stale_before + 2,
          "the late events were not logged as stale");
    CHECK(tu_query_ll(sdb, "SELECT count(*) FROM car_search WHERE car_id = '" B
                           "' AND deleted AND version = 3") == 1,
          "a late update resurrected deleted car B");
    CHECK(tu_query_ll(sdb, "SELECT price FROM car_search WHERE car_id = '" A "'") == 300,
          "a late update overwrote car A");
    CHECK(cars_search_total(&s, "zombie", &r) == 0, "deleted car B came back: %s", r.body);

    /* Inbox records expire (inbox_retention) in the search database too. */
    CHECK(wait_ll(sdb, "SELECT count(*) FROM outbox_inbox", 0, 20000) == 0,
          "the search database's inbox records were not purged");
    CHECK(count_in_file(s.log, "inbox_purged") >= 1, "no inbox_purged line");

    /* A poison event is refused with a reason, and changes nothing. */
    xadd(rc, &px);
    CHECK(wait_count(s.log, "poison_event", 1, 10000) >= 1, "the poison event was not refused");
    CHECK(count_in_file(s.log, "data.version is not a positive integer") >= 1,
          "the refusal does not say why");
    CHECK(tu_query_ll(sdb, "SELECT version FROM car_search WHERE car_id = '" C "'") == 2,
          "the poison event changed car C");

    redisFree(rc);
    PQfinish(sdb);
    cars_teardown(&s);
    printf("PASS cars_projection_order\n");
    return 0;
}
