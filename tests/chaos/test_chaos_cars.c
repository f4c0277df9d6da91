/* chaos_cars: cars-service as six processes (two APIs, two relays, two
 * processes running the car-search projection into the search database),
 * under OUTBOX_CHAOS_EVENTS writes from 8 clients while the harness SIGKILLs
 * them, restarts PostgreSQL and Redis and slows, partitions and cuts the
 * network to Redis (chaos_lib.h). Each operation is one car's life, four
 * writes: register (POST /cars), a price change, a make/model change, then
 * a delete (every third car) or another price change. Then, from the
 * outside:
 *
 *   - every accepted request accounted for: the cars table holds exactly
 *     the cars registered and not deleted, each in the state of the last
 *     accepted write (make, model, price, version); no other car;
 *   - every event delivered: the outbox is empty, nothing dead-lettered,
 *     every event id an accepted write answered with is in the stream cars;
 *   - every effect exactly once, as the index sees it: one car_search row
 *     per car ever registered; a live car's row has the cars row's fields
 *     and its version (newest); a deleted car's row is a tombstone at the
 *     delete's version; GET /cars/search finds live cars by VIN and not
 *     deleted ones.
 *
 * cars-service takes no Idempotency-Key (docs/CARS.md); the VIN is unique,
 * so a registration retried after a lost answer gets 409 with the car_id
 * (accepted then), a delete retried after a lost answer 404; a price change
 * retried after a lost answer applies twice (the version then moves by 2,
 * the state is the same): the harness expects the version of the last
 * answer. */
#include <jansson.h>
#include <string.h>

#include "cars_testlib.h"
#include "chaos_lib.h"

typedef struct car_s {
    char id[40], vin[18], make[16], model[16];
    long long price, version;
    int year, deleted;
} car_t;

typedef struct cars_ctx_s {
    car_t *cars;
    chaos_ids_t event_ids; /* under lock */
    pthread_mutex_t lock;
} cars_ctx_t;

static const char *const makes[] = {"Honda", "Toyota", "Ford", "Volvo", "Skoda"};
static const char *const models[] = {"Accord", "Corolla", "Focus", "Estate", "Octavia"};

static long long jint(const char *body, const char *name)
{
    json_t *o = json_loads(body, 0, NULL);
    long long v = json_is_integer(json_object_get(o, name))
                      ? (long long)json_integer_value(json_object_get(o, name))
                      : -1;
    json_decref(o);
    return v;
}

static void remember_event(cars_ctx_t *x, const char *body)
{
    char ev[40];
    json_member(body, "event_id", ev, sizeof(ev));
    CHECK(outbox_uuid_valid(ev), "no event_id in %s", body);
    pthread_mutex_lock(&x->lock);
    chaos_ids_add(&x->event_ids, ev);
    pthread_mutex_unlock(&x->lock);
}

/* PUT body on car k; updates the expected state from the answer. */
static void put(chaos_client_t *cl, cars_ctx_t *x, long k, int step, const char *body)
{
    car_t *car = &x->cars[k];
    char path[96], key[64];
    snprintf(path, sizeof(path), "/cars/%s", car->id);
    snprintf(key, sizeof(key), "chaos-car-%ld-%d", k, step);
    http_resp_t r;
    long st = chaos_call(cl, "api", "PUT", path, body, key, &r);
    CHECK(st == 200, "car %ld step %d: PUT %s: %ld %s", k, step, body, st, r.body);
    car->version = jint(r.body, "version");
    car->price = jint(r.body, "price");
    json_member(r.body, "make", car->make, sizeof(car->make));
    json_member(r.body, "model", car->model, sizeof(car->model));
    remember_event(x, r.body);
    chaos_accepted(cl->C);
}

