/* chaos_orders: the order system as six processes (two APIs, two relays,
 * two consumer processes with the inventory and email groups) under
 * OUTBOX_CHAOS_EVENTS orders from 8 clients, while the harness SIGKILLs
 * them, restarts PostgreSQL and Redis and slows, partitions and cuts the
 * network to Redis (chaos_lib.h). Then, from the outside:
 *
 *   - every order accepted exactly once: one row per Idempotency-Key, each
 *     accepted order id present, none other;
 *   - every event delivered: the outbox is empty, nothing dead-lettered,
 *     every accepted OrderCreated (its event_id from the 201) and an
 *     OrderConfirmed for every order are in the Redis stream `orders`;
 *   - every effect exactly once: each order confirmed, the stock of every
 *     sku down by exactly what the accepted orders asked for (worked out
 *     here from the requests), one reservation per order and sku, one
 *     inbox record per order in each group, and an email printed for every
 *     order (the print is at least once by design, docs/ORDERS.md: copies
 *     after a crash between print and commit are counted, not failed). */
#include <jansson.h>
#include <string.h>

#include "chaos_lib.h"

#define STOCK0 1000000LL

typedef struct orders_ctx_s {
    char (*order_id)[40];
    char (*event_id)[40];
} orders_ctx_t;

/* The items of order i: one or two skus of SKU-1..SKU-4. */
static int items_of(long i, int sku[2], int qty[2])
{
    sku[0] = (int)(i % 4);
    qty[0] = 1 + (int)((i / 4) % 3);
    sku[1] = (sku[0] + 1 + (int)((i / 12) % 3)) % 4;
    qty[1] = 1 + (int)((i / 7) % 2);
    return i % 3 == 0 ? 2 : 1;
}

static void op(chaos_client_t *cl, long i, void *ud)
{
    orders_ctx_t *x = ud;
    int sku[2], qty[2], n = items_of(i, sku, qty);
    char body[256], key[64];
    if (n == 1)
        snprintf(body, sizeof(body),
                 "{\"user_id\":\"chaos-%ld\",\"items\":[{\"sku\":\"SKU-%d\",\"quantity\":%d}],"
                 "\"amount\":%ld}",
                 i, sku[0] + 1, qty[0], 100 + i % 9000);
    else
        snprintf(body, sizeof(body),
                 "{\"user_id\":\"chaos-%ld\",\"items\":[{\"sku\":\"SKU-%d\",\"quantity\":%d},"
                 "{\"sku\":\"SKU-%d\",\"quantity\":%d}],\"amount\":%ld}",
                 i, sku[0] + 1, qty[0], sku[1] + 1, qty[1], 100 + i % 9000);
    snprintf(key, sizeof(key), "chaos-order-%ld", i);
    http_resp_t r;
    long st = chaos_call(cl, "api", "POST", "/orders", body, key, &r);
    CHECK(st == 201, "order %ld: %ld %s", i, st, r.body);
    json_member(r.body, "order_id", x->order_id[i], 40);
    json_member(r.body, "event_id", x->event_id[i], 40);
    CHECK(outbox_uuid_valid(x->order_id[i]) && outbox_uuid_valid(x->event_id[i]),
          "order %ld: no order_id/event_id in %s", i, r.body);
    chaos_accepted(cl->C);
}

typedef struct scan_s {
    chaos_ids_t created, confirmed_subjects, all;
} scan_t;

static void on_entry(const char *id, const char *type, const char *event, void *ud)
{
    scan_t *s = ud;
    chaos_ids_add(&s->all, id);
    if (!strcmp(type, "OrderCreated")) {
        chaos_ids_add(&s->created, id);
    } else if (!strcmp(type, "OrderConfirmed")) {
        json_t *o = json_loads(event, 0, NULL);
        const char *sub = json_string_value(json_object_get(o, "subject"));
        chaos_ids_add(&s->confirmed_subjects, sub ? sub : "");
        json_decref(o);
    }
}

