/* The order consumers' set-based batches (services/orders/consumers.c): a
 * backlog is applied a batch at a time, in two statements for inventory and
 * one for email, with the outcome message-by-message handling gives.
 *
 *   1. Order: a backlog where stock runs out inside the batch (SKU-RARE,
 *      stock 3): each order is decided after the ones before it in the
 *      stream (the relay keeps each key's order only), a rejected
 *      order moves no stock, even of its skus that had enough; a copy of an
 *      event added to the stream (a broker delivering twice) is a duplicate
 *      in the same batch; every effect exactly once.
 *   2. A COMMIT whose answer is lost, at the real boundary: a proxy between
 *      the service and PostgreSQL forwards the inventory batch's COMMIT and
 *      drops the answer, so the consumer acknowledges nothing and the batch
 *      is delivered again. The inbox turns it into duplicates: stock,
 *      reservations and OrderConfirmed events exactly once.
 *   3. The same for the email batch: each email printed once, the
 *      redelivered ones skipped.
 *   4. An order the database refuses (a trigger): the set fails, the batch
 *      comes again one message per savepoint, the others apply, and the
 *      refused one applies when the refusal is gone.
 *   5. Plans made while `orders` was small, kept while it grows by 50,000
 *      orders: the batches read only their own orders' index entries.
 *   6. A big `orders` table whose statistics say nothing is pending: the
 *      batches still read it by its index (no sequential scan of it).
 *   7. A consumer thread held in the database at SIGTERM: the service
 *      exits after its shutdown timeout; restarted, it applies the held
 *      orders once.
 */
#include <hiredis/hiredis.h>
#include <string.h>

#include "orders_testlib.h"
#include "pgproxy.h"

#define STOCK0 1000000LL

static void post(const svc_t *s, const char *items, char *order_id, char *event_id)
{
    char url[128], body[512];
    snprintf(url, sizeof(url), "%s/orders", s->url);
    snprintf(body, sizeof(body), "{\"user_id\":\"user-b\",\"items\":%s,\"amount\":100}", items);
    http_resp_t r;
    CHECK(http_do("POST", url, "application/json", NULL, body, strlen(body), &r) == 201,
          "POST %s: %ld %s", items, r.status, r.body);
    json_member(r.body, "order_id", order_id, 64);
    if (event_id)
        json_member(r.body, "event_id", event_id, 64);
}

static const char *status_of(PGconn *db, const char *id, char *out, size_t size)
{
    char q[256];
    snprintf(q, sizeof(q),
             "SELECT status || coalesce(' ' || reason, '') FROM orders WHERE id = '%s'", id);
    PGresult *r = PQexec(db, q);
    snprintf(out, size, "%s", PQntuples(r) == 1 ? PQgetvalue(r, 0, 0) : "(none)");
    PQclear(r);
    return out;
}

static long long stock(PGconn *db, const char *sku)
{
    char q[128];
    snprintf(q, sizeof(q), "SELECT stock FROM inventory WHERE sku = '%s'", sku);
    return tu_query_ll(db, q);
}

/* Entries of the stream whose event has the given type. */
static int stream_count(const svc_t *s, const char *type)
{
    redisContext *rc = tu_redis_connect("127.0.0.1", s->redis_port);
    redisReply *x = redisCommand(rc, "XRANGE orders - +");
    CHECK(x && x->type == REDIS_REPLY_ARRAY, "XRANGE");
    char needle[64];
    snprintf(needle, sizeof(needle), "\"type\":\"%s\"", type);
    int n = 0;
    for (size_t i = 0; i < x->elements; i++) {
        redisReply *f = x->element[i]->element[1];
        for (size_t k = 0; k + 1 < f->elements; k += 2)
            if (!strcmp(f->element[k]->str, "event") && strstr(f->element[k + 1]->str, needle))
                n++;
    }
    freeReplyObject(x);
    redisFree(rc);
    return n;
}

/* Which of the orders ids[0..3] each OrderCreated of the stream is about, in
 * stream order (out[i]: index in ids); returns how many were found. */
