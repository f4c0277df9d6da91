/* The cars API on the primary database: POST /cars, POST /cars/import,
 * GET /cars/{id}, PUT /cars/{id}, DELETE /cars/{id}. (GET /cars/search is
 * in search.c: it reads the search index, never these tables.)
 *
 * Every write changes the cars table and enqueues its event (outbox_enqueue)
 * in ONE transaction: both commit or neither does. Each change bumps the
 * car's version; the event carries it with the schema version, so the
 * search side keeps only the newest state. See docs/CARS.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cars.h"

/* The car row as the statements return it, columns 0..8. */
#define CAR_COLS(p)                                                                                \
    p "id::text, " p "vin, " p "make, " p "model, " p "year, " p "price, " p "version, "           \
      "to_char(" p "created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "         \
      "to_char(" p "updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

static void trim_nl(char *s)
{
    size_t l = strlen(s);
    while (l && (s[l - 1] == '\n' || s[l - 1] == ' '))
        s[--l] = '\0';
}

/* Runs one parameterised statement; the result, or NULL with errbuf set and
 * *sqlstate (may be NULL) the server's code ("" when none). */
static PGresult *exec(PGconn *c, const char *sql, int n, const char *const *params,
                      ExecStatusType want, char *errbuf, size_t errsize, char sqlstate[6])
{
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    if (sqlstate)
        sqlstate[0] = '\0';
    if (PQresultStatus(r) == want)
        return r;
    snprintf(errbuf, errsize, "%s", PQresultErrorMessage(r));
    trim_nl(errbuf);
    const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (sqlstate && st)
        snprintf(sqlstate, 6, "%s", st);
    PQclear(r);
    return NULL;
}

static void db_problem(const outbox_http_req_t *req, outbox_http_resp_t *resp, PGconn *c,
                       const char *what, const char *err)
{
    outbox__log(OUTBOX_LOG_ERROR, "cars", "db_error", err, "what", what, "path", req->path, NULL);
    int down = !c || PQstatus(c) != CONNECTION_OK;
    outbox__http_problem(req, resp, down ? 503 : 500, down ? "database-unavailable" : "internal",
                         NULL, "%s failed: the database %s; nothing was written, retry later", what,
                         down ? "is unreachable" : "returned an error (see the server log)");
}

/* The car of row i (CAR_COLS) as a JSON object; NULL on ENOMEM. */
static json_t *car_json(const PGresult *r, int i)
{
    return json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:s,s:s}", "id", PQgetvalue(r, i, 0), "vin",
                     PQgetvalue(r, i, 1), "make", PQgetvalue(r, i, 2), "model", PQgetvalue(r, i, 3),
                     "year", (json_int_t)atoll(PQgetvalue(r, i, 4)), "price",
                     (json_int_t)atoll(PQgetvalue(r, i, 5)), "version",
                     (json_int_t)atoll(PQgetvalue(r, i, 6)), "created_at", PQgetvalue(r, i, 7),
                     "updated_at", PQgetvalue(r, i, 8));
}

/*
 * Enqueues the car's event in the open transaction. data is the event's
 * data without schema_version (added here, first). Returns 0, or -1 with
 * err set (the transaction is then aborted).
 */
static int enqueue(PGconn *c, const char *type, const char *car_id, const json_t *data, int prio,
                   char event_id[OUTBOX_UUID_STRLEN + 1], char *err, size_t err_size)
{
    json_t *doc = json_pack("{s:i}", "schema_version", CARS_SCHEMA_VERSION);
    if (doc)
        json_object_update(doc, (json_t *)data);
    char *payload = doc ? json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(doc);
    if (!payload) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    outbox_event_t ev = {.topic = CARS_TOPIC,
                         .type = type,
                         .key = car_id,
                         .payload = payload,
                         .source = CARS_SOURCE,
                         .priority = prio};
    outbox_err_t e = outbox_enqueue(c, &ev, event_id, err, err_size);
    free(payload);
    return e == OUTBOX_OK ? 0 : -1;
}