static void op(chaos_client_t *cl, long k, void *ud)
{
    cars_ctx_t *x = ud;
    car_t *car = &x->cars[k];
    cars_vin("1HGCM826", (int)k, car->vin);
    snprintf(car->make, sizeof(car->make), "%s", makes[k % 5]);
    snprintf(car->model, sizeof(car->model), "%s", models[k % 5]);
    car->year = 2000 + (int)(k % 20);
    car->price = 100000 + k;
    char key[64], body[256];
    snprintf(key, sizeof(key), "chaos-car-%ld-0", k);
    snprintf(body, sizeof(body),
             "{\"vin\":\"%s\",\"make\":\"%s\",\"model\":\"%s\",\"year\":%d,\"price\":%lld}",
             car->vin, car->make, car->model, car->year, car->price);
    http_resp_t r;
    long st = chaos_call(cl, "api", "POST", "/cars", body, key, &r);
    if (st == 409 && cl->ambiguous && strstr(r.body, "vin-already-registered")) {
        /* registered by an attempt whose answer was lost */
        json_member(r.body, "car_id", car->id, sizeof(car->id));
        char path[96];
        snprintf(path, sizeof(path), "/cars/%s", car->id);
        CHECK(chaos_call(cl, "api", "GET", path, NULL, NULL, &r) == 200, "GET %s: %ld %s", path,
              r.status, r.body);
        car->version = jint(r.body, "version");
    } else {
        CHECK(st == 201, "car %ld: register: %ld %s", k, st, r.body);
        json_member(r.body, "id", car->id, sizeof(car->id));
        car->version = jint(r.body, "version");
        remember_event(x, r.body);
    }
    CHECK(outbox_uuid_valid(car->id) && car->version >= 1, "car %ld: %s", k, r.body);
    chaos_accepted(cl->C);

    snprintf(body, sizeof(body), "{\"price\":%ld}", 200000 + k);
    put(cl, x, k, 1, body);
    snprintf(body, sizeof(body), "{\"make\":\"%s\",\"model\":\"%s\"}", makes[(k + 1) % 5],
             models[(k + 2) % 5]);
    put(cl, x, k, 2, body);
    if (k % 3 != 0) {
        snprintf(body, sizeof(body), "{\"price\":%ld}", 300000 + k);
        put(cl, x, k, 3, body);
        return;
    }
    char path[96];
    snprintf(path, sizeof(path), "/cars/%s", car->id);
    snprintf(key, sizeof(key), "chaos-car-%ld-3", k);
    st = chaos_call(cl, "api", "DELETE", path, NULL, key, &r);
    if (st == 404 && cl->ambiguous) {
        car->version++; /* deleted by an attempt whose answer was lost */
    } else {
        CHECK(st == 200, "car %ld: DELETE: %ld %s", k, st, r.body);
        CHECK(jint(r.body, "version") == car->version + 1, "car %ld: delete version: %s", k,
              r.body);
        car->version = jint(r.body, "version");
        remember_event(x, r.body);
    }
    car->deleted = 1;
    chaos_accepted(cl->C);
}

static void on_entry(const char *id, const char *type, const char *event, void *ud)
{
    (void)type, (void)event;
    chaos_ids_add(ud, id);
}

static int car_by_id(const void *a, const void *b)
{
    return strcmp(((const car_t *)a)->id, ((const car_t *)b)->id);
}

static car_t *find(car_t *cars, long n, const char *id)
{
    car_t key;
    snprintf(key.id, sizeof(key.id), "%s", id);
    return bsearch(&key, cars, (size_t)n, sizeof(car_t), car_by_id);
}

