/* The car flow through one cars-service process: register (car + event in
 * one transaction, published to the stream), GET, search from the index,
 * a row written to the primary table without an event is NOT searchable
 * (search reads the index only), price change, make change, delete (the
 * car stops being found, a tombstone stays), a small import, clean stop. */
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <string.h>

#include "cars_testlib.h"

/* The integer member name of the first car of a search for q, polled until
 * it equals want (or 10 s). */
static long long wait_first(const cars_svc_t *s, const char *q, const char *name, long long want)
{
    long long end = tu_now_ms() + 10000, v = -1;
    http_resp_t r;
    while (tu_now_ms() < end) {
        if (cars_search_total(s, q, &r) >= 1) {
            json_t *o = json_loads(r.body, 0, NULL);
            v = json_integer_value(
                json_object_get(json_array_get(json_object_get(o, "cars"), 0), name));
            json_decref(o);
            if (v == want)
                break;
        }
        tu_sleep_ms(50);
    }
    return v;
}

int main(void)
{
    cars_svc_t s;
    cars_start(&s, "cars_flow", NULL);
    PGconn *db = tu_connect(s.db), *sdb = tu_connect(s.search_db);
    http_resp_t r;
    char url[160], id[37], vin[18];

    static const char *const lines[] = {"Connected to database successfully",
                                        "Search projection consumer started",
                                        "Outbox worker started", "Server starting on port"};
    for (int i = 0; i < 4; i++)
        CHECK(wait_count(s.log, lines[i], 1, 5000) == 1, "startup line \"%s\" missing from %s",
              lines[i], s.log);

    /* Register: 201 with the car, version 1 and the event id. */
    cars_vin("1HGCM826", 1, vin);
    CHECK(cars_register(&s, cars_body(vin, "Honda", "Accord", 2003, 1250000), id, &r) == 201,
          "register: %ld %s", r.status, r.body);
    CHECK(outbox_uuid_valid(id), "register body: %s", r.body);
    CHECK(strstr(r.body, "\"version\":1") && strstr(r.body, "\"event_id\":\""), "body: %s", r.body);
    snprintf(url, sizeof(url), "%s/cars/%s", s.url, id);
    CHECK(http_do("GET", url, NULL, NULL, NULL, 0, &r) == 200 && strstr(r.body, vin), "GET: %ld %s",
          r.status, r.body);

    /* Its event reached the stream (published after its commit). */
    redisContext *rc = tu_redis_connect("127.0.0.1", s.redis_port);
    long long n = 0;
    for (int i = 0; i < 200 && n == 0; i++, tu_sleep_ms(50)) {
        redisReply *x = redisCommand(rc, "XLEN cars");
        n = x ? x->integer : 0;
        freeReplyObject(x);
    }
    CHECK(n == 1, "stream cars has %lld entries, want 1", n);
    redisReply *x = redisCommand(rc, "XRANGE cars - +");
    CHECK(x && x->type == REDIS_REPLY_ARRAY && x->elements == 1, "XRANGE cars");
    redisReply *fields = x->element[0]->element[1];
    json_t *doc = NULL;
    for (size_t i = 0; i + 1 < fields->elements; i += 2)
        if (!strcmp(fields->element[i]->str, "event"))
            doc = json_loads(fields->element[i + 1]->str, 0, NULL);
    json_t *data = json_object_get(doc, "data");
    CHECK(doc && !strcmp(json_string_value(json_object_get(doc, "type")), "CarCreated") &&
              !strcmp(json_string_value(json_object_get(doc, "subject")), id) &&
              json_integer_value(json_object_get(data, "version")) == 1 &&
              json_integer_value(json_object_get(data, "schema_version")) == 1 &&
              !strcmp(json_string_value(json_object_get(data, "vin")), vin),
          "the published event is not the car's CarCreated, version 1, schema 1: %s",
          fields->elements >= 8 ? fields->element[7]->str : "?");
    json_decref(doc);
    freeReplyObject(x);

    /* Searchable from the index; the index row has version 1. */
    CHECK(cars_wait_total(&s, "honda accord", 1, 10000) == 1, "search honda accord: %s", r.body);
    CHECK(cars_wait_total(&s, "acc", 1, 1000) == 1, "prefix search 'acc'");
    CHECK(cars_wait_total(&s, vin, 1, 1000) == 1, "search by vin");
    CHECK(cars_wait_total(&s, "honda civic", 0, 1000) == 0, "search honda civic finds nothing");

    /* A row in the primary table without an event is not in the index:
     * search never reads the primary tables. */
    char gvin[18];
    cars_vin("1HGCM826", 2, gvin);
    char sql[512];
    snprintf(sql, sizeof(sql),
             "INSERT INTO cars (id, vin, make, model, year, price) VALUES "
             "('01900000-0000-7000-8000-000000000001', '%s', 'Ghostmake', 'Phantom', 2020, 100)",
             gvin);
    PQclear(tu_exec(db, sql));
    tu_sleep_ms(1500);
    CHECK(cars_search_total(&s, "ghostmake", &r) == 0,
          "search found a car written without an "
          "event: %s",
          r.body);

    /* Price change: the index follows, version 2. */
    const char *upd = "{\"price\":990000}";
    CHECK(http_do("PUT", url, "application/json", NULL, upd, strlen(upd), &r) == 200 &&
              strstr(r.body, "\"version\":2"),
          "PUT price: %ld %s", r.status, r.body);
    CHECK(wait_first(&s, vin, "price", 990000) == 990000, "index price after the change");
    CHECK(wait_first(&s, vin, "version", 2) == 2, "index version after the change");

    /* Make change: found under the new make only. */
    const char *upd2 = "{\"make\":\"Acura\",\"model\":\"TSX\"}";
    CHECK(http_do("PUT", url, "application/json", NULL, upd2, strlen(upd2), &r) == 200,
          "PUT make: %ld %s", r.status, r.body);
    CHECK(cars_wait_total(&s, "acura tsx", 1, 10000) == 1, "search acura tsx after the change");
    CHECK(cars_wait_total(&s, "honda", 0, 10000) == 0, "old make still found");
    CHECK(tu_query_ll(db, "SELECT version FROM cars WHERE make = 'Acura'") == 3, "primary version");

    /* Delete: no longer found; a tombstone with the delete's version. */
    CHECK(http_do("DELETE", url, NULL, NULL, NULL, 0, &r) == 200 && strstr(r.body, "\"version\":4"),
          "DELETE: %ld %s", r.status, r.body);
    CHECK(cars_wait_total(&s, "acura", 0, 10000) == 0, "deleted car still found");
    CHECK(cars_wait_total(&s, vin, 0, 1000) == 0, "deleted car still found by vin");
    CHECK(wait_ll(sdb, "SELECT count(*) FROM car_search WHERE deleted AND version = 4", 1, 5000) ==
              1,
          "no tombstone at version 4");
    CHECK(http_do("GET", url, NULL, NULL, NULL, 0, &r) == 404, "GET after delete: %ld", r.status);
    CHECK(http_do("DELETE", url, NULL, NULL, NULL, 0, &r) == 404, "DELETE twice: %ld", r.status);

    /* A small import: searchable; the events carry the low priority. */
    char v1[18], v2[18], v3[18], body[1024];
    cars_vin("2T1BURHE", 1, v1), cars_vin("2T1BURHE", 2, v2), cars_vin("2T1BURHE", 3, v3);
    snprintf(body, sizeof(body),
             "{\"cars\":[{\"vin\":\"%s\",\"make\":\"Toyota\",\"model\":\"Corolla\",\"year\":2015,"
             "\"price\":900000},{\"vin\":\"%s\",\"make\":\"Toyota\",\"model\":\"Corolla\","
             "\"year\":2016,\"price\":950000},{\"vin\":\"%s\",\"make\":\"Toyota\",\"model\":"
             "\"Camry\",\"year\":2017,\"price\":1500000}]}",
             v1, v2, v3);
    snprintf(url, sizeof(url), "%s/cars/import", s.url);
    CHECK(http_do("POST", url, "application/json", NULL, body, strlen(body), &r) == 201 &&
              strstr(r.body, "\"imported\":3"),
          "import: %ld %s", r.status, r.body);
    CHECK(cars_wait_total(&s, "toyota", 3, 10000) == 3, "imported cars not all found");
    CHECK(cars_wait_total(&s, "toyota corolla", 2, 1000) == 2, "toyota corolla");
    CHECK(cars_wait_total(&s, "2016", 1, 1000) == 1, "by year");

    redisFree(rc);
    PQfinish(db);
    PQfinish(sdb);
    cars_teardown(&s);
    CHECK(count_in_file(s.log, "stopped cleanly") == 1, "no clean stop line in %s", s.log);
    printf("PASS cars_flow\n");
    return 0;
}
