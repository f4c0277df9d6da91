/*
 * services/cars: the car fields of POST /cars, PATCH /cars/{id} and
 * POST /cars/import (cars_car_parse), and the GET /cars/search query
 * (cars_search_words).
 *
 * Input: the body (JSON, read as the HTTP layer does); its first line is
 * also the search query. An accepted car holds a valid VIN (check digit),
 * a make and model of 1..64 bytes without control bytes or NUL, a year
 * and a price in range; a query's words are UTF-8 text made of letters,
 * digits and the query syntax only.
 */
#include <ctype.h>
#include <jansson.h>
#include <string.h>

#include "cars.h"
#include "fuzz_common.h"

static void check_text(const char *s, const char *what)
{
    size_t n = strlen(s);
    FUZZ_CHECK(n >= 1 && n <= 64, "%s of %zu bytes", what, n);
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK((unsigned char)s[i] >= 0x20, "%s with a control byte", what);
}

static void check_car(const json_t *obj, unsigned required)
{
    car_t car;
    char why[512] = "";
    if (cars_car_parse(obj, required, required ? "cars[0]: " : NULL, &car, why, sizeof(why))) {
        FUZZ_CHECK(why[0], "refused without a reason");
        return;
    }
    FUZZ_CHECK((car.has & required) == required && car.has, "fields 0x%x of 0x%x", car.has,
               required);
    if (car.has & CAR_HAS_VIN) {
        FUZZ_CHECK(strlen(car.vin) == 17 && cars_vin_check_digit(car.vin) == car.vin[8], "vin %s",
                   car.vin);
        for (int i = 0; i < 17; i++)
            FUZZ_CHECK(isdigit((unsigned char)car.vin[i]) ||
                           (isupper((unsigned char)car.vin[i]) && !strchr("IOQ", car.vin[i])),
                       "vin %s", car.vin);
    }
    if (car.has & CAR_HAS_MAKE)
        check_text(car.make, "make");
    if (car.has & CAR_HAS_MODEL)
        check_text(car.model, "model");
    if (car.has & CAR_HAS_YEAR)
        FUZZ_CHECK(car.year >= 1886 && car.year <= cars_year_max(), "year %d", car.year);
    if (car.has & CAR_HAS_PRICE)
        FUZZ_CHECK(car.price > 0 && car.price <= 100000000000LL, "price %lld", car.price);
}

static void check_query(const char *q)
{
    char out[200 * 3 + 64], why[256] = "";
    for (int pg = 0; pg < 2; pg++) {
        int n = cars_search_words(q, pg, out, sizeof(out), why, sizeof(why));
        if (n == 0) {
            FUZZ_CHECK(why[0], "refused without a reason");
            continue;
        }
        FUZZ_CHECK(n >= 1 && n <= 16 && strlen(q) <= 200, "%d words", n);
        json_t *t = json_string(out);
        FUZZ_CHECK(t, "the words are not UTF-8: %s", out);
        json_decref(t);
        for (const unsigned char *p = (const unsigned char *)out; *p; p++)
            FUZZ_CHECK(isalnum(*p) || *p >= 0x80 || strchr(" &:*", *p), "query %s", out);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *doc = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (json_is_object(doc)) {
        check_car(doc, CAR_HAS_ALL);
        check_car(doc, 0);
        json_t *cars = json_object_get(doc, "cars");
        size_t i;
        json_t *car;
        json_array_foreach(cars, i, car)
        {
            if (i == 8)
                break;
            check_car(car, CAR_HAS_ALL);
        }
    }
    json_decref(doc);
    char *q = fuzz_str(data, size);
    char *nl = strchr(q, '\n');
    if (nl)
        *nl = '\0';
    check_query(q);
    free(q);
    return 0;
}
