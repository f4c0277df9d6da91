/*
 * services/pizza: the POST /pizza body (pizza_order_check) and the
 * pipeline's own option values (pizza_parse_ms, pizza_parse_rate: from
 * the environment or flags, e.g. PIZZA_PAYMENT_DELAY=250ms).
 *
 * Input: the body (JSON, read as the HTTP layer does); its first line is
 * also an option value. An accepted order has texts without control
 * bytes, one of the four sizes, a quantity of 1..100 and a price of at
 * most 100000 with two decimals; an accepted duration is 0..1 h, a rate
 * 0..1.
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "pizza.h"

static void check_text(const char *s, size_t max, const char *what)
{
    size_t n = strlen(s);
    FUZZ_CHECK(n >= 1 && n <= max, "%s of %zu bytes", what, n);
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK((unsigned char)s[i] >= 0x20 && s[i] != 0x7f, "%s with a control byte", what);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *doc = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (json_is_object(doc)) {
        pizza_order_t o;
        char why[512] = "";
        if (pizza_order_check(doc, &o, why, sizeof(why)) == 0) {
            check_text(o.flavor, 64, "flavor");
            check_text(o.address, 256, "address");
            check_text(o.user_name, 128, "user_name");
            FUZZ_CHECK(o.size && (!strcmp(o.size, "Small") || !strcmp(o.size, "Medium") ||
                                  !strcmp(o.size, "Large") || !strcmp(o.size, "Extra Large")),
                       "size");
            int q = atoi(o.quantity);
            FUZZ_CHECK(q >= 1 && q <= 100, "quantity %s", o.quantity);
            char *end;
            double p = strtod(o.price, &end);
            const char *dot = strchr(o.price, '.');
            FUZZ_CHECK(!*end && p > 0 && p <= 100000.0 && dot && strlen(dot) == 3, "price %s",
                       o.price);
        } else {
            FUZZ_CHECK(why[0], "refused without a reason");
        }
    }
    json_decref(doc);

    char *v = fuzz_str(data, size);
    char *nl = strchr(v, '\n');
    if (nl)
        *nl = '\0';
    int64_t ms = -1;
    if (pizza_parse_ms(v, &ms) == 0)
        FUZZ_CHECK(ms >= 0 && ms <= 3600 * 1000, "\"%s\" is %lld ms", v, (long long)ms);
    double rate = -1;
    if (pizza_parse_rate(v, &rate) == 0)
        FUZZ_CHECK(rate >= 0 && rate <= 1, "\"%s\" is a rate of %g", v, rate);
    free(v);
    return 0;
}
