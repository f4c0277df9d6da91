/* Fault injection at the real boundary: a trigger on the outbox table
 * refuses the event of a marked car. The car and its event are one
 * transaction, so the car must be rolled back with it, and the API must say
 * so (500 event-write-failed); for an update the car keeps its old state,
 * for a delete it stays; an import with one marked car imports nothing.
 * Unmarked cars are not affected. */
#include <string.h>

#include "cars_testlib.h"

static const char trigger_sql[] =
    "CREATE TABLE inject_fail (key text PRIMARY KEY);"
    "CREATE FUNCTION inject_outbox_fail() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN"
    "  IF NEW.payload->>'make' = 'FailMotors'"
    "     OR EXISTS (SELECT 1 FROM inject_fail WHERE key = NEW.key) THEN"
    "   RAISE EXCEPTION 'injected fault: outbox insert refused for car %', NEW.key;"
    "  END IF;"
    "  RETURN NEW;"
    " END $$;"
    "CREATE TRIGGER inject_outbox_fail BEFORE INSERT ON outbox"
    " FOR EACH ROW EXECUTE FUNCTION inject_outbox_fail();";

static void expect_event_failed(const http_resp_t *r, const char *what)
{
    CHECK(r->status == 500, "%s: status %ld, want 500: %s", what, r->status, r->body);
    CHECK(strstr(r->content_type, "application/problem+json"), "%s: content type %s", what,
          r->content_type);
    CHECK(strstr(r->body, "event-write-failed") && strstr(r->body, "rolled back") &&
              strstr(r->body, "nothing was written"),
          "%s: unclear message: %s", what, r->body);
}

int main(void)
{
    cars_svc_t s;
    cars_start(&s, "cars_event_fail", NULL);
    PGconn *db = tu_connect(s.db);
    PQclear(tu_exec(db, trigger_sql));
    http_resp_t r;
    char url[160], id[37], vin[18], sql[512];

    /* Register a marked car: 500, and the car is not there. */
    cars_vin("1FAFP404", 1, vin);
    CHECK(cars_register(&s, cars_body(vin, "FailMotors", "Lemon", 2020, 500000), NULL, &r) == 500,
          "register marked car: %ld %s", r.status, r.body);
    expect_event_failed(&r, "register");
    char failed_id[37];
    json_member(r.body, "car_id", failed_id, sizeof(failed_id));
    CHECK(outbox_uuid_valid(failed_id), "problem has no car_id: %s", r.body);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM cars WHERE vin = '%s'", vin);
    CHECK(tu_query_ll(db, sql) == 0, "the car was written although its event failed");
    CHECK(tu_query_ll(db, "SELECT count(*) FROM outbox") == 0, "an event is in the outbox");
    snprintf(url, sizeof(url), "%s/cars/%s", s.url, failed_id);
    CHECK(http_do("GET", url, NULL, NULL, NULL, 0, &r) == 404, "GET failed car: %ld", r.status);
    CHECK(count_in_file(s.log, "event_write_failed") >= 1 &&
              count_in_file(s.log, "injected fault") >= 1,
          "the log does not show the failed event write and the database's reason");

    /* Unmarked cars work; the VIN is free (nothing of the failed one stayed). */
    CHECK(cars_register(&s, cars_body(vin, "Ford", "Mustang", 2020, 3500000), id, &r) == 201,
          "register after the failure: %ld %s", r.status, r.body);
    CHECK(cars_wait_total(&s, "mustang", 1, 10000) == 1, "registered car not searchable");
    CHECK(cars_search_total(&s, "failmotors", &r) == 0, "the failed car is searchable");

    /* Update to the marked make: 500; the car keeps its state. */
    snprintf(url, sizeof(url), "%s/cars/%s", s.url, id);
    const char *upd = "{\"make\":\"FailMotors\",\"price\":1}";
    http_do("PUT", url, "application/json", NULL, upd, strlen(upd), &r);
    expect_event_failed(&r, "update");
    CHECK(http_do("GET", url, NULL, NULL, NULL, 0, &r) == 200 &&
              strstr(r.body, "\"make\":\"Ford\"") && strstr(r.body, "\"price\":3500000") &&
              strstr(r.body, "\"version\":1"),
          "car changed although its update event failed: %s", r.body);

    /* Delete while the car's events are refused: 500; the car stays. */
    snprintf(sql, sizeof(sql), "INSERT INTO inject_fail VALUES ('%s')", id);
    PQclear(tu_exec(db, sql));
    http_do("DELETE", url, NULL, NULL, NULL, 0, &r);
    expect_event_failed(&r, "delete");
    CHECK(http_do("GET", url, NULL, NULL, NULL, 0, &r) == 200,
          "car gone although its delete "
          "event failed: %ld",
          r.status);
    CHECK(cars_search_total(&s, "mustang", &r) == 1, "car left the index");
    PQclear(tu_exec(db, "DELETE FROM inject_fail"));
    CHECK(http_do("DELETE", url, NULL, NULL, NULL, 0, &r) == 200, "delete once allowed: %ld %s",
          r.status, r.body);
    CHECK(cars_wait_total(&s, "mustang", 0, 10000) == 0, "deleted car still found");

    /* An import with one marked car imports none. */
    char v1[18], v2[18], v3[18], body[1024];
    cars_vin("1FAFP404", 2, v1), cars_vin("1FAFP404", 3, v2), cars_vin("1FAFP404", 4, v3);
    snprintf(body, sizeof(body),
             "{\"cars\":[{\"vin\":\"%s\",\"make\":\"Kia\",\"model\":\"Rio\",\"year\":2019,"
             "\"price\":700000},{\"vin\":\"%s\",\"make\":\"FailMotors\",\"model\":\"Lemon\","
             "\"year\":2019,\"price\":1},{\"vin\":\"%s\",\"make\":\"Kia\",\"model\":\"Soul\","
             "\"year\":2019,\"price\":800000}]}",
             v1, v2, v3);
    snprintf(url, sizeof(url), "%s/cars/import", s.url);
    http_do("POST", url, "application/json", NULL, body, strlen(body), &r);
    expect_event_failed(&r, "import");
    CHECK(tu_query_ll(db, "SELECT count(*) FROM cars WHERE make IN ('Kia', 'FailMotors')") == 0,
          "part of a failed import was written");
    tu_sleep_ms(1000);
    CHECK(cars_search_total(&s, "kia", &r) == 0, "part of a failed import is searchable");

    PQfinish(db);
    cars_teardown(&s);
    printf("PASS cars_event_fail\n");
    return 0;
}
