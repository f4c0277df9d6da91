/* The parts as separate processes: an API-only process (--no-relay
 * --no-consumers) accepts orders; a worker process (--no-api) relays and
 * consumes them. Killing the worker with SIGKILL and starting another loses
 * nothing and applies nothing twice. */
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "orders_testlib.h"

static pid_t spawn_worker(const svc_t *s, const char *log)
{
    static char e[4][1200];
    snprintf(e[0], sizeof(e[0]), "DATABASE_URL=%s", s->db);
    snprintf(e[1], sizeof(e[1]), "REDIS_ADDR=%s", s->redis_addr);
    snprintf(e[2], sizeof(e[2]), "OUTBOX_METRICS_ADDR=off");
    snprintf(e[3], sizeof(e[3]), "OUTBOX_CONSUMER_CLAIM_IDLE=500ms");
    char *env[] = {e[0], e[1], e[2], e[3], "OUTBOX_SINK=", NULL};
    char *argv[] = {(char *)tu_bin("orders-service"), "--no-api", NULL};
    return tu_spawn(argv, env, log);
}

static void post_orders(const svc_t *s, int n, int base)
{
    char url[128], body[256];
    snprintf(url, sizeof(url), "%s/orders", s->url);
    for (int i = 0; i < n; i++) {
        snprintf(body, sizeof(body),
                 "{\"user_id\":\"split-%d\",\"items\":[{\"sku\":\"SKU-4\",\"quantity\":1}],"
                 "\"amount\":%d}",
                 base + i, 100 + i);
        http_resp_t r;
        CHECK(http_do("POST", url, "application/json", NULL, body, strlen(body), &r) == 201,
              "post %ld", r.status);
    }
}

int main(void)
{
    svc_t s;
    char *api_only[] = {"OUTBOX_RUN_RELAY=false", "OUTBOX_RUN_CONSUMERS=false", NULL};
    svc_start(&s, "orders_split", api_only);
    PGconn *db = tu_connect(s.db);
    CHECK(count_in_file(s.log, "Outbox worker started") == 0, "API-only process started the relay");
    CHECK(count_in_file(s.log, "Email consumer started") == 0,
          "API-only process started consumers");

    post_orders(&s, 20, 0);
    tu_sleep_ms(300);
    CHECK(tu_query_ll(db, "SELECT count(*) FROM outbox") == 20,
          "events wait in the outbox without a relay");
    CHECK(tu_query_ll(db, "SELECT count(*) FROM orders WHERE status = 'pending'") == 20, "pending");

    char wlog1[300], wlog2[300];
    snprintf(wlog1, sizeof(wlog1), "%s.worker1", s.log);
    snprintf(wlog2, sizeof(wlog2), "%s.worker2", s.log);
    unlink(wlog1);
    unlink(wlog2);
    pid_t w1 = spawn_worker(&s, wlog1);
    CHECK(wait_ll(db, "SELECT count(*) FROM orders WHERE status = 'confirmed'", 20, 20000) == 20,
          "worker 1 confirms");
    CHECK(wait_count(wlog1, "[EMAIL] Sending confirmation email", 20, 10000) == 20,
          "worker 1 emails");
    CHECK(count_in_file(wlog1, "Server starting on port") == 0, "--no-api process listened");

    /* Crash the worker, queue more, start another. */
    kill(w1, SIGKILL);
    tu_wait(w1, 5000);
    post_orders(&s, 20, 20);
    pid_t w2 = spawn_worker(&s, wlog2);
    CHECK(wait_ll(db, "SELECT count(*) FROM orders WHERE status = 'confirmed'", 40, 30000) == 40,
          "worker 2 confirms");
    int e1 = count_in_file(wlog1, "[EMAIL] Sending confirmation email");
    int e2 = wait_count(wlog2, "[EMAIL] Sending confirmation email", 20, 10000);
    CHECK(e1 + e2 == 40, "emails %d + %d != 40", e1, e2);
    CHECK(tu_query_ll(db, "SELECT count(*) FROM inventory_reservations") == 40, "reservations");
    CHECK(tu_query_ll(db, "SELECT 1000000 - stock FROM inventory WHERE sku = 'SKU-4'") == 40,
          "stock");
    kill(w2, SIGTERM);
    CHECK(tu_wait(w2, 20000) == 0, "worker 2 did not stop cleanly");
    svc_teardown(&s);
    PQfinish(db);
    printf("PASS orders_split\n");
    return 0;
}