int main(void)
{
    chaos_t C;
    chaos_init(&C, "cars");
    char db[256], sdb[256], kv[1200];
    chaos_db(&C, "cars", db, sizeof(db));
    chaos_db(&C, "cars_search", sdb, sizeof(sdb));
    snprintf(kv, sizeof(kv), "DATABASE_URL=%s", db);
    chaos_env(&C, kv);
    snprintf(kv, sizeof(kv), "SEARCH_DATABASE_URL=%s", sdb);
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
    const char *proj[] = {"--no-api", "--no-relay", NULL};
    chaos_add(&C, "projection-1", "consumer", NULL, NULL, "cars-service", proj, NULL,
              "consumer_started", 1);
    chaos_add(&C, "projection-2", "consumer", NULL, NULL, "cars-service", proj, NULL,
              "consumer_started", 1);
    chaos_add(&C, "relay-1", "relay", NULL, NULL, "cars-service", relay, NULL, "relay_started", 1);
    chaos_add(&C, "relay-2", "relay", NULL, NULL, "cars-service", relay, NULL, "relay_started", 1);
    chaos_add(&C, "api-1", "api", "api", "PORT", "cars-service", api, NULL, NULL, 1);
    chaos_add(&C, "api-2", "api", "api", "PORT", "cars-service", api, NULL, NULL, 1);
    chaos_probe(&C, "api", "/cars/00000000-0000-7000-8000-000000000000");

    long n = C.events / 4 > 0 ? C.events / 4 : 1;
    cars_ctx_t x = {.cars = calloc((size_t)n, sizeof(car_t))};
    pthread_mutex_init(&x.lock, NULL);
    CHECK(x.cars, "oom");
    chaos_run(&C, n, op, &x);

    /* Drained: the outbox is empty and the index holds every car at the
     * version the harness expects (summed). */
    long long want_sum = 0;
    long live = 0;
    for (long k = 0; k < n; k++) {
        want_sum += x.cars[k].version;
        live += !x.cars[k].deleted;
    }
    PGconn *c = NULL, *s = NULL;
    chaos_wait_ll(&C, &c, db, "SELECT count(*) FROM outbox", 0, chaos_drain_ms(&C),
                  "outbox rows left");
    chaos_wait_ll(&C, &s, sdb, "SELECT count(*) FROM car_search", n, chaos_drain_ms(&C),
                  "cars in the index");
    chaos_wait_ll(&C, &s, sdb, "SELECT coalesce(sum(version), 0) FROM car_search", want_sum,
                  chaos_drain_ms(&C), "sum of the index's versions");

    /* The cars table: exactly the live cars, each in its last accepted state. */
    qsort(x.cars, (size_t)n, sizeof(car_t), car_by_id);
    for (long k = 1; k < n; k++)
        CHECK(strcmp(x.cars[k].id, x.cars[k - 1].id), "two cars with the id %s", x.cars[k].id);
    PGresult *r = tu_exec(c, "SELECT id::text, vin, make, model, year, price, version FROM cars");
    CHECK(PQntuples(r) == live, "cars table: %d rows, want %ld live cars", PQntuples(r), live);
    for (int i = 0; i < PQntuples(r); i++) {
        car_t *car = find(x.cars, n, PQgetvalue(r, i, 0));
        CHECK(car && !car->deleted, "car %s in the table was never registered or was deleted",
              PQgetvalue(r, i, 0));
        CHECK(!strcmp(car->vin, PQgetvalue(r, i, 1)) && !strcmp(car->make, PQgetvalue(r, i, 2)) &&
                  !strcmp(car->model, PQgetvalue(r, i, 3)) &&
                  car->year == atoi(PQgetvalue(r, i, 4)) &&
                  car->price == atoll(PQgetvalue(r, i, 5)) &&
                  car->version == atoll(PQgetvalue(r, i, 6)),
              "car %s: table has %s %s %s %s %s v%s, the last answer said %s %s %s %d %lld v%lld",
              car->id, PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), PQgetvalue(r, i, 3),
              PQgetvalue(r, i, 4), PQgetvalue(r, i, 5), PQgetvalue(r, i, 6), car->vin, car->make,
              car->model, car->year, car->price, car->version);
    }
    PQclear(r);

    /* The index: one row per car, newest state, tombstones for deletes. */
    r = tu_exec(s, "SELECT car_id::text, version, deleted, coalesce(vin, ''),"
                   " coalesce(make, ''), coalesce(model, ''), coalesce(year, 0),"
                   " coalesce(price, 0) FROM car_search");
    CHECK(PQntuples(r) == n, "car_search: %d rows, want %ld", PQntuples(r), n);
    for (int i = 0; i < PQntuples(r); i++) {
        car_t *car = find(x.cars, n, PQgetvalue(r, i, 0));
        CHECK(car, "index row for car %s that was never registered", PQgetvalue(r, i, 0));
        int del = !strcmp(PQgetvalue(r, i, 2), "t");
        CHECK(del == car->deleted && car->version == atoll(PQgetvalue(r, i, 1)),
              "car %s: index has version %s deleted %s, want version %lld deleted %d", car->id,
              PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), car->version, car->deleted);
        CHECK(del || (!strcmp(car->vin, PQgetvalue(r, i, 3)) &&
                      !strcmp(car->make, PQgetvalue(r, i, 4)) &&
                      !strcmp(car->model, PQgetvalue(r, i, 5)) &&
                      car->year == atoi(PQgetvalue(r, i, 6)) &&
                      car->price == atoll(PQgetvalue(r, i, 7))),
              "car %s: index has %s %s %s %s %s, the table %s %s %s %d %lld", car->id,
              PQgetvalue(r, i, 3), PQgetvalue(r, i, 4), PQgetvalue(r, i, 5), PQgetvalue(r, i, 6),
              PQgetvalue(r, i, 7), car->vin, car->make, car->model, car->year, car->price);
    }
    PQclear(r);
    CHECK(tu_query_ll(s, "SELECT count(*) - count(DISTINCT (consumer, message_id)) FROM "
                         "outbox_inbox") == 0,
          "a message handled twice by the projection");
    CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox_dead_letter") == 0, "relay dead letters");
    CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox_consumer_dead_letter") == 0,
          "consumer dead letters: %lld",
          tu_query_ll(c, "SELECT count(*) FROM outbox_consumer_dead_letter"));

    /* Search over HTTP: a sample of live cars found by VIN, deleted ones not. */
    chaos_client_t cl;
    chaos_client_init(&C, &cl, 1000);
    for (long k = 0; k < n && k < 60; k++) {
        car_t *car = &x.cars[(k * 7919) % n];
        char path[128];
        snprintf(path, sizeof(path), "/cars/search?q=%s&limit=5", car->vin);
        http_resp_t hr;
        CHECK(chaos_call(&cl, "api", "GET", path, NULL, NULL, &hr) == 200, "GET %s: %ld %s", path,
              hr.status, hr.body);
        CHECK(jint(hr.body, "total") == !car->deleted, "search %s (deleted %d): %s", car->vin,
              car->deleted, hr.body);
    }
    chaos_client_term(&cl);

    /* Every event an accepted write answered with is in the broker. */
    chaos_ids_t stream = {0};
    long entries = chaos_stream_scan(&C, "cars", on_entry, &stream);
    long copies = chaos_ids_sort(&stream, 1);
    chaos_ids_sort(&x.event_ids, 1);
    for (long i = 0; i < x.event_ids.n; i++)
        CHECK(chaos_ids_has(&stream, x.event_ids.v[i]), "event %s is not in the stream cars",
              x.event_ids.v[i]);
    int skipped = 0, stale = 0;
    for (int i = 0; i < C.nprocs; i++) {
        skipped += count_in_file(C.procs[i].log, "SKIPPING duplicate");
        stale += count_in_file(C.procs[i].log, "stale_event");
    }

    chaos_metric(&C, "cars", n);
    chaos_metric(&C, "deleted", n - live);
    chaos_metric(&C, "stream_entries", entries);
    chaos_metric(&C, "events_published", stream.n);
    chaos_metric(&C, "republished_copies", copies);
    chaos_metric(&C, "duplicates_skipped_by_inbox", skipped);
    chaos_metric(&C, "stale_events_ignored", stale);
    PQfinish(c);
    PQfinish(s);
    chaos_finish(&C);
    chaos_ids_free(&stream);
    chaos_ids_free(&x.event_ids);
    free(x.cars);
    printf("PASS chaos_cars\n");
    return 0;
}