static int stream_order(const svc_t *s, const char *const ids[4], int out[4])
{
    redisContext *rc = tu_redis_connect("127.0.0.1", s->redis_port);
    redisReply *x = redisCommand(rc, "XRANGE orders - +");
    CHECK(x && x->type == REDIS_REPLY_ARRAY, "XRANGE");
    int n = 0;
    for (size_t i = 0; i < x->elements && n < 4; i++) {
        redisReply *f = x->element[i]->element[1];
        for (size_t k = 0; k + 1 < f->elements; k += 2) {
            const char *ev = f->element[k + 1]->str;
            if (strcmp(f->element[k]->str, "event") || !strstr(ev, "\"type\":\"OrderCreated\""))
                continue;
            for (int j = 0; j < 4; j++) {
                int seen = 0;
                for (int m = 0; m < n; m++)
                    seen |= out[m] == j;
                if (!seen && strstr(ev, ids[j]))
                    out[n++] = j;
            }
        }
    }
    freeReplyObject(x);
    redisFree(rc);
    return n;
}

/* Adds a copy of the stream's first entry (the broker delivering an event
 * twice); its event id into event_id. */
static void duplicate_first_entry(const svc_t *s, char *event_id, size_t size)
{
    redisContext *rc = tu_redis_connect("127.0.0.1", s->redis_port);
    redisReply *x = redisCommand(rc, "XRANGE orders - + COUNT 1");
    CHECK(x && x->type == REDIS_REPLY_ARRAY && x->elements == 1, "XRANGE first");
    redisReply *f = x->element[0]->element[1];
    const char *argv[64];
    size_t lens[64];
    int argc = 0;
    argv[argc] = "XADD", lens[argc++] = 4;
    argv[argc] = "orders", lens[argc++] = 6;
    argv[argc] = "*", lens[argc++] = 1;
    event_id[0] = '\0';
    for (size_t k = 0; k < f->elements && argc < 64; k++) {
        argv[argc] = f->element[k]->str, lens[argc++] = f->element[k]->len;
        if (k % 2 == 1 && !strcmp(f->element[k - 1]->str, "event"))
            json_member(f->element[k]->str, "id", event_id, size);
    }
    CHECK(outbox_uuid_valid(event_id), "first entry: no event id");
    redisReply *a = redisCommandArgv(rc, argc, argv, lens);
    CHECK(a && a->type == REDIS_REPLY_STRING, "XADD copy");
    freeReplyObject(a);
    freeReplyObject(x);
    redisFree(rc);
}

/* Runs the service without its consumers until the relay has published the
 * backlog, then stops it. */
static void backlog(svc_t *s, PGconn *db, const char *items, int n)
{
    char *env[] = {"OUTBOX_RUN_CONSUMERS=false", NULL};
    svc_spawn(s, env);
    char id[64];
    for (int i = 0; i < n; i++)
        post(s, items, id, NULL);
    CHECK(wait_ll(db, "SELECT count(*) FROM outbox", 0, 15000) == 0, "relay did not publish");
    svc_stop(s);
}

static long long inbox(PGconn *db, const char *consumer)
{
    char q[128];
    snprintf(q, sizeof(q), "SELECT count(*) FROM outbox_inbox WHERE consumer = '%s'", consumer);
    return tu_query_ll(db, q);
}

