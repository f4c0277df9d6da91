/* A table of bad requests: each gets the right 4xx as application/problem+json
 * (type, title, status, detail) and nothing is written. */
#include <jansson.h>
#include <string.h>

#include "orders_testlib.h"

#define OK_ITEMS "\"items\":[{\"sku\":\"SKU-1\",\"quantity\":1}]"

typedef struct bad_s {
    const char *name, *method, *path, *ctype, *key, *body;
    long status;
    const char *type; /* substring of the problem type */
} bad_t;

static char long_key[300];
static char *big_body;

int main(void)
{
    memset(long_key, 'k', 256);
    big_body = malloc(70000);
    CHECK(big_body, "oom");
    memset(big_body, ' ', 69999);
    memcpy(big_body, "{\"user_id\":\"", 12);
    big_body[69997] = '"', big_body[69998] = '}', big_body[69999] = '\0';
    for (int i = 12; i < 69997; i++)
        big_body[i] = 'x';
    const char *J = "application/json";
    const bad_t cases[] = {
        /* No body at all is seed 001's demo order (see the end); a body of
         * blanks is a body, and not JSON. */
        {"blank body", "POST", "/orders", J, NULL, "  ", 400, "malformed-json"},
        {"wrong content type", "POST", "/orders", "text/plain", NULL,
         "{\"user_id\":\"u\"," OK_ITEMS ",\"amount\":1}", 415, "unsupported-media-type"},
        {"form content type", "POST", "/orders", "application/x-www-form-urlencoded", NULL,
         "user_id=u", 415, "unsupported-media-type"},
        {"malformed JSON", "POST", "/orders", J, NULL, "{\"user_id\":", 400, "malformed-json"},
        {"JSON array", "POST", "/orders", J, NULL, "[1,2]", 400, "malformed-json"},
        {"duplicate member", "POST", "/orders", J, NULL,
         "{\"user_id\":\"a\",\"user_id\":\"b\"," OK_ITEMS ",\"amount\":1}", 400, "malformed-json"},
        {"invalid UTF-8", "POST", "/orders", J, NULL,
         "{\"user_id\":\"\xff\xfe\"," OK_ITEMS ",\"amount\":1}", 400, "malformed-json"},
        {"missing user_id", "POST", "/orders", J, NULL, "{" OK_ITEMS ",\"amount\":1}", 400,
         "validation-error"},
        {"user_id number", "POST", "/orders", J, NULL, "{\"user_id\":42," OK_ITEMS ",\"amount\":1}",
         400, "validation-error"},
        {"user_id empty", "POST", "/orders", J, NULL,
         "{\"user_id\":\"\"," OK_ITEMS ",\"amount\":1}", 400, "validation-error"},
        {"missing amount", "POST", "/orders", J, NULL, "{\"user_id\":\"u\"," OK_ITEMS "}", 400,
         "validation-error"},
        {"amount string", "POST", "/orders", J, NULL,
         "{\"user_id\":\"u\"," OK_ITEMS ",\"amount\":\"1000\"}", 400, "validation-error"},
        {"amount negative", "POST", "/orders", J, NULL,
         "{\"user_id\":\"u\"," OK_ITEMS ",\"amount\":-5}", 400, "validation-error"},
        {"amount fractional", "POST", "/orders", J, NULL,
         "{\"user_id\":\"u\"," OK_ITEMS ",\"amount\":10.5}", 400, "validation-error"},
        {"missing items", "POST", "/orders", J, NULL, "{\"user_id\":\"u\",\"amount\":1}", 400,
         "validation-error"},
        {"items empty", "POST", "/orders", J, NULL, "{\"user_id\":\"u\",\"items\":[],\"amount\":1}",
         400, "validation-error"},
        {"items object", "POST", "/orders", J, NULL,
         "{\"user_id\":\"u\",\"items\":{\"sku\":\"SKU-1\"},\"amount\":1}", 400, "validation-error"},
        {"quantity zero", "POST", "/orders", J, NULL,
         "{\"user_id\":\"u\",\"items\":[{\"sku\":\"SKU-1\",\"quantity\":0}],\"amount\":1}", 400,
         "validation-error"},
        {"quantity negative", "POST", "/orders", J, NULL,
         "{\"user_id\":\"u\",\"items\":[{\"sku\":\"SKU-1\",\"quantity\":-2}],\"amount\":1}", 400,
         "validation-error"},
        {"quantity string", "POST", "/orders", J, NULL,
         "{\"user_id\":\"u\",\"items\":[{\"sku\":\"SKU-1\",\"quantity\":\"2\"}],\"amount\":1}", 400,
         "validation-error"},
        {"sku missing", "POST", "/orders", J, NULL,
         "{\"user_id\":\"u\",\"items\":[{\"quantity\":2}],\"amount\":1}", 400, "validation-error"},
        {"sku twice", "POST", "/orders", J, NULL,
         "{\"user_id\":\"u\",\"items\":[{\"sku\":\"SKU-1\",\"quantity\":1},{\"sku\":\"SKU-1\","
         "\"quantity\":2}],"
         "\"amount\":1}",
         400, "validation-error"},
        {"unknown sku", "POST", "/orders", J, NULL,
         "{\"user_id\":\"u\",\"items\":[{\"sku\":\"SKU-1\",\"quantity\":1},{\"sku\":\"NO-SUCH\","
         "\"quantity\":1}],"
         "\"amount\":1}",
         422, "unknown-sku"},
        {"body too large", "POST", "/orders", J, NULL, big_body, 413, "body-too-large"},
        {"empty Idempotency-Key", "POST", "/orders", J, "",
         "{\"user_id\":\"u\"," OK_ITEMS ",\"amount\":1}", 400, "invalid-idempotency-key"},
        {"Idempotency-Key too long", "POST", "/orders", J, long_key,
         "{\"user_id\":\"u\"," OK_ITEMS ",\"amount\":1}", 400, "invalid-idempotency-key"},
        {"Idempotency-Key not ASCII", "POST", "/orders", J, "cl\xc3\xa9",
         "{\"user_id\":\"u\"," OK_ITEMS ",\"amount\":1}", 400, "invalid-idempotency-key"},
        {"order id not a UUID", "GET", "/orders/12345", NULL, NULL, NULL, 400, "invalid-order-id"},
        {"order absent", "GET", "/orders/01a20326-7e73-74b6-a6a1-b2a243500364", NULL, NULL, NULL,
         404, "order-not-found"},
        {"DELETE an order", "DELETE", "/orders/01a20326-7e73-74b6-a6a1-b2a243500364", NULL, NULL,
         NULL, 405, "method-not-allowed"},
        {"GET /orders", "GET", "/orders", NULL, NULL, NULL, 405, "method-not-allowed"},
        {"unknown path", "GET", "/nope", NULL, NULL, NULL, 404, "not-found"},
    };
    int n = (int)(sizeof(cases) / sizeof(cases[0]));
    CHECK(n >= 15, "table too small");

    svc_t s;
    svc_start(&s, "orders_bad_requests", NULL);
    PGconn *db = tu_connect(s.db);
    for (int i = 0; i < n; i++) {
        const bad_t *c = &cases[i];
        char url[256];
        snprintf(url, sizeof(url), "%s%s", s.url, c->path);
        http_resp_t r;
        http_do(c->method, url, c->ctype, c->key, c->body, c->body ? strlen(c->body) : 0, &r);
        CHECK(r.status == c->status, "[%s] status %ld, want %ld: %s", c->name, r.status, c->status,
              r.body);
        CHECK(!strcmp(r.content_type, "application/problem+json"), "[%s] content type \"%s\"",
              c->name, r.content_type);
        json_t *p = json_loads(r.body, 0, NULL);
        CHECK(p, "[%s] problem body is not JSON: %s", c->name, r.body);
        const char *type = json_string_value(json_object_get(p, "type"));
        const char *title = json_string_value(json_object_get(p, "title"));
        const char *detail = json_string_value(json_object_get(p, "detail"));
        CHECK(type && strstr(type, c->type), "[%s] type %s, want *%s*", c->name,
              type ? type : "(none)", c->type);
        CHECK(title && *title, "[%s] no title", c->name);
        CHECK(detail && strlen(detail) > 10, "[%s] detail too thin: %s", c->name,
              detail ? detail : "(none)");
        CHECK(json_integer_value(json_object_get(p, "status")) == c->status, "[%s] status member",
              c->name);
        printf("ok %-28s %ld %s\n", c->name, r.status, detail);
        json_decref(p);
    }
    /* Nothing was written by any of them. */
    CHECK(tu_query_ll(db, "SELECT count(*) FROM orders") == 0, "orders written");
    CHECK(tu_query_ll(db, "SELECT count(*) FROM order_items") == 0, "items written");
    CHECK(tu_query_ll(db, "SELECT count(*) FROM outbox") == 0, "events written");
    CHECK(tu_query_ll(db, "SELECT count(*) FROM outbox_http_idempotency") == 0, "keys written");
    CHECK(tu_query_ll(db, "SELECT count(*) FROM outbox_dead_letter") == 0, "dead letters");
    CHECK(tu_query_ll(db, "SELECT sum(stock) FROM inventory") == 4000003, "stock moved");
    /* The service is still fine afterwards. */
    char url[256];
    snprintf(url, sizeof(url), "%s/orders", s.url);
    http_resp_t r;
    const char *good = "{\"user_id\":\"u\"," OK_ITEMS ",\"amount\":1}";
    CHECK(http_do("POST", url, "application/json", "after-bad", good, strlen(good), &r) == 201,
          "good after bad: %ld", r.status);
    /* Seed 001's quick start: no body at all (curl -X POST ... -H
     * "Idempotency-Key: order-123") is the demo order, user-456 / 1000. */
    CHECK(http_do("POST", url, NULL, "order-123", NULL, 0, &r) == 201, "no body: %ld %s", r.status,
          r.body);
    CHECK(strstr(r.body, "\"user_id\":\"user-456\"") && strstr(r.body, "\"amount\":1000"),
          "no body is not the demo order: %s", r.body);
    svc_teardown(&s);
    PQfinish(db);
    free(big_body);
    printf("PASS orders_bad_requests (%d cases)\n", n);
    return 0;
}