/* The event could not be written: the transaction rolls back with it. */
static void event_failed(const outbox_http_req_t *req, outbox_http_resp_t *resp, const char *what,
                         const char *type, const char *car_id, const char *err)
{
    outbox__log(OUTBOX_LOG_ERROR, "cars", "event_write_failed",
                "writing the event to the outbox failed: the transaction was rolled back", "what",
                what, "type", type, "car_id", car_id, "error", err, NULL);
    outbox__http_problem(req, resp, 500, "event-write-failed", "Event Write Failed",
                         "%s failed: the change and its %s event are written in one transaction, "
                         "and writing the event to the outbox failed, so the transaction was "
                         "rolled back and nothing was written (car %s). Retry later; the server "
                         "log has the database's reason",
                         what, type, car_id);
    outbox__http_problem_member(resp, "car_id", car_id);
}

/* COMMIT and its three outcomes; 0 when committed (else resp is filled). */
static int commit(const outbox_http_req_t *req, outbox_http_resp_t *resp, PGconn *c,
                  const char *what, const char *car_id)
{
    char err[512];
    switch (outbox_kit_db_commit(c, err, sizeof(err))) {
    case OUTBOX_KIT_COMMITTED:
        return 0;
    case OUTBOX_KIT_ROLLED_BACK:
        db_problem(req, resp, c, what, err);
        return -1;
    case OUTBOX_KIT_COMMIT_UNKNOWN:
        break;
    }
    outbox__log(OUTBOX_LOG_ERROR, "cars", "commit_outcome_unknown",
                "connection lost during COMMIT: the change may or may not have been made", "what",
                what, "car_id", car_id, "error", err, NULL);
    outbox__http_problem(req, resp, 503, "commit-outcome-unknown", "Commit Outcome Unknown",
                         "the connection to the database broke while %s was being committed, so "
                         "it may or may not have been made; GET /cars/%s tells which",
                         what, car_id);
    outbox__http_problem_member(resp, "car_id", car_id);
    outbox__http_add_header(resp, "Retry-After", "1");
    return -1;
}

static void reply_car(outbox_http_resp_t *resp, unsigned status, json_t *car, const char *event_id)
{
    if (event_id)
        json_object_set_new(car, "event_id", json_string(event_id));
    outbox__http_reply_json(resp, status, car);
}

/* The {id} path parameter, or NULL after a 400. */
static const char *car_id_param(const outbox_http_req_t *req, outbox_http_resp_t *resp)
{
    const char *id = outbox__http_param(req, "id");
    if (!outbox_uuid_valid(id)) {
        outbox__http_problem(req, resp, 400, "invalid-car-id", NULL,
                             "car id \"%.64s\" is not a UUID (8-4-4-4-12 hex digits)",
                             id ? id : "");
        return NULL;
    }
    return id;
}

static void vin_taken(const outbox_http_req_t *req, outbox_http_resp_t *resp, PGconn *c,
                      const char *vin)
{
    char err[256];
    const char *p[1] = {vin};
    PGresult *r = exec(c, "SELECT id::text FROM cars WHERE vin = $1", 1, p, PGRES_TUPLES_OK, err,
                       sizeof(err), NULL);
    const char *other = r && PQntuples(r) == 1 ? PQgetvalue(r, 0, 0) : NULL;
    outbox__http_problem(req, resp, 409, "vin-already-registered", NULL,
                         "a car with vin %s is already registered%s%s", vin, other ? " as " : "",
                         other ? other : "");
    if (other)
        outbox__http_problem_member(resp, "car_id", other);
    PQclear(r);
}