int main(void)
{
    svc_t s;
    char *env_off[] = {"OUTBOX_RUN_CONSUMERS=false", NULL};
    svc_start(&s, "orders_inventory_batch", env_off);
    PGconn *db = tu_connect(s.db);
    char st[160];

    /* 1. A backlog: A takes 2 of the 3 SKU-RARE, B (SKU-1 + 2 SKU-RARE) is
     * short of SKU-RARE, C takes the last one, D finds none; 40 others. */
    char a[64], b[64], c[64], d[64], x[64];
    post(&s, "[{\"sku\":\"SKU-RARE\",\"quantity\":2}]", a, NULL);
    post(&s, "[{\"sku\":\"SKU-1\",\"quantity\":1},{\"sku\":\"SKU-RARE\",\"quantity\":2}]", b, NULL);
    post(&s, "[{\"sku\":\"SKU-RARE\",\"quantity\":1}]", c, NULL);
    post(&s, "[{\"sku\":\"SKU-RARE\",\"quantity\":1}]", d, NULL);
    for (int i = 0; i < 40; i++)
        post(&s, "[{\"sku\":\"SKU-2\",\"quantity\":1}]", x, NULL);
    CHECK(wait_ll(db, "SELECT count(*) FROM outbox", 0, 15000) == 0, "relay did not publish");
    svc_stop(&s);
    char dup_id[64];
    duplicate_first_entry(&s, dup_id, sizeof(dup_id));

    char *env_on[] = {"OUTBOX_CONSUMER_THREADS=1", "OUTBOX_LOG_LEVEL=debug",
                      "OUTBOX_LOG_FORMAT=json", NULL};
    svc_spawn(&s, env_on);
    CHECK(wait_ll(db, "SELECT count(*) FROM outbox_inbox WHERE consumer = 'inventory'", 44,
                  30000) == 44,
          "inventory inbox: %lld of 44; see %s", inbox(db, "inventory"), s.log);
    CHECK(wait_ll(db, "SELECT count(*) FROM outbox_inbox WHERE consumer = 'email'", 44, 30000) ==
              44,
          "email inbox: %lld of 44", inbox(db, "email"));
    /* What message-by-message handling decides, in the stream's order
     * (the relay keeps each key's order, not the order across keys). */
    const char *abcd[4] = {a, b, c, d};
    const int rare[4] = {2, 2, 1, 1};
    int order[4], n = stream_order(&s, abcd, order);
    CHECK(n == 4, "OrderCreated of A-D in the stream: %d", n);
    int left = 3, confirmed = 0, b_confirmed = 0;
    for (int i = 0; i < 4; i++) {
        int k = order[i];
        char want[64];
        if (left >= rare[k]) {
            left -= rare[k];
            confirmed++;
            b_confirmed |= k == 1;
            snprintf(want, sizeof(want), "confirmed");
        } else {
            snprintf(want, sizeof(want), "rejected insufficient stock for SKU-RARE");
        }
        CHECK(!strcmp(status_of(db, abcd[k], st, sizeof(st)), want),
              "order %c (%d. in the stream): %s, want %s", 'A' + k, i + 1, st, want);
    }
    CHECK(confirmed < 4, "the test needs stock to run out");
    CHECK(tu_query_ll(db, "SELECT count(*) FROM orders WHERE status = 'confirmed'") ==
              40 + confirmed,
          "confirmed orders");
    CHECK(stock(db, "SKU-RARE") == left, "SKU-RARE stock %lld, want %d", stock(db, "SKU-RARE"),
          left);
    CHECK(stock(db, "SKU-1") == STOCK0 - b_confirmed, "SKU-1 stock %lld (B %s)", stock(db, "SKU-1"),
          b_confirmed ? "confirmed" : "rejected: it must not move SKU-1");
    CHECK(stock(db, "SKU-2") == STOCK0 - 40, "SKU-2 stock %lld", stock(db, "SKU-2"));
    CHECK(tu_query_ll(db, "SELECT count(*) FROM inventory_reservations") ==
              40 + confirmed + b_confirmed,
          "reservations");
    CHECK(wait_ll(db, "SELECT count(*) FROM outbox", 0, 15000) == 0, "decisions not published");
    CHECK(stream_count(&s, "OrderConfirmed") == 40 + confirmed, "OrderConfirmed events: %d",
          stream_count(&s, "OrderConfirmed"));
    CHECK(stream_count(&s, "OrderRejected") == 4 - confirmed, "OrderRejected events: %d",
          stream_count(&s, "OrderRejected"));
    char line[160];
    snprintf(line, sizeof(line), "SKIPPING duplicate message %s", dup_id);
    CHECK(wait_count(s.log, line, 2, 10000) == 2, "the copied event: %d SKIPPING lines",
          count_in_file(s.log, line));
    CHECK(count_in_file(s.log, "[EMAIL] Sending confirmation email") == 44, "emails: %d",
          count_in_file(s.log, "[EMAIL] Sending confirmation email"));
    CHECK(count_in_file(s.log, "\"event\":\"batch_applied\"") >= 2,
          "no set-based batch applied (debug line batch_applied); see %s", s.log);
    CHECK(count_in_file(s.log, "\"event\":\"batch_apply_failed\"") == 0, "an apply failed");
    svc_stop(&s);

    /* 2. and 3.: the batch's COMMIT answer lost, inventory then email. */
    char direct[1024];
    snprintf(direct, sizeof(direct), "%s", s.db);
    pgproxy_t *px = pgproxy_start_for(direct);
    char proxied[1200];
    snprintf(proxied, sizeof(proxied),
             "%s host=127.0.0.1 port=%d sslmode=disable gssencmode=disable", direct,
             pgproxy_port(px));
    static const struct {
        const char *group, *sku;
    } cut[2] = {{"inventory", "SKU-3"}, {"email", "SKU-4"}};
    for (int k = 0; k < 2; k++) {
        long long inv0 = inbox(db, "inventory"), em0 = inbox(db, "email");
        int emails0 = count_in_file(s.log, "[EMAIL] Sending confirmation email");
        int skips0 = count_in_file(s.log, "SKIPPING duplicate message");
        char items[96];
        snprintf(items, sizeof(items), "[{\"sku\":\"%s\",\"quantity\":1}]", cut[k].sku);
        backlog(&s, db, items, 20);

        pgproxy_arm_for(px, PGPROXY_CUT_AFTER_COMMIT, cut[k].group);
        snprintf(s.db, sizeof(s.db), "%s", proxied);
        svc_spawn(&s, env_on);
        snprintf(s.db, sizeof(s.db), "%s", direct);
        char q[160];
        snprintf(q, sizeof(q), "SELECT count(*) FROM outbox_inbox WHERE consumer = 'inventory'");
        CHECK(wait_ll(db, q, inv0 + 20, 30000) == inv0 + 20, "%s cut: inventory inbox %lld",
              cut[k].group, inbox(db, "inventory") - inv0);
        snprintf(q, sizeof(q), "SELECT count(*) FROM outbox_inbox WHERE consumer = 'email'");
        CHECK(wait_ll(db, q, em0 + 20, 30000) == em0 + 20, "%s cut: email inbox %lld", cut[k].group,
              inbox(db, "email") - em0);
        CHECK(pgproxy_cuts(px) == k + 1, "%s: the proxy cut no COMMIT", cut[k].group);
        CHECK(pgproxy_last_commit_answer(px) == 1, "%s: the cut COMMIT did not commit",
              cut[k].group);
        /* The batch committed, then came again: skipped, message by message. */
        CHECK(wait_count(s.log, "SKIPPING duplicate message", skips0 + 20, 30000) >= skips0 + 20,
              "%s: the redelivered batch was not skipped (%d lines); see %s", cut[k].group,
              count_in_file(s.log, "SKIPPING duplicate message") - skips0, s.log);
        CHECK(stock(db, cut[k].sku) == STOCK0 - 20, "%s cut: %s stock %lld, want %lld",
              cut[k].group, cut[k].sku, stock(db, cut[k].sku), STOCK0 - 20);
        snprintf(q, sizeof(q), "SELECT count(*) FROM inventory_reservations WHERE sku = '%s'",
                 cut[k].sku);
        CHECK(tu_query_ll(db, q) == 20, "%s cut: reservations %lld", cut[k].group,
              tu_query_ll(db, q));
        CHECK(wait_ll(db, "SELECT count(*) FROM outbox", 0, 15000) == 0, "not published");
        CHECK(stream_count(&s, "OrderConfirmed") == 40 + confirmed + 20 * (k + 1),
              "%s cut: OrderConfirmed events %d, want %d", cut[k].group,
              stream_count(&s, "OrderConfirmed"), 40 + confirmed + 20 * (k + 1));
        CHECK(count_in_file(s.log, "[EMAIL] Sending confirmation email") == emails0 + 20,
              "%s cut: %d emails for 20 orders", cut[k].group,
              count_in_file(s.log, "[EMAIL] Sending confirmation email") - emails0);
        svc_stop(&s);
    }
    CHECK(tu_query_ll(db, "SELECT count(*) FROM orders WHERE status <> 'confirmed'") ==
              4 - confirmed,
          "rejected orders");

    /* 4. One order the database refuses (a trigger raises for it): the set
     * fails, the batch comes again message by message, the other orders
     * apply, and that one applies once the refusal is gone. */
    char ids[10][64];
    svc_spawn(&s, env_off);
    for (int i = 0; i < 10; i++)
        post(&s, "[{\"sku\":\"SKU-1\",\"quantity\":1}]", ids[i], NULL);
    CHECK(wait_ll(db, "SELECT count(*) FROM outbox", 0, 15000) == 0, "relay did not publish");
    svc_stop(&s);
    char q[512];
    snprintf(q, sizeof(q),
             "CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
             " IF NEW.order_id = '%s' THEN RAISE EXCEPTION 'refused for the test'; END IF;"
             " RETURN NEW; END $$;"
             "CREATE TRIGGER refuse_one BEFORE INSERT ON inventory_reservations"
             " FOR EACH ROW EXECUTE FUNCTION refuse_one()",
             ids[4]);
    PQclear(tu_exec(db, q));
    long long inv0 = inbox(db, "inventory");
    svc_spawn(&s, env_on);
    snprintf(q, sizeof(q), "SELECT count(*) FROM outbox_inbox WHERE consumer = 'inventory'");
    CHECK(wait_ll(db, q, inv0 + 9, 30000) == inv0 + 9, "refused order: %lld of the other 9 applied",
          inbox(db, "inventory") - inv0);
    CHECK(count_in_file(s.log, "\"event\":\"batch_apply_failed\"") >= 1,
          "the refused set left no batch_apply_failed line");
    CHECK(!strcmp(status_of(db, ids[4], st, sizeof(st)), "pending"), "refused order: %s", st);
    PQclear(tu_exec(db, "DROP TRIGGER refuse_one ON inventory_reservations"));
    CHECK(wait_ll(db, q, inv0 + 10, 30000) == inv0 + 10, "the refused order never applied");
    CHECK(!strcmp(status_of(db, ids[4], st, sizeof(st)), "confirmed"), "refused order: %s", st);
    CHECK(stock(db, "SKU-1") == STOCK0 - b_confirmed - 10, "SKU-1 stock %lld, want %lld",
          stock(db, "SKU-1"), STOCK0 - b_confirmed - 10);
    CHECK(tu_query_ll(db, "SELECT count(*) FROM inventory_reservations WHERE sku = 'SKU-1'") ==
              10 + b_confirmed,
          "SKU-1 reservations");

    /* 5. The batch statements read only the batch's orders, with plans
     * the sessions made while `orders` was small: a session keeps its
     * statements' plans (generic plans), and one made on a small table may
     * join the batch to the whole of `orders` through its index (a Merge or
     * Hash Join over a full Index Scan, which `enable_seqscan = off` does
     * not prevent). The sessions plan on a few hundred orders; then 50,000
     * more come (not analyzed: an ANALYZE would make the sessions plan
     * again), and a backlog of 300 is applied in batches by the same
     * sessions, held back meanwhile by the inventory lock taken here. A
     * batch reading the whole index would read 50,000 entries of it. */
    static const char gone[] = "SELECT count(*) FROM pg_stat_activity WHERE datname ="
                               " current_database() AND pid <> pg_backend_pid()";
    static const char idx[] = "SELECT idx_tup_read FROM pg_stat_user_indexes"
                              " WHERE indexrelname = 'orders_pkey'";
    svc_stop(&s);
    CHECK(wait_ll(db, gone, 0, 15000) == 0, "the service's sessions did not end");
    PQclear(tu_exec(db, "SELECT pg_stat_force_next_flush()"));
    /* Emptied as a benchmark empties them between runs: the sessions plan
     * on a table whose size is not known yet (as a new one). */
    PQclear(tu_exec(db, "ANALYZE orders, order_items"));
    PQclear(tu_exec(db, "TRUNCATE orders, order_items, inventory_reservations"));
    long long idx0 = tu_query_ll(db, idx), inv6 = inbox(db, "inventory");
    backlog(&s, db, "[{\"sku\":\"SKU-2\",\"quantity\":1}]", 20);
    svc_spawn(&s, env_on);
    snprintf(q, sizeof(q), "SELECT count(*) FROM outbox_inbox WHERE consumer = 'inventory'");
    CHECK(wait_ll(db, q, inv6 + 20, 30000) == inv6 + 20, "small table: %lld of 20 applied",
          inbox(db, "inventory") - inv6);
    PGconn *lk = tu_connect(s.db);
    PQclear(tu_exec(lk, "SELECT pg_advisory_lock(7308604897068083556)")); /* INVENTORY_LOCK_SQL */
    PQclear(tu_exec(db, "INSERT INTO orders (id, user_id, amount, status)"
                        " SELECT gen_random_uuid(), 'bulk', 1, 'confirmed'"
                        " FROM generate_series(1, 50000)"));
    for (int i = 0; i < 300; i++)
        post(&s, "[{\"sku\":\"SKU-2\",\"quantity\":1}]", x, NULL);
    CHECK(wait_ll(db, "SELECT count(*) FROM outbox WHERE type = 'OrderCreated'", 0, 15000) == 0,
          "relay did not publish");
    PQfinish(lk); /* the lock goes with its session */
    CHECK(wait_ll(db, q, inv6 + 320, 30000) == inv6 + 320, "grown table: %lld of 300 applied",
          inbox(db, "inventory") - inv6 - 20);
    svc_stop(&s);
    CHECK(wait_ll(db, gone, 0, 15000) == 0, "the service's sessions did not end");
    long long read = tu_query_ll(db, idx) - idx0;
    printf("orders_pkey: %lld entries read for 320 orders (50,000 more in the table)\n", read);
    CHECK(read < 10000, "the consumers read %lld entries of orders_pkey for 320 orders", read);
    svc_spawn(&s, env_on);

    /* 6. The batch statements read `orders` by its index, however the
     * statistics look. 50,000 orders, analyzed, none pending: planned on
     * those statistics with sequential scans allowed, a batch of a few
     * hundred joined every row of `orders` (a Seq Scan under a hash join).
     * The service's sessions are gone before the second reading: a backend
     * writes its statistics before it leaves pg_stat_activity. */
    svc_stop(&s);
    PQclear(tu_exec(db, "INSERT INTO orders (id, user_id, amount, status)"
                        " SELECT gen_random_uuid(), 'bulk', 1, 'confirmed'"
                        " FROM generate_series(1, 50000)"));
    PQclear(tu_exec(db, "ANALYZE orders"));
    backlog(&s, db, "[{\"sku\":\"SKU-2\",\"quantity\":1}]", 300);
    static const char seq[] = "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'orders'";
    CHECK(wait_ll(db, gone, 0, 15000) == 0, "the service's sessions did not end");
    PQclear(tu_exec(db, "SELECT pg_stat_force_next_flush()")); /* this session's own */
    long long seq0 = tu_query_ll(db, seq), inv5 = inbox(db, "inventory"), em5 = inbox(db, "email");
    svc_spawn(&s, env_on);
    snprintf(q, sizeof(q), "SELECT count(*) FROM outbox_inbox WHERE consumer = 'inventory'");
    CHECK(wait_ll(db, q, inv5 + 300, 30000) == inv5 + 300, "big table: %lld of 300 applied",
          inbox(db, "inventory") - inv5);
    /* 300 emails of one batch, printed while the inventory consumer logs a
     * line per order to the same file: no line of either torn by the other
     * (a batch's emails went out through stdio in 4 KiB pieces). */
    snprintf(q, sizeof(q), "SELECT count(*) FROM outbox_inbox WHERE consumer = 'email'");
    CHECK(wait_ll(db, q, em5 + 300, 30000) == em5 + 300, "big table: %lld of 300 emails",
          inbox(db, "email") - em5);
    CHECK(torn_lines(s.log) == 0, "torn lines in %s", s.log);
    svc_stop(&s);
    CHECK(wait_ll(db, gone, 0, 15000) == 0, "the service's sessions did not end");
    CHECK(tu_query_ll(db, seq) == seq0,
          "the consumers scanned the whole orders table %lld times for 300 orders",
          tu_query_ll(db, seq) - seq0);

    /* 7. A consumer thread held in the database when SIGTERM comes (here:
     * waiting for the inventory lock, held by this test): the service
     * waits OUTBOX_SHUTDOWN_TIMEOUT for it, says so (shutdown_timeout) and
     * exits (status 0, as the relay at its own); its transaction rolls
     * back. Restarted, the service applies every held order once. (Before:
     * it waited for the thread for ever.) */
    char *env_short[] = {"OUTBOX_CONSUMER_THREADS=1", "OUTBOX_LOG_FORMAT=json",
                         "OUTBOX_SHUTDOWN_TIMEOUT=2s", NULL};
    static const char waiting[] =
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND wait_event = 'advisory'";
    long long inv7 = inbox(db, "inventory"), sku3 = stock(db, "SKU-3");
    lk = tu_connect(s.db);
    PQclear(tu_exec(lk, "SELECT pg_advisory_lock(7308604897068083556)")); /* INVENTORY_LOCK_SQL */
    svc_spawn(&s, env_short);
    for (int i = 0; i < 5; i++)
        post(&s, "[{\"sku\":\"SKU-3\",\"quantity\":1}]", x, NULL);
    CHECK(wait_ll(db, waiting, 1, 30000) == 1, "no inventory session waits for the lock");
    int shut0 = count_in_file(s.log, "\"event\":\"shutdown_timeout\"");
    long long t0 = tu_now_ms();
    int rc = svc_term(&s, 20000);
    long long took = tu_now_ms() - t0;
    CHECK(rc == 0, "held consumer: the service did not exit on SIGTERM (status %d); see %s", rc,
          s.log);
    CHECK(took < 10000, "held consumer: the service took %lld ms to exit", took);
    CHECK(count_in_file(s.log, "\"event\":\"shutdown_timeout\"") == shut0 + 1,
          "held consumer: no shutdown_timeout line; see %s", s.log);
    PQfinish(lk);
    CHECK(wait_ll(db, waiting, 0, 15000) == 0, "a session still waits for the lock");
    CHECK(inbox(db, "inventory") == inv7, "held consumer: applied while held");
    /* The held batch is still pending for the old process's consumer
     * name: the new one claims it once idle for consumer_claim_idle. */
    char *env_claim[] = {"OUTBOX_CONSUMER_THREADS=1", "OUTBOX_LOG_FORMAT=json",
                         "OUTBOX_CONSUMER_CLAIM_IDLE=1s", NULL};
    svc_spawn(&s, env_claim);
    snprintf(q, sizeof(q), "SELECT count(*) FROM outbox_inbox WHERE consumer = 'inventory'");
    CHECK(wait_ll(db, q, inv7 + 5, 30000) == inv7 + 5, "held consumer: %lld of 5 applied",
          inbox(db, "inventory") - inv7);
    CHECK(stock(db, "SKU-3") == sku3 - 5, "held consumer: SKU-3 stock %lld, want %lld",
          stock(db, "SKU-3"), sku3 - 5);
    printf("held consumer: exited %lld ms after SIGTERM (shutdown timeout 2 s); 5 orders applied "
           "once after the restart\n",
           took);

    svc_teardown(&s);
    PQfinish(db);
    pgproxy_stop(px);
    printf("PASS orders_inventory_batch\n");
    return 0;
}
