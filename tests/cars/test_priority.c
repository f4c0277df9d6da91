/* Priority: with a bulk import backlog in the outbox, a price change and a
 * delete are published ahead of it and visible in search before the import
 * finishes. The relay is slowed on purpose (one worker, small batches, a
 * pause before each acknowledgement) so the backlog stays in the outbox
 * long enough to see the order. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cars_testlib.h"

#define BATCHES 3
#define PER 1000

int main(void)
{
    cars_svc_t s;
    char *env[] = {"OUTBOX_WORKERS=1", "OUTBOX_BATCH_SIZE=25", "OUTBOX_FAULT_ACK_DELAY=100ms",
                   NULL};
    cars_start(&s, "cars_priority", env);
    PGconn *db = tu_connect(s.db);
    http_resp_t r;
    char x[37], y[37], vx[18], vy[18], url[160];

    /* Two cars in the index before the import. */
    cars_vin("WBA3A5C5", 1, vx);
    cars_vin("WBA3A5C5", 2, vy);
    CHECK(cars_register(&s, cars_body(vx, "Pricemake", "Xcar", 2018, 2000000), x, &r) == 201,
          "register x: %ld %s", r.status, r.body);
    CHECK(cars_register(&s, cars_body(vy, "Deletemake", "Ycar", 2018, 2000000), y, &r) == 201,
          "register y: %ld %s", r.status, r.body);
    CHECK(cars_wait_total(&s, "pricemake", 1, 10000) == 1, "x not searchable");
    CHECK(cars_wait_total(&s, "deletemake", 1, 10000) == 1, "y not searchable");

    /* The import: 3,000 cars with the low priority. */
    size_t cap = (size_t)PER * 160 + 64;
    char *body = malloc(cap);
    CHECK(body, "oom");
    snprintf(url, sizeof(url), "%s/cars/import", s.url);
    for (int b = 0; b < BATCHES; b++) {
        size_t o = (size_t)snprintf(body, cap, "{\"cars\":[");
        for (int i = 0; i < PER; i++) {
            char vin[18];
            cars_vin("3VWDX7AJ", b * PER + i, vin);
            o += (size_t)snprintf(body + o, cap - o,
                                  "%s{\"vin\":\"%s\",\"make\":\"Importmake\",\"model\":\"Bulk\","
                                  "\"year\":2020,\"price\":100000}",
                                  i ? "," : "", vin);
        }
        snprintf(body + o, cap - o, "]}");
        CHECK(http_do("POST", url, "application/json", NULL, body, strlen(body), &r) == 201,
              "import batch %d: %ld %.300s", b, r.status, r.body);
    }
    free(body);
    long long backlog = tu_query_ll(db, "SELECT count(*) FROM outbox");
    printf("import committed: %lld events in the outbox\n", backlog);
    CHECK(backlog > PER, "no backlog to overtake (%lld events left)", backlog);

    /* Price change and delete, then wait for them in search. */
    snprintf(url, sizeof(url), "%s/cars/%s", s.url, x);
    const char *upd = "{\"price\":1750000}";
    CHECK(http_do("PUT", url, "application/json", NULL, upd, strlen(upd), &r) == 200,
          "price change: %ld %s", r.status, r.body);
    snprintf(url, sizeof(url), "%s/cars/%s", s.url, y);
    CHECK(http_do("DELETE", url, NULL, NULL, NULL, 0, &r) == 200, "delete: %ld %s", r.status,
          r.body);
    long long t0 = tu_now_ms(), seen_price = 0, end = t0 + 60000;
    while (tu_now_ms() < end) {
        cars_search_total(&s, "pricemake", &r);
        if (strstr(r.body, "\"price\" : 1750000") && cars_search_total(&s, "deletemake", &r) == 0)
            break;
        tu_sleep_ms(20);
    }
    seen_price = tu_now_ms();
    long long imported = cars_search_total(&s, "importmake", &r);
    long long left = tu_query_ll(db, "SELECT count(*) FROM outbox");
    printf("price change and delete visible in search after %lld ms; by then %lld of %d imported "
           "cars were searchable, %lld events still in the outbox\n",
           seen_price - t0, imported, BATCHES * PER, left);
    CHECK(seen_price < end, "the price change or the delete did not reach search in 60 s");
    CHECK(imported < BATCHES * PER && left > 0,
          "the import finished first (%lld searchable, %lld left): no sign of priority", imported,
          left);

    /* The import still completes. */
    long long n = cars_wait_total(&s, "importmake", BATCHES * PER, 240000);
    CHECK(n == BATCHES * PER, "only %lld of %d imported cars searchable", n, BATCHES * PER);
    printf("import searchable %lld ms after the price change\n", tu_now_ms() - t0);
    PQfinish(db);
    cars_teardown(&s);
    printf("PASS cars_priority\n");
    return 0;
}