static void create_car(outbox_http_req_t *req, outbox_http_resp_t *resp, void *opaque)
{
    cars_app_t *app = opaque;
    car_t car;
    char why[512], err[512], st[6];
    if (cars_car_parse(req->json, CAR_HAS_ALL, NULL, &car, why, sizeof(why))) {
        outbox__http_problem(req, resp, 400, "validation-error", NULL, "%s", why);
        return;
    }
    PGconn *c = outbox__dbpool_get(app->pool, 5000, err, sizeof(err));
    if (!c) {
        db_problem(req, resp, NULL, "registering the car", err);
        return;
    }
    char id[OUTBOX_UUID_STRLEN + 1], year[16], price[24], event_id[OUTBOX_UUID_STRLEN + 1];
    outbox_uuid_v7(id);
    snprintf(year, sizeof(year), "%d", car.year);
    snprintf(price, sizeof(price), "%lld", car.price);
    const char *p[6] = {id, car.vin, car.make, car.model, year, price};
    PGresult *r = NULL;
    json_t *out = NULL;
    if (outbox_kit_db_exec(c, "BEGIN", err, sizeof(err)))
        goto dberr;
    r = exec(c,
             "INSERT INTO cars (id, vin, make, model, year, price)"
             " VALUES ($1::uuid, $2, $3, $4, $5::int, $6::bigint)"
             " ON CONFLICT (vin) DO NOTHING RETURNING " CAR_COLS(""),
             6, p, PGRES_TUPLES_OK, err, sizeof(err), st);
    if (!r)
        goto dberr;
    if (PQntuples(r) == 0) {
        vin_taken(req, resp, c, car.vin);
        goto done;
    }
    out = car_json(r, 0);
    if (!out) {
        snprintf(err, sizeof(err), "out of memory");
        goto dberr;
    }
    if (enqueue(c, "CarCreated", id, out, CARS_PRIO_NORMAL, event_id, err, sizeof(err))) {
        event_failed(req, resp, "registering the car", "CarCreated", id, err);
        goto done;
    }
    if (commit(req, resp, c, "registering the car", id))
        goto done;
    reply_car(resp, 201, out, event_id);
    char loc[64];
    snprintf(loc, sizeof(loc), "/cars/%s", id);
    outbox__http_add_header(resp, "Location", loc);
    outbox__log(OUTBOX_LOG_INFO, "cars", "car_registered", "car registered", "car_id", id, "vin",
                car.vin, "make", car.make, "model", car.model, "event_id", event_id, "price", price,
                NULL);
    goto done;
dberr:
    db_problem(req, resp, c, "registering the car", err);
done:
    PQclear(r);
    json_decref(out);
    outbox__dbpool_put(app->pool, c); /* rolls back anything left open */
}

