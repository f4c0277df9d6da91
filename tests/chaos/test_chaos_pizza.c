/* chaos_pizza: the pizza pipeline as six processes (two pizza-api, two
 * pizza-job running the relay on pizza_order_outbox with simulated payment
 * and delivery, two pizza-consumer), under OUTBOX_CHAOS_EVENTS orders from
 * 8 clients while the harness SIGKILLs them, restarts PostgreSQL and Redis
 * and slows, partitions and cuts the network to Redis (chaos_lib.h).
 * Payments and deliveries fail at random (5% each) and are retried. Then,
 * from the outside:
 *
 *   - every accepted request accounted for: every order id a 201 named
 *     exists, every request (tagged by its user_name) has an order, and a
 *     request has two orders only if one of its attempts had an unknown
 *     outcome (pizza-api takes no Idempotency-Key: a retry after a lost
 *     answer places the order again; counted, not failed);
 *   - every event delivered: every row of pizza_order_outbox processed,
 *     nothing dead-lettered, each event id in the stream pizza-orders;
 *   - every effect exactly once: every order completed, paid and delivered
 *     once (the job logs payment_ok and delivered at most once per order),
 *     and received by the consumer once (one pizza_received row per order,
 *     one inbox record per event). */
#include <string.h>

#include "chaos_lib.h"

typedef struct pizza_ctx_s {
    char (*order_id)[40];
    char *ambiguous;
} pizza_ctx_t;

static const char *const flavors[] = {"Margherita", "Pepperoni", "Hawaiian", "Funghi"};
static const char *const sizes[] = {"Small", "Medium", "Large", "Extra Large"};

static void op(chaos_client_t *cl, long i, void *ud)
{
    pizza_ctx_t *x = ud;
    char body[320], key[64];
    snprintf(body, sizeof(body),
             "{\"flavor\":\"%s\",\"size\":\"%s\",\"quantity\":%ld,\"price\":%ld.%02ld,"
             "\"address\":\"%ld Main St\",\"user_name\":\"chaos-%ld\"}",
             flavors[i % 4], sizes[(i / 4) % 4], 1 + i % 3, 9 + i % 20, (i * 7) % 100, i + 1, i);
    snprintf(key, sizeof(key), "chaos-pizza-%ld", i);
    http_resp_t r;
    long st = chaos_call(cl, "api", "POST", "/pizza", body, key, &r);
    CHECK(st == 201, "order %ld: %ld %s", i, st, r.body);
    json_member(r.body, "order_id", x->order_id[i], 40);
    CHECK(outbox_uuid_valid(x->order_id[i]), "order %ld: no order_id in %s", i, r.body);
    x->ambiguous[i] = (char)cl->ambiguous;
    chaos_accepted(cl->C);
}

static void on_entry(const char *id, const char *type, const char *event, void *ud)
{
    (void)type, (void)event;
    chaos_ids_add(ud, id);
}

static long long q(PGconn *c, const char *sql)
{
    return tu_query_ll(c, sql);
}