static long long q(PGconn *c, const char *sql)
{
    return tu_query_ll(c, sql);
}

int main(void)
{
    chaos_t C;
    chaos_init(&C, "orders");
    char db[256], kv[1200];
    chaos_db(&C, "orders", db, sizeof(db));
    snprintf(kv, sizeof(kv), "DATABASE_URL=%s", db);
    chaos_env(&C, kv);
    snprintf(kv, sizeof(kv), "REDIS_ADDR=%s", C.broker_addr);
    chaos_env(&C, kv);
    chaos_env(&C, "OUTBOX_SINK=");
    chaos_env(&C, "OUTBOX_METRICS_ADDR=off");
    chaos_env(&C, "OUTBOX_HTTP_ADDR=127.0.0.1");
    chaos_env(&C, "OUTBOX_WORKERS=3");
    chaos_env(&C, "OUTBOX_CONSUMER_CLAIM_IDLE=10s");

    const char *api[] = {"--no-relay", "--no-consumers", NULL};
    const char *relay[] = {"--no-api", "--no-consumers", NULL};
    const char *cons[] = {"--no-api", "--no-relay", NULL};
    chaos_add(&C, "api-1", "api", "api", "PORT", "orders-service", api, NULL, NULL, 1);
    chaos_add(&C, "consumers-1", "consumer", NULL, NULL, "orders-service", cons, NULL,
              "consumer_started", 1);
    chaos_add(&C, "consumers-2", "consumer", NULL, NULL, "orders-service", cons, NULL,
              "consumer_started", 1);
    chaos_add(&C, "relay-1", "relay", NULL, NULL, "orders-service", relay, NULL, "relay_started",
              1);
    chaos_add(&C, "relay-2", "relay", NULL, NULL, "orders-service", relay, NULL, "relay_started",
              1);
    chaos_add(&C, "api-2", "api", "api", "PORT", "orders-service", api, NULL, NULL, 1);
    chaos_probe(&C, "api", "/orders/00000000-0000-7000-8000-000000000000");

    long n = C.events;
    orders_ctx_t x = {calloc((size_t)n, 40), calloc((size_t)n, 40)};
    CHECK(x.order_id && x.event_id, "oom");
    chaos_run(&C, n, op, &x);

    /* Drained: every order decided, both groups' inbox complete, outbox empty. */
    PGconn *c = NULL;
    char sql[512];
    chaos_wait_ll(&C, &c, db, "SELECT count(*) FROM orders WHERE status = 'pending'", 0,
                  chaos_drain_ms(&C), "orders still pending");
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM outbox_inbox WHERE consumer = 'email'");
    chaos_wait_ll(&C, &c, db, sql, n, chaos_drain_ms(&C), "emails recorded");
    chaos_wait_ll(&C, &c, db, "SELECT count(*) FROM outbox", 0, chaos_drain_ms(&C),
                  "outbox rows left");

    /* Every accepted request exactly once. */
    chaos_ids_t orders = {0};
    for (long i = 0; i < n; i++)
        chaos_ids_add(&orders, x.order_id[i]);
    CHECK(chaos_ids_sort(&orders, 1) == 0, "two keys were answered with the same order");
    CHECK(q(c, "SELECT count(*) FROM orders") == n, "orders: %lld rows for %ld accepted keys",
          q(c, "SELECT count(*) FROM orders"), n);
    PGresult *r = tu_exec(c, "SELECT id::text FROM orders");
    for (int i = 0; i < PQntuples(r); i++)
        CHECK(chaos_ids_has(&orders, PQgetvalue(r, i, 0)), "order %s was never accepted",
              PQgetvalue(r, i, 0));
    PQclear(r);

    /* Effects exactly once. */
    CHECK(q(c, "SELECT count(*) FROM orders WHERE status = 'confirmed'") == n,
          "orders not confirmed: %lld",
          q(c, "SELECT count(*) FROM orders WHERE status <> 'confirmed'"));
    long long want[4] = {0}, items = 0;
    for (long i = 0; i < n; i++) {
        int sku[2], qty[2], k = items_of(i, sku, qty);
        for (int j = 0; j < k; j++)
            want[sku[j]] += qty[j], items++;
    }
    for (int k = 0; k < 4; k++) {
        snprintf(sql, sizeof(sql), "SELECT %lld - stock FROM inventory WHERE sku = 'SKU-%d'",
                 STOCK0, k + 1);
        long long got = q(c, sql);
        CHECK(got == want[k], "SKU-%d: stock down by %lld, the accepted orders asked for %lld",
              k + 1, got, want[k]);
    }
    CHECK(q(c, "SELECT count(*) FROM inventory_reservations") == items,
          "reservations: %lld, want %lld", q(c, "SELECT count(*) FROM inventory_reservations"),
          items);
    CHECK(q(c, "SELECT count(*) FROM outbox_inbox WHERE consumer = 'inventory'") == n,
          "inventory inbox records: %lld, want %ld",
          q(c, "SELECT count(*) FROM outbox_inbox WHERE consumer = 'inventory'"), n);
    CHECK(q(c, "SELECT count(*) - count(DISTINCT (consumer, message_id)) FROM outbox_inbox") == 0,
          "a message handled twice");
    CHECK(q(c, "SELECT count(*) FROM outbox_dead_letter") == 0, "relay dead letters: %lld",
          q(c, "SELECT count(*) FROM outbox_dead_letter"));
    CHECK(q(c, "SELECT count(*) FROM outbox_consumer_dead_letter") == 0,
          "consumer dead letters: %lld", q(c, "SELECT count(*) FROM outbox_consumer_dead_letter"));

    /* Every event in the broker. */
    scan_t s = {0};
    long entries = chaos_stream_scan(&C, "orders", on_entry, &s);
    long copies = chaos_ids_sort(&s.all, 1);
    chaos_ids_sort(&s.created, 1);
    chaos_ids_sort(&s.confirmed_subjects, 1);
    for (long i = 0; i < n; i++) {
        CHECK(chaos_ids_has(&s.created, x.event_id[i]),
              "OrderCreated %s (order %s) is not in the stream", x.event_id[i], x.order_id[i]);
        CHECK(chaos_ids_has(&s.confirmed_subjects, x.order_id[i]),
              "no OrderConfirmed for order %s in the stream", x.order_id[i]);
    }
    CHECK(s.created.n == n && s.confirmed_subjects.n == n,
          "the stream has %ld OrderCreated and %ld OrderConfirmed orders for %ld orders",
          s.created.n, s.confirmed_subjects.n, n);

    /* The emails: every order at least once; copies counted. */
    chaos_ids_t emails = {0};
    chaos_log_ids(&C, "consumer", "Sending confirmation email for Order ", &emails);
    long resent = chaos_ids_sort(&emails, 0);
    for (long i = 0; i < n; i++)
        CHECK(chaos_ids_has(&emails, x.order_id[i]), "order %s: no email printed", x.order_id[i]);
    CHECK(emails.n == n + resent, "emails for orders that do not exist");
    int skipped = 0;
    for (int i = 0; i < C.nprocs; i++)
        skipped += count_in_file(C.procs[i].log, "SKIPPING duplicate");

    chaos_metric(&C, "orders", n);
    chaos_metric(&C, "stream_entries", entries);
    chaos_metric(&C, "events_published", s.all.n);
    chaos_metric(&C, "republished_copies", copies);
    chaos_metric(&C, "duplicates_skipped_by_inbox", skipped);
    chaos_metric(&C, "emails_printed_again", resent);
    PQfinish(c);
    chaos_finish(&C);
    chaos_ids_free(&orders);
    chaos_ids_free(&emails);
    chaos_ids_free(&s.all);
    chaos_ids_free(&s.created);
    chaos_ids_free(&s.confirmed_subjects);
    free(x.order_id);
    free(x.event_id);
    printf("PASS chaos_orders\n");
    return 0;
}