static void update_car(outbox_http_req_t *req, outbox_http_resp_t *resp, void *opaque)
{
    cars_app_t *app = opaque;
    const char *id = car_id_param(req, resp);
    if (!id)
        return;
    car_t car;
    char why[512], err[512], st[6];
    if (cars_car_parse(req->json, 0, NULL, &car, why, sizeof(why))) {
        outbox__http_problem(req, resp, 400, "validation-error", NULL, "%s", why);
        return;
    }
    PGconn *c = outbox__dbpool_get(app->pool, 5000, err, sizeof(err));
    if (!c) {
        db_problem(req, resp, NULL, "updating the car", err);
        return;
    }
    char year[16], price[24], event_id[OUTBOX_UUID_STRLEN + 1];
    snprintf(year, sizeof(year), "%d", car.year);
    snprintf(price, sizeof(price), "%lld", car.price);
    const char *p[6] = {id,
                        car.has & CAR_HAS_VIN ? car.vin : NULL,
                        car.has & CAR_HAS_MAKE ? car.make : NULL,
                        car.has & CAR_HAS_MODEL ? car.model : NULL,
                        car.has & CAR_HAS_YEAR ? year : NULL,
                        car.has & CAR_HAS_PRICE ? price : NULL};
    PGresult *r = NULL;
    json_t *out = NULL;
    if (outbox_kit_db_exec(c, "BEGIN", err, sizeof(err)))
        goto dberr;
    r = exec(c,
             "WITH old AS (SELECT id, price FROM cars WHERE id = $1::uuid FOR UPDATE)"
             " UPDATE cars c SET vin = COALESCE($2, c.vin), make = COALESCE($3, c.make),"
             "   model = COALESCE($4, c.model), year = COALESCE($5::int, c.year),"
             "   price = COALESCE($6::bigint, c.price), version = c.version + 1,"
             "   updated_at = now()"
             " FROM old WHERE c.id = old.id RETURNING " CAR_COLS("c.") ", old.price",
             6, p, PGRES_TUPLES_OK, err, sizeof(err), st);
    if (!r && !strcmp(st, "23505")) {
        PQclear(PQexec(c, "ROLLBACK"));
        vin_taken(req, resp, c, car.vin);
        goto done;
    }
    if (!r)
        goto dberr;
    if (PQntuples(r) == 0) {
        outbox__http_problem(req, resp, 404, "car-not-found", NULL, "no car with id %s", id);
        goto done;
    }
    int price_changed = strcmp(PQgetvalue(r, 0, 5), PQgetvalue(r, 0, 9)) != 0;
    char old_price[24];
    snprintf(old_price, sizeof(old_price), "%s", PQgetvalue(r, 0, 9));
    out = car_json(r, 0);
    if (!out) {
        snprintf(err, sizeof(err), "out of memory");
        goto dberr;
    }
    if (enqueue(c, "CarUpdated", id, out, price_changed ? CARS_PRIO_URGENT : CARS_PRIO_NORMAL,
                event_id, err, sizeof(err))) {
        event_failed(req, resp, "updating the car", "CarUpdated", id, err);
        goto done;
    }
    if (commit(req, resp, c, "updating the car", id))
        goto done;
    reply_car(resp, 200, out, event_id);
    char ver[24];
    snprintf(ver, sizeof(ver), "%s", PQgetvalue(r, 0, 6));
    outbox__log(OUTBOX_LOG_INFO, "cars", "car_updated",
                price_changed ? "car updated, price changed (urgent event)" : "car updated",
                "car_id", id, "version", ver, "event_id", event_id, "old_price", old_price, "price",
                PQgetvalue(r, 0, 5), NULL);
    goto done;
dberr:
    db_problem(req, resp, c, "updating the car", err);
done:
    PQclear(r);
    json_decref(out);
    outbox__dbpool_put(app->pool, c);
}

static void delete_car(outbox_http_req_t *req, outbox_http_resp_t *resp, void *opaque)
{
    cars_app_t *app = opaque;
    const char *id = car_id_param(req, resp);
    if (!id)
        return;
    char err[512], event_id[OUTBOX_UUID_STRLEN + 1];
    PGconn *c = outbox__dbpool_get(app->pool, 5000, err, sizeof(err));
    if (!c) {
        db_problem(req, resp, NULL, "deleting the car", err);
        return;
    }
    const char *p[1] = {id};
    PGresult *r = NULL;
    json_t *out = NULL;
    if (outbox_kit_db_exec(c, "BEGIN", err, sizeof(err)))
        goto dberr;
    r = exec(c,
             "DELETE FROM cars WHERE id = $1::uuid RETURNING vin, version + 1,"
             " to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
             1, p, PGRES_TUPLES_OK, err, sizeof(err), NULL);
    if (!r)
        goto dberr;
    if (PQntuples(r) == 0) {
        outbox__http_problem(req, resp, 404, "car-not-found", NULL, "no car with id %s", id);
        goto done;
    }
    out = json_pack("{s:s,s:s,s:I,s:s}", "id", id, "vin", PQgetvalue(r, 0, 0), "version",
                    (json_int_t)atoll(PQgetvalue(r, 0, 1)), "deleted_at", PQgetvalue(r, 0, 2));
    if (!out) {
        snprintf(err, sizeof(err), "out of memory");
        goto dberr;
    }
    if (enqueue(c, "CarDeleted", id, out, CARS_PRIO_URGENT, event_id, err, sizeof(err))) {
        event_failed(req, resp, "deleting the car", "CarDeleted", id, err);
        goto done;
    }
    if (commit(req, resp, c, "deleting the car", id))
        goto done;
    json_object_set_new(out, "status", json_string("deleted"));
    reply_car(resp, 200, out, event_id);
    outbox__log(OUTBOX_LOG_INFO, "cars", "car_deleted", "car deleted (urgent event)", "car_id", id,
                "vin", PQgetvalue(r, 0, 0), "event_id", event_id, NULL);
    goto done;
dberr:
    db_problem(req, resp, c, "deleting the car", err);
done:
    PQclear(r);
    json_decref(out);
    outbox__dbpool_put(app->pool, c);
}

