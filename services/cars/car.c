/* The car's fields and their rules: VIN (ISO 3779 characters, North-American
 * check digit in position 9), make, model, model year, price. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cars.h"

#define PRICE_MAX 100000000000LL /* 1e11 minor units: a billion in major units */
#define YEAR_MIN 1886            /* the first production car */
#define EXAMPLE                                                                                    \
    "{\"vin\":\"1HGCM82633A004352\",\"make\":\"Honda\",\"model\":\"Accord\",\"year\":2003,"        \
    "\"price\":1250000}"

/* Transliteration of a VIN character to its value; -1 for I, O, Q and
 * anything that is not a digit or an upper-case letter. */
static int vin_value(char ch)
{
    static const char *letters = "ABCDEFGHJKLMNPRSTUVWXYZ";
    static const int values[] = {1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4,
                                 5, 7, 9, 2, 3, 4, 5, 6, 7, 8, 9};
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    const char *p = ch ? strchr(letters, ch) : NULL;
    return p ? values[p - letters] : -1;
}

char cars_vin_check_digit(const char *vin)
{
    static const int weights[17] = {8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2};
    if (!vin || strlen(vin) != 17)
        return 0;
    int sum = 0;
    for (int i = 0; i < 17; i++) {
        int v = vin_value(vin[i]);
        if (v < 0)
            return 0;
        sum += v * weights[i];
    }
    int r = sum % 11;
    return r == 10 ? 'X' : (char)('0' + r);
}

int cars_year_max(void)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    return tm.tm_year + 1900 + 1;
}

/* Copies the VIN upper-cased into out and checks it. */
static int parse_vin(const json_t *v, char out[18], char *why, size_t why_size, const char *where)
{
    const char *s = json_string_value(v);
    size_t n = s ? json_string_length(v) : 0;
    if (!s || n != 17 || strlen(s) != 17) {
        snprintf(why, why_size,
                 "%svin must be a string of exactly 17 characters (ISO 3779), e.g. "
                 "\"1HGCM82633A004352\"",
                 where);
        return -1;
    }
    for (int i = 0; i < 17; i++)
        out[i] = (char)toupper((unsigned char)s[i]);
    out[17] = '\0';
    for (int i = 0; i < 17; i++)
        if (vin_value(out[i]) < 0) {
            snprintf(why, why_size,
                     "%svin \"%s\": character %d ('%c') is not allowed; a VIN uses digits and the "
                     "letters A-Z except I, O and Q",
                     where, out, i + 1, isprint((unsigned char)out[i]) ? out[i] : '?');
            return -1;
        }
    char want = cars_vin_check_digit(out);
    if (out[8] != want) {
        snprintf(why, why_size,
                 "%svin \"%s\": check digit (9th character) is '%c' but the other characters call "
                 "for '%c'; is there a typo?",
                 where, out, out[8], want);
        return -1;
    }
    return 0;
}

static int parse_text(const json_t *v, const char *name, char *out, size_t out_size, char *why,
                      size_t why_size, const char *where)
{
    const char *s = json_string_value(v);
    size_t n = s ? json_string_length(v) : 0;
    int blank = 1;
    for (size_t i = 0; s && i < n; i++)
        blank &= isspace((unsigned char)s[i]) != 0;
    if (!s || n == 0 || n >= out_size || strlen(s) != n || blank) {
        snprintf(why, why_size, "%s%s must be a non-blank string of 1 to %zu characters", where,
                 name, out_size - 1);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20) {
            snprintf(why, why_size, "%s%s must not contain control characters", where, name);
            return -1;
        }
    memcpy(out, s, n + 1);
    return 0;
}

int cars_car_parse(const json_t *obj, unsigned required, const char *where, car_t *car, char *why,
                   size_t why_size)
{
    static const struct {
        const char *name;
        unsigned bit;
    } fields[] = {{"vin", CAR_HAS_VIN},
                  {"make", CAR_HAS_MAKE},
                  {"model", CAR_HAS_MODEL},
                  {"year", CAR_HAS_YEAR},
                  {"price", CAR_HAS_PRICE}};
    memset(car, 0, sizeof(*car));
    where = where ? where : "";
    if (!json_is_object(obj)) {
        snprintf(why, why_size, "%sa car must be a JSON object, e.g. " EXAMPLE, where);
        return -1;
    }
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        const json_t *v = json_object_get(obj, fields[i].name);
        if (!v || json_is_null(v)) {
            if (required & fields[i].bit) {
                snprintf(why, why_size,
                         "%s%s is required; a car needs vin, make, model, year "
                         "and price, e.g. " EXAMPLE,
                         where, fields[i].name);
                return -1;
            }
            continue;
        }
        int rc = 0;
        switch (fields[i].bit) {
        case CAR_HAS_VIN:
            rc = parse_vin(v, car->vin, why, why_size, where);
            break;
        case CAR_HAS_MAKE:
            rc = parse_text(v, "make", car->make, sizeof(car->make), why, why_size, where);
            break;
        case CAR_HAS_MODEL:
            rc = parse_text(v, "model", car->model, sizeof(car->model), why, why_size, where);
            break;
        case CAR_HAS_YEAR:
            if (!json_is_integer(v) || json_integer_value(v) < YEAR_MIN ||
                json_integer_value(v) > cars_year_max()) {
                snprintf(why, why_size, "%syear must be an integer model year from %d to %d", where,
                         YEAR_MIN, cars_year_max());
                rc = -1;
            } else {
                car->year = (int)json_integer_value(v);
            }
            break;
        case CAR_HAS_PRICE:
            if (!json_is_integer(v) || json_integer_value(v) <= 0 ||
                json_integer_value(v) > PRICE_MAX) {
                snprintf(why, why_size,
                         "%sprice must be a positive integer number of minor units (cents), "
                         "1..%lld, e.g. 1250000 for 12,500.00",
                         where, PRICE_MAX);
                rc = -1;
            } else {
                car->price = (long long)json_integer_value(v);
            }
            break;
        }
        if (rc)
            return -1;
        car->has |= fields[i].bit;
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        /* what GET /cars/{id} returns besides the fields: read-only, ignored */
        int known = !strcmp(key, "id") || !strcmp(key, "version") || !strcmp(key, "created_at") ||
                    !strcmp(key, "updated_at");
        for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
            known |= !strcmp(key, fields[i].name);
        if (!known) {
            snprintf(why, why_size,
                     "%sunknown field \"%.40s\"; a car has vin, make, model, year and price", where,
                     key);
            return -1;
        }
    }
    if (!car->has) {
        snprintf(why, why_size, "%sgive at least one of vin, make, model, year, price", where);
        return -1;
    }
    return 0;
}
