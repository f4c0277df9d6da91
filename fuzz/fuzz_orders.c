/*
 * services/orders: the POST /orders body (orders_validate, after the JSON
 * the HTTP layer reads: an object, duplicate members refused) and the
 * traceparent header it passes on to the event (orders_traceparent_valid).
 *
 * Input: the body; its first line is also tried as a traceparent value.
 * An accepted order has a user of 1..128 bytes, an amount in range and
 * 1..100 items, each sku once with a quantity of 1..10000; its strings
 * hold no NUL (they go on as C strings).
 */
#include <ctype.h>
#include <jansson.h>
#include <string.h>

#include "fuzz_common.h"
#include "orders.h"

static void check_traceparent(const char *t)
{
    if (!orders_traceparent_valid(t))
        return;
    FUZZ_CHECK(strlen(t) == 55 && t[2] == '-' && t[35] == '-' && t[52] == '-',
               "traceparent \"%s\" accepted", t);
    for (int i = 0; i < 55; i++)
        if (i != 2 && i != 35 && i != 52)
            FUZZ_CHECK(isdigit((unsigned char)t[i]) || (t[i] >= 'a' && t[i] <= 'f'),
                       "traceparent \"%s\" accepted", t);
    FUZZ_CHECK(strncmp(t, "ff", 2) && strspn(t + 3, "0") < 32 && strspn(t + 36, "0") < 16,
               "traceparent \"%s\" accepted", t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *body = fuzz_str(data, size);
    check_traceparent(body);
    char *nl = strchr(body, '\n');
    if (nl) {
        *nl = '\0';
        check_traceparent(body);
        *nl = '\n';
    }
    json_t *doc = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (json_is_object(doc)) {
        const char *user = NULL;
        long long amount = 0;
        json_t *items = NULL;
        char why[512] = "";
        if (orders_validate(doc, &user, &amount, &items, why, sizeof(why)) == 0) {
            /* strings go on as C strings (SQL parameters, log fields): no NUL inside */
            FUZZ_CHECK(user && strlen(user) >= 1 &&
                           strlen(user) == json_string_length(json_object_get(doc, "user_id")) &&
                           strlen(user) <= 128,
                       "user \"%s\" accepted", user ? user : "");
            FUZZ_CHECK(amount > 0 && amount <= 100000000000LL, "amount %lld", amount);
            FUZZ_CHECK(json_is_array(items) && json_array_size(items) >= 1 &&
                           json_array_size(items) <= 100,
                       "items");
            size_t i, k;
            json_t *it, *prev;
            json_array_foreach(items, i, it)
            {
                const char *sku = json_string_value(json_object_get(it, "sku"));
                json_int_t q = json_integer_value(json_object_get(it, "quantity"));
                size_t sl = json_string_length(json_object_get(it, "sku"));
                FUZZ_CHECK(sku && *sku && strlen(sku) == sl && sl <= 64, "sku \"%s\" accepted",
                           sku ? sku : "");
                FUZZ_CHECK(q >= 1 && q <= 10000, "quantity %lld", (long long)q);
                json_array_foreach(items, k, prev)
                {
                    if (k < i)
                        FUZZ_CHECK(strcmp(json_string_value(json_object_get(prev, "sku")), sku),
                                   "sku \"%s\" twice", sku);
                }
            }
            /* the normalised items go to SQL as JSON text */
            char *text = json_dumps(items, JSON_COMPACT);
            FUZZ_CHECK(text, "items cannot be written as JSON");
            /* the event and the answer, written without jansson: the bytes
             * jansson writes for the same documents */
            static const char id[] = "01a22eea-795e-72ba-9f55-3ddbe649e89d",
                              eid[] = "01a22eea-795f-7079-a11a-eff106537e98",
                              at[] = "2026-11-30T23:54:21.025000Z";
            char *payload = NULL, *answer = NULL;
            FUZZ_CHECK(orders_created_texts(id, user, amount, text, at, eid, &payload, &answer) ==
                           0,
                       "texts not written");
            json_t *pd = json_pack("{s:s,s:s,s:I,s:O,s:s,s:s}", "order_id", id, "user_id", user,
                                   "amount", (json_int_t)amount, "items", items, "status",
                                   "pending", "created_at", at);
            json_t *ad =
                json_pack("{s:s,s:s,s:s,s:s,s:I,s:O,s:s,s:s}", "status", "success", "order_id", id,
                          "order_status", "pending", "user_id", user, "amount", (json_int_t)amount,
                          "items", items, "event_id", eid, "created_at", at);
            char *pw = json_dumps(pd, JSON_COMPACT | JSON_PRESERVE_ORDER),
                 *aw = json_dumps(ad, JSON_COMPACT | JSON_PRESERVE_ORDER);
            FUZZ_CHECK(pw && !strcmp(payload, pw), "payload %s, jansson %s", payload, pw);
            FUZZ_CHECK(aw && !strcmp(answer, aw), "answer %s, jansson %s", answer, aw);
            free(pw);
            free(aw);
            json_decref(pd);
            json_decref(ad);
            free(payload);
            free(answer);
            free(text);
            json_decref(items);
        } else {
            FUZZ_CHECK(why[0], "refused without a reason");
        }
    }
    json_decref(doc);
    free(body);
    return 0;
}