static void get_car(outbox_http_req_t *req, outbox_http_resp_t *resp, void *opaque)
{
    cars_app_t *app = opaque;
    const char *id = car_id_param(req, resp);
    if (!id)
        return;
    char err[512];
    PGconn *c = outbox__dbpool_get(app->pool, 5000, err, sizeof(err));
    if (!c) {
        db_problem(req, resp, NULL, "reading the car", err);
        return;
    }
    const char *p[1] = {id};
    PGresult *r = exec(c, "SELECT " CAR_COLS("") " FROM cars WHERE id = $1::uuid", 1, p,
                       PGRES_TUPLES_OK, err, sizeof(err), NULL);
    if (!r) {
        db_problem(req, resp, c, "reading the car", err);
    } else if (PQntuples(r) == 0) {
        outbox__http_problem(req, resp, 404, "car-not-found", NULL, "no car with id %s", id);
    } else {
        json_t *out = car_json(r, 0);
        outbox__http_reply_json(resp, 200, out);
        json_decref(out);
    }
    PQclear(r);
    outbox__dbpool_put(app->pool, c);
}

/*
 * POST /cars/import {"cars": [car, ...]}: up to CARS_IMPORT_MAX cars in one
 * transaction, all or none. Their CarCreated events have the low import
 * priority: price changes and deletes are published ahead of a backlog.
 */
