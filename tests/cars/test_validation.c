/* Bad input gets a clear 4xx and writes nothing: VIN (length, letters I/O/Q,
 * check digit), year, price, missing and unknown fields, bad JSON, wrong
 * content type, bad ids, unknown cars, a taken VIN, a bad search, an import
 * with a bad car or a repeated VIN (all or nothing). */
#include <string.h>

#include "cars_testlib.h"

static void expect(const cars_svc_t *s, const char *method, const char *path, const char *ctype,
                   const char *body, long status, const char *needle)
{
    char url[256];
    http_resp_t r;
    snprintf(url, sizeof(url), "%s%s", s->url, path);
    http_do(method, url, ctype, NULL, body, body ? strlen(body) : 0, &r);
    CHECK(r.status == status, "%s %s %s: status %ld, want %ld: %s", method, path, body ? body : "",
          r.status, status, r.body);
    CHECK(strstr(r.content_type, "application/problem+json"), "%s %s: content type %s", method,
          path, r.content_type);
    CHECK(!needle || strstr(r.body, needle), "%s %s %s: \"%s\" not in %s", method, path,
          body ? body : "", needle, r.body);
}

#define J "application/json"

int main(void)
{
    cars_svc_t s;
    cars_start(&s, "cars_validation", NULL);
    PGconn *db = tu_connect(s.db);
    char good[18], b[512];
    cars_vin("1HGCM826", 7, good);

    /* VIN */
    expect(&s, "POST", "/cars", J, cars_body("1HGCM82633A00435", "Honda", "Accord", 2003, 1), 400,
           "exactly 17 characters");
    expect(&s, "POST", "/cars", J, cars_body("1HGCM82633A0043521", "Honda", "Accord", 2003, 1), 400,
           "exactly 17 characters");
    expect(&s, "POST", "/cars", J, cars_body("1HGCM82633A00I352", "Honda", "Accord", 2003, 1), 400,
           "except I, O and Q");
    expect(&s, "POST", "/cars", J, cars_body("1HGCM82633A00O352", "Honda", "Accord", 2003, 1), 400,
           "except I, O and Q");
    expect(&s, "POST", "/cars", J, cars_body("1HGCM82633A0-4352", "Honda", "Accord", 2003, 1), 400,
           "not allowed");
    expect(&s, "POST", "/cars", J, cars_body("1HGCM82643A004352", "Honda", "Accord", 2003, 1), 400,
           "check digit");
    expect(&s, "POST", "/cars", J,
           "{\"vin\":17,\"make\":\"Honda\",\"model\":\"Accord\",\"year\":2003,\"price\":1}", 400,
           "vin must be a string");
    /* year */
    expect(&s, "POST", "/cars", J, cars_body(good, "Honda", "Accord", 1885, 1), 400,
           "year must be an integer model year from 1886");
    expect(&s, "POST", "/cars", J, cars_body(good, "Honda", "Accord", 2999, 1), 400,
           "year must be");
    snprintf(b, sizeof(b),
             "{\"vin\":\"%s\",\"make\":\"Honda\",\"model\":\"Accord\",\"year\":\"2003\","
             "\"price\":1}",
             good);
    expect(&s, "POST", "/cars", J, b, 400, "year must be");
    /* price */
    expect(&s, "POST", "/cars", J, cars_body(good, "Honda", "Accord", 2003, 0), 400,
           "price must be a positive integer number of minor units");
    expect(&s, "POST", "/cars", J, cars_body(good, "Honda", "Accord", 2003, -5), 400,
           "price must be");
    snprintf(b, sizeof(b),
             "{\"vin\":\"%s\",\"make\":\"Honda\",\"model\":\"Accord\",\"year\":2003,"
             "\"price\":12.5}",
             good);
    expect(&s, "POST", "/cars", J, b, 400, "price must be");
    /* missing, blank and unknown fields */
    static const char *const fields[] = {"vin", "make", "model", "year", "price"};
    for (int i = 0; i < 5; i++) {
        char want[64];
        snprintf(b, sizeof(b), "%s", cars_body(good, "Honda", "Accord", 2003, 100));
        char *p = strstr(b, fields[i]) - 1; /* the opening quote of the member */
        char *end = strchr(p + strlen(fields[i]) + 3, i < 4 ? ',' : '}');
        if (i < 4)
            memmove(p, end + 1, strlen(end + 1) + 1);
        else
            memmove(p - 1, end, strlen(end) + 1); /* drop ,"price":100 */
        snprintf(want, sizeof(want), "%s is required", fields[i]);
        expect(&s, "POST", "/cars", J, b, 400, want);
    }
    expect(&s, "POST", "/cars", J, cars_body(good, " ", "Accord", 2003, 1), 400,
           "make must be a non-blank string");
    snprintf(b, sizeof(b),
             "{\"vin\":\"%s\",\"make\":\"Honda\",\"model\":\"Accord\",\"year\":2003,\"price\":1,"
             "\"colour\":\"red\"}",
             good);
    expect(&s, "POST", "/cars", J, b, 400, "unknown field \\\"colour\\\"");
    /* bad JSON, not an object, wrong content type */
    expect(&s, "POST", "/cars", J, "{\"vin\":", 400, NULL);
    expect(&s, "POST", "/cars", J, "[1,2]", 400, NULL);
    expect(&s, "POST", "/cars", "text/plain", cars_body(good, "Honda", "Accord", 2003, 1), 415,
           NULL);
    CHECK(tu_query_ll(db, "SELECT count(*) FROM cars") == 0, "a bad request wrote a car");

    /* A lower-case VIN is accepted upper-cased; the same VIN again is 409. */
    char lower[18];
    for (int i = 0; i < 18; i++)
        lower[i] = (char)((good[i] >= 'A' && good[i] <= 'Z') ? good[i] + 32 : good[i]);
    http_resp_t r;
    char id[37];
    CHECK(cars_register(&s, cars_body(lower, "Honda", "Accord", 2003, 100), id, &r) == 201 &&
              strstr(r.body, good),
          "lower-case vin: %ld %s", r.status, r.body);
    expect(&s, "POST", "/cars", J, cars_body(good, "Honda", "Civic", 2004, 100), 409,
           "already registered");

    /* ids and unknown cars */
    expect(&s, "GET", "/cars/not-a-uuid", NULL, NULL, 400, "not a UUID");
    expect(&s, "PUT", "/cars/not-a-uuid", J, "{\"price\":5}", 400, "not a UUID");
    expect(&s, "DELETE", "/cars/not-a-uuid", NULL, NULL, 400, "not a UUID");
    const char *ghost = "/cars/01900000-0000-7000-8000-00000000abcd";
    expect(&s, "GET", ghost, NULL, NULL, 404, "no car with id");
    expect(&s, "PUT", ghost, J, "{\"price\":5}", 404, "no car with id");
    expect(&s, "DELETE", ghost, NULL, NULL, 404, "no car with id");
    /* update: nothing to change, bad values, a VIN another car has */
    char path[128];
    snprintf(path, sizeof(path), "/cars/%s", id);
    expect(&s, "PUT", path, J, "{}", 400, "at least one of");
    expect(&s, "PUT", path, J, "{\"price\":0}", 400, "price must be");
    expect(&s, "PUT", path, J, "{\"year\":1700}", 400, "year must be");
    char other[18];
    cars_vin("1HGCM826", 8, other);
    CHECK(cars_register(&s, cars_body(other, "Honda", "Civic", 2004, 100), NULL, &r) == 201,
          "second car: %ld %s", r.status, r.body);
    snprintf(b, sizeof(b), "{\"vin\":\"%s\"}", other);
    expect(&s, "PUT", path, J, b, 409, "already registered");
    CHECK(tu_query_ll(db, "SELECT max(version) FROM cars") == 1,
          "a refused update bumped a version");

    /* search */
    expect(&s, "GET", "/cars/search", NULL, NULL, 400, "q is required");
    expect(&s, "GET", "/cars/search?q=", NULL, NULL, 400, "q is required");
    expect(&s, "GET", "/cars/search?q=%21%21", NULL, NULL, 400, "no words");
    /* not UTF-8: a 400, not the database's (or OpenSearch's) error (fuzz/fuzz_cars.c) */
    expect(&s, "GET", "/cars/search?q=toyota%FF", NULL, NULL, 400, "not UTF-8");
    expect(&s, "GET", "/cars/search?q=honda&limit=0", NULL, NULL, 400, "limit must be");
    expect(&s, "GET", "/cars/search?q=honda&limit=x", NULL, NULL, 400, "limit must be");

    /* import: a bad car (named by its index), a VIN twice, a taken VIN,
     * an empty list: nothing is imported */
    char v1[18], v2[18];
    cars_vin("2T1BURHE", 11, v1), cars_vin("2T1BURHE", 12, v2);
    snprintf(b, sizeof(b),
             "{\"cars\":[{\"vin\":\"%s\",\"make\":\"Kia\",\"model\":\"Rio\",\"year\":2019,"
             "\"price\":7},{\"vin\":\"%s\",\"make\":\"Kia\",\"model\":\"Rio\",\"year\":2019,"
             "\"price\":-7}]}",
             v1, v2);
    expect(&s, "POST", "/cars/import", J, b, 400, "cars[1]: price must be");
    snprintf(b, sizeof(b),
             "{\"cars\":[{\"vin\":\"%s\",\"make\":\"Kia\",\"model\":\"Rio\",\"year\":2019,"
             "\"price\":7},{\"vin\":\"%s\",\"make\":\"Kia\",\"model\":\"Rio\",\"year\":2019,"
             "\"price\":7}]}",
             v1, v1);
    expect(&s, "POST", "/cars/import", J, b, 409, "more than once");
    snprintf(b, sizeof(b),
             "{\"cars\":[{\"vin\":\"%s\",\"make\":\"Kia\",\"model\":\"Rio\",\"year\":2019,"
             "\"price\":7},{\"vin\":\"%s\",\"make\":\"Kia\",\"model\":\"Rio\",\"year\":2019,"
             "\"price\":7}]}",
             v1, good);
    expect(&s, "POST", "/cars/import", J, b, 409, "already registered");
    expect(&s, "POST", "/cars/import", J, "{\"cars\":[]}", 400, "array of 1 to 1000");
    expect(&s, "POST", "/cars/import", J, "{}", 400, "cars is required");
    CHECK(tu_query_ll(db, "SELECT count(*) FROM cars WHERE make = 'Kia'") == 0,
          "a refused import wrote cars");
    CHECK(tu_query_ll(db, "SELECT count(*) FROM cars") == 2, "car count");

    PQfinish(db);
    cars_teardown(&s);
    printf("PASS cars_validation\n");
    return 0;
}
