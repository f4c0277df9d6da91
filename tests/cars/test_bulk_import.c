/* A bulk import of 10,000 cars (10 x POST /cars/import of 1,000) is
 * searchable soon after its last commit. Prints the import time and the
 * time from the last commit until search finds all 10,000; asserts only
 * convergence, with a generous deadline (timings belong to bench/). */
#include <stdlib.h>
#include <string.h>

#include "cars_testlib.h"

#define BATCHES 10
#define PER 1000
#define DEADLINE_MS 120000

int main(void)
{
    cars_svc_t s;
    cars_start(&s, "cars_bulk_import", NULL);
    size_t cap = (size_t)PER * 160 + 64;
    char *body = malloc(cap);
    CHECK(body, "oom");
    char url[160];
    snprintf(url, sizeof(url), "%s/cars/import", s.url);
    http_resp_t r;
    long long t0 = tu_now_ms(), last_commit = 0;
    for (int b = 0; b < BATCHES; b++) {
        size_t o = (size_t)snprintf(body, cap, "{\"cars\":[");
        for (int i = 0; i < PER; i++) {
            char vin[18];
            int serial = b * PER + i;
            cars_vin("5YJ3E1EA", serial, vin);
            o += (size_t)snprintf(body + o, cap - o,
                                  "%s{\"vin\":\"%s\",\"make\":\"Bulkmake\",\"model\":\"Series%d\","
                                  "\"year\":%d,\"price\":%d}",
                                  i ? "," : "", vin, serial % 50, 2000 + serial % 25,
                                  100000 + serial);
        }
        snprintf(body + o, cap - o, "]}");
        CHECK(http_do("POST", url, "application/json", NULL, body, strlen(body), &r) == 201,
              "import batch %d: %ld %.300s", b, r.status, r.body);
        last_commit = tu_now_ms();
    }
    free(body);
    long long n = cars_wait_total(&s, "bulkmake", BATCHES * PER, DEADLINE_MS);
    long long done = tu_now_ms();
    CHECK(n == BATCHES * PER, "after %d s only %lld of %d imported cars are searchable",
          DEADLINE_MS / 1000, n, BATCHES * PER);
    printf("imported %d cars in %d requests in %lld ms; all searchable %lld ms after the last "
           "commit\n",
           BATCHES * PER, BATCHES, last_commit - t0, done - last_commit);
    /* Spot checks: one model, one year. */
    CHECK(cars_search_total(&s, "bulkmake series7", &r) == BATCHES * PER / 50, "series7: %s",
          r.body);
    CHECK(cars_search_total(&s, "bulkmake 2003", &r) == BATCHES * PER / 25, "2003: %s", r.body);
    cars_teardown(&s);
    printf("PASS cars_bulk_import\n");
    return 0;
}