static void import_cars(outbox_http_req_t *req, outbox_http_resp_t *resp, void *opaque)
{
    cars_app_t *app = opaque;
    json_t *in = json_object_get(req->json, "cars");
    if (!json_is_array(in) || json_array_size(in) == 0 || json_array_size(in) > CARS_IMPORT_MAX) {
        outbox__http_problem(req, resp, 400, "validation-error", NULL,
                             "cars is required: an array of 1 to %d cars, each {\"vin\", \"make\", "
                             "\"model\", \"year\", \"price\"}",
                             CARS_IMPORT_MAX);
        return;
    }
    int64_t t0 = outbox_kit_now_ms();
    size_t n = json_array_size(in);
    json_t *rows = json_array();
    char why[512], err[512];
    for (size_t i = 0; i < n; i++) {
        car_t car;
        char where[32], id[OUTBOX_UUID_STRLEN + 1];
        snprintf(where, sizeof(where), "cars[%zu]: ", i);
        if (cars_car_parse(json_array_get(in, i), CAR_HAS_ALL, where, &car, why, sizeof(why))) {
            outbox__http_problem(req, resp, 400, "validation-error", NULL, "%s", why);
            json_decref(rows);
            return;
        }
        outbox_uuid_v7(id);
        json_array_append_new(rows, json_pack("{s:s,s:s,s:s,s:s,s:i,s:I}", "id", id, "vin", car.vin,
                                              "make", car.make, "model", car.model, "year",
                                              car.year, "price", (json_int_t)car.price));
    }
    char *text = json_dumps(rows, JSON_COMPACT);
    json_decref(rows);
    PGconn *c = text ? outbox__dbpool_get(app->pool, 5000, err, sizeof(err)) : NULL;
    if (!c) {
        db_problem(req, resp, NULL, "importing the cars", text ? err : "out of memory");
        free(text);
        return;
    }
    PGresult *r = NULL, *dup = NULL;
    json_t *ids = json_array();
    const char *p[1] = {text};
    if (outbox_kit_db_exec(c, "BEGIN", err, sizeof(err)))
        goto dberr;
    r = exec(c,
             "INSERT INTO cars (id, vin, make, model, year, price)"
             " SELECT id, vin, make, model, year, price FROM json_to_recordset($1::json)"
             "   AS r(id uuid, vin text, make text, model text, year int, price bigint)"
             " ON CONFLICT (vin) DO NOTHING RETURNING " CAR_COLS(""),
             1, p, PGRES_TUPLES_OK, err, sizeof(err), NULL);
    if (!r)
        goto dberr;
    if ((size_t)PQntuples(r) < n) {
        /* Which VIN: already registered, or twice in this request. */
        dup = exec(c,
                   "SELECT r.vin, (SELECT count(*) FROM json_to_recordset($1::json) AS q(vin text)"
                   "               WHERE q.vin = r.vin) FROM json_to_recordset($1::json)"
                   " AS r(id uuid, vin text) WHERE NOT EXISTS (SELECT 1 FROM cars c"
                   "   WHERE c.id = r.id) LIMIT 1",
                   1, p, PGRES_TUPLES_OK, err, sizeof(err), NULL);
        int twice = dup && PQntuples(dup) == 1 && atoll(PQgetvalue(dup, 0, 1)) > 1;
        outbox__http_problem(
            req, resp, 409, "vin-already-registered", NULL,
            "%zu of the %zu cars were not imported, e.g. vin %s: %s; nothing was imported",
            n - (size_t)PQntuples(r), n, dup && PQntuples(dup) ? PQgetvalue(dup, 0, 0) : "?",
            twice ? "it appears more than once in the request" : "it is already registered");
        goto done;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        json_t *car = car_json(r, i);
        char event_id[OUTBOX_UUID_STRLEN + 1];
        int bad = !car || enqueue(c, "CarCreated", PQgetvalue(r, i, 0), car, CARS_PRIO_IMPORT,
                                  event_id, err, sizeof(err));
        json_decref(car);
        if (bad) {
            event_failed(req, resp, "importing the cars", "CarCreated", PQgetvalue(r, i, 0), err);
            goto done;
        }
        json_array_append_new(ids, json_string(PQgetvalue(r, i, 0)));
    }
    if (commit(req, resp, c, "importing the cars", PQgetvalue(r, 0, 0)))
        goto done;
    json_t *out = json_pack("{s:s,s:I,s:i,s:O}", "status", "success", "imported", (json_int_t)n,
                            "priority", CARS_PRIO_IMPORT, "ids", ids);
    outbox__http_reply_json(resp, 201, out);
    json_decref(out);
    char cnt[24], ms[24];
    snprintf(cnt, sizeof(cnt), "%zu", n);
    snprintf(ms, sizeof(ms), "%lld", (long long)(outbox_kit_now_ms() - t0));
    outbox__log(OUTBOX_LOG_INFO, "cars", "cars_imported", "cars imported (low-priority events)",
                "count", cnt, "ms", ms, "first_id", PQgetvalue(r, 0, 0), NULL);
    goto done;
dberr:
    db_problem(req, resp, c, "importing the cars", err);
done:
    PQclear(r);
    PQclear(dup);
    json_decref(ids);
    free(text);
    outbox__dbpool_put(app->pool, c);
}

/* /cars/search before /cars/{id}: the first pattern that matches wins. */
const outbox_http_route_t cars_routes[] = {
    {"POST", "/cars", create_car, 1},
    {"POST", "/cars/import", import_cars, 1},
    {"GET", "/cars/search", cars_search, 0},
    {"GET", "/cars/{id}", get_car, 0},
    {"PUT", "/cars/{id}", update_car, 1},
    {"DELETE", "/cars/{id}", delete_car, 0},
    {NULL, NULL, NULL, 0},
};