int main(void)
{
    chaos_t C;
    chaos_init(&C, "pizza");
    char db[256], kv[1200];
    chaos_db(&C, "pizza", db, sizeof(db));
    snprintf(kv, sizeof(kv), "DATABASE_URL=%s", db);
    chaos_env(&C, kv);
    snprintf(kv, sizeof(kv), "REDIS_ADDR=%s", C.broker_addr);
    chaos_env(&C, kv);
    chaos_env(&C, "OUTBOX_SINK=");
    chaos_env(&C, "OUTBOX_METRICS_ADDR=off");
    chaos_env(&C, "OUTBOX_HTTP_ADDR=127.0.0.1");
    chaos_env(&C, "OUTBOX_CONSUMER_CLAIM_IDLE=10s");
    /* the job: quick steps that fail now and then; a Redis outage costs the
     * webhook sink an attempt per try (docs/PIZZA.md): attempts to spare */
    chaos_env(&C, "PIZZA_PAYMENT_DELAY=1ms");
    chaos_env(&C, "PIZZA_DELIVERY_DELAY=1ms");
    chaos_env(&C, "PIZZA_PAYMENT_FAIL_RATE=0.05");
    chaos_env(&C, "PIZZA_DELIVERY_FAIL_RATE=0.05");
    chaos_env(&C, "OUTBOX_WORKERS=4");
    chaos_env(&C, "OUTBOX_BACKOFF_BASE=20ms");
    chaos_env(&C, "OUTBOX_BACKOFF_MAX=500ms");
    chaos_env(&C, "OUTBOX_MAX_ATTEMPTS=10000");

    chaos_add(&C, "consumer-1", "consumer", NULL, NULL, "pizza-consumer", NULL, NULL,
              "Consumer started", 1);
    chaos_add(&C, "consumer-2", "consumer", NULL, NULL, "pizza-consumer", NULL, NULL,
              "Consumer started", 1);
    chaos_add(&C, "job-1", "job", NULL, NULL, "pizza-job", NULL, NULL, "Job started", 1);
    chaos_add(&C, "job-2", "job", NULL, NULL, "pizza-job", NULL, NULL, "Job started", 1);
    chaos_add(&C, "api-1", "api", "api", "PORT", "pizza-api", NULL, NULL, NULL, 1);
    chaos_add(&C, "api-2", "api", "api", "PORT", "pizza-api", NULL, NULL, NULL, 1);
    chaos_probe(&C, "api", "/pizza/00000000-0000-7000-8000-000000000000");

    long n = C.events;
    pizza_ctx_t x = {calloc((size_t)n, 40), calloc((size_t)n, 1)};
    CHECK(x.order_id && x.ambiguous, "oom");
    chaos_run(&C, n, op, &x);

    /* Drained: every order completed and received, every event processed. */
    PGconn *c = NULL;
    chaos_wait_ll(&C, &c, db, "SELECT count(*) FROM pizza_orders WHERE status <> 'completed'", 0,
                  chaos_drain_ms(&C), "orders not completed");
    chaos_wait_ll(&C, &c, db,
                  "SELECT (SELECT count(*) FROM pizza_orders) -"
                  " (SELECT count(DISTINCT order_id) FROM pizza_received)",
                  0, chaos_drain_ms(&C), "orders not received by the consumer");
    chaos_wait_ll(&C, &c, db, "SELECT count(*) FROM pizza_order_outbox WHERE status <> 'processed'",
                  0, chaos_drain_ms(&C), "outbox rows not processed");

    /* Every accepted request accounted for. */
    long long orders = q(c, "SELECT count(*) FROM pizza_orders");
    chaos_ids_t accepted = {0};
    for (long i = 0; i < n; i++)
        chaos_ids_add(&accepted, x.order_id[i]);
    CHECK(chaos_ids_sort(&accepted, 1) == 0, "two requests were answered with the same order");
    PGresult *r = tu_exec(c, "SELECT id::text FROM pizza_orders");
    chaos_ids_t ids = {0};
    for (int i = 0; i < PQntuples(r); i++)
        chaos_ids_add(&ids, PQgetvalue(r, i, 0));
    PQclear(r);
    chaos_ids_sort(&ids, 1);
    for (long i = 0; i < n; i++)
        CHECK(chaos_ids_has(&ids, x.order_id[i]), "accepted order %s (request %ld) is missing",
              x.order_id[i], i);
    r = tu_exec(c, "SELECT user_name, count(*) FROM pizza_orders GROUP BY 1");
    CHECK(PQntuples(r) == n, "%d requests have orders, want %ld", PQntuples(r), n);
    long twice = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        long k = atol(PQgetvalue(r, i, 0) + strlen("chaos-"));
        int m = atoi(PQgetvalue(r, i, 1));
        CHECK(k >= 0 && k < n, "an order from nowhere: %s", PQgetvalue(r, i, 0));
        CHECK(m == 1 || x.ambiguous[k],
              "request %ld placed %d orders although every attempt's outcome was known", k, m);
        twice += m - 1;
    }
    PQclear(r);
    CHECK(orders == n + twice, "orders: %lld, want %ld + %ld", orders, n, twice);

    /* Effects exactly once. */
    CHECK(q(c, "SELECT count(*) FROM pizza_orders WHERE paid_at IS NULL OR delivered_at IS NULL"
               " OR completed_at IS NULL") == 0,
          "orders without a payment, delivery or completion time");
    CHECK(q(c, "SELECT count(*) FROM pizza_received") == orders,
          "pizza_received: %lld rows for %lld orders", q(c, "SELECT count(*) FROM pizza_received"),
          orders);
    CHECK(q(c, "SELECT count(*) - count(DISTINCT (consumer, message_id)) FROM outbox_inbox") == 0,
          "a message handled twice");
    CHECK(q(c, "SELECT count(*) FROM pizza_order_outbox") == orders, "events: %lld for %lld orders",
          q(c, "SELECT count(*) FROM pizza_order_outbox"), orders);
    CHECK(q(c, "SELECT count(*) FROM pizza_order_outbox_dead_letter") == 0, "relay dead letters");
    CHECK(q(c, "SELECT CASE WHEN to_regclass('outbox_consumer_dead_letter') IS NULL THEN 0"
               " ELSE (SELECT count(*) FROM outbox_consumer_dead_letter) END") == 0,
          "consumer dead letters");
    const char *steps[2][2] = {{"payment", "\"msg\":\"payment accepted\",\"order_id\":\""},
                               {"delivery", "\"msg\":\"pizza delivered\",\"order_id\":\""}};
    long unlogged[2] = {0, 0};
    for (int s = 0; s < 2; s++) {
        chaos_ids_t logged = {0};
        chaos_log_ids(&C, "job", steps[s][1], &logged);
        long again = chaos_ids_sort(&logged, 0);
        CHECK(again == 0, "%ld %ss done twice for one order (see the job logs)", again,
              steps[s][0]);
        for (long i = 0; i < ids.n; i++)
            unlogged[s] += !chaos_ids_has(&logged, ids.v[i]);
        chaos_ids_free(&logged);
    }

    /* Every event in the broker. */
    chaos_ids_t stream = {0};
    long entries = chaos_stream_scan(&C, "pizza-orders", on_entry, &stream);
    long copies = chaos_ids_sort(&stream, 1);
    r = tu_exec(c, "SELECT id::text FROM pizza_order_outbox");
    for (int i = 0; i < PQntuples(r); i++)
        CHECK(chaos_ids_has(&stream, PQgetvalue(r, i, 0)), "event %s is not in pizza-orders",
              PQgetvalue(r, i, 0));
    CHECK(stream.n == PQntuples(r), "pizza-orders has %ld event ids, the outbox %d", stream.n,
          PQntuples(r));
    PQclear(r);
    int skipped = 0;
    for (int i = 0; i < C.nprocs; i++)
        skipped += count_in_file(C.procs[i].log, "SKIPPING duplicate");

    chaos_metric(&C, "orders", orders);
    chaos_metric(&C, "orders_placed_twice_by_retries", twice);
    chaos_metric(&C, "payment_retries",
                 q(c, "SELECT coalesce(sum(payment_attempts), 0) FROM pizza_orders") - orders);
    chaos_metric(&C, "delivery_retries",
                 q(c, "SELECT coalesce(sum(delivery_attempts), 0) FROM pizza_orders") - orders);
    chaos_metric(&C, "payments_unlogged_killed", unlogged[0]);
    chaos_metric(&C, "deliveries_unlogged_killed", unlogged[1]);
    chaos_metric(&C, "stream_entries", entries);
    chaos_metric(&C, "republished_copies", copies);
    chaos_metric(&C, "duplicates_skipped_by_inbox", skipped);
    PQfinish(c);
    chaos_finish(&C);
    chaos_ids_free(&accepted);
    chaos_ids_free(&ids);
    chaos_ids_free(&stream);
    free(x.order_id);
    free(x.ambiguous);
    printf("PASS chaos_pizza\n");
    return 0;
}
