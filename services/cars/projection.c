/* The car-search consumer: keeps the car_search projection (search
 * database) from the cars events, consumer_threads threads each with its own
 * database session and broker consumer in group "car-search".
 *
 * One transaction per event: the inbox record (a duplicate event id is
 * logged "SKIPPING duplicate message <id>" and acknowledged with no effect)
 * and a version-gated upsert: the event's state is written only if its
 * version is above the stored one. So events that arrive twice, out of
 * order, or on two threads at once converge to the newest state. A delete
 * leaves a tombstone row (deleted, version) so that a late, older
 * CarCreated/CarUpdated cannot bring the car back.
 *
 * Handler results (the consumer contract):
 *   OUTBOX_OK            applied, stale or duplicate: acknowledge;
 *   OUTBOX_ERR_REJECTED  the event can never be applied (no car id or
 *                        version, malformed data): dead letter;
 *   OUTBOX_ERR_DB        the search database is unreachable: retry without
 *                        charging an attempt;
 *   OUTBOX_ERR_TIMEOUT   any other failure (lock timeout, deadlock...): retry
 *                        later. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cars.h"
#include "outbox/consumer.h"

#define APPLY_STMT "car_search_apply"

/* $1 car id, $2 version, $3 deleted, $4 schema version, $5 vin, $6 make,
 * $7 model, $8 year, $9 price, $10 event id. Returns the stored version
 * and whether this event wrote it. */
static const char apply_sql[] =
    "WITH up AS ("
    "  INSERT INTO car_search AS s (car_id, version, deleted, schema_version, vin, make, model,"
    "                               year, price, event_id, indexed_at)"
    "  VALUES ($1::uuid, $2::bigint, $3::boolean, $4::int, $5, $6, $7, $8::int, $9::bigint,"
    "          $10::uuid, now())"
    "  ON CONFLICT (car_id) DO UPDATE SET version = EXCLUDED.version,"
    "    deleted = EXCLUDED.deleted, schema_version = EXCLUDED.schema_version,"
    "    vin = EXCLUDED.vin, make = EXCLUDED.make, model = EXCLUDED.model,"
    "    year = EXCLUDED.year, price = EXCLUDED.price, event_id = EXCLUDED.event_id,"
    "    indexed_at = now()"
    "  WHERE s.version < EXCLUDED.version"
    "  RETURNING version)"
    " SELECT (SELECT version FROM up), (SELECT version FROM car_search WHERE car_id = $1::uuid)";

typedef struct worker_s {
    const outbox_conf_t *conf; /* owned by the projection */
    const char *search_url;
    char source[1024];
    char instance[160];
    PGconn *conn;
    pthread_t thread;
    int started;
    int warned_schema;
    int purger;        /* the first thread also purges old inbox records */
    _Atomic int *stop; /* set by another thread to stop this one */
} worker_t;

struct cars_projection_s {
    _Atomic int stop;
    int n;
    worker_t *workers;
    outbox_conf_t *conf;
    char *search_url;
};

/* (Re)connects the worker's session; 0 when usable. */
static int session(worker_t *w)
{
    if (w->conn && PQstatus(w->conn) == CONNECTION_OK)
        return 0;
    PQfinish(w->conn);
    char err[512];
    w->conn = outbox_kit_db_connect(w->search_url, w->instance, err, sizeof(err));
    if (!w->conn) {
        outbox__log(OUTBOX_LOG_ERROR, CARS_SEARCH_GROUP, "search_db_down", err, NULL);
        return -1;
    }
    /* Commits stay synchronous: the message is acknowledged to the broker
     * right after the commit, so a commit that a PostgreSQL crash loses
     * (synchronous_commit = off) would never be delivered again and the
     * index would keep an old state for good (found by chaos_cars). */
    PGresult *r = PQprepare(w->conn, APPLY_STMT, apply_sql, 0, NULL);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        outbox__log(OUTBOX_LOG_ERROR, CARS_SEARCH_GROUP, "db_error", PQresultErrorMessage(r), NULL);
    PQclear(r);
    if (!ok) {
        PQfinish(w->conn);
        w->conn = NULL;
        return -1;
    }
    return 0;
}

/* After a failed statement: unreachable database, or another failure. */
static outbox_err_t failed(worker_t *w, const char *what, const char *err, const char *msg_id)
{
    int down = PQstatus(w->conn) != CONNECTION_OK;
    outbox__log(OUTBOX_LOG_ERROR, CARS_SEARCH_GROUP, down ? "search_db_down" : "db_error", err,
                "what", what, "message_id", msg_id, NULL);
    if (!down)
        PQclear(PQexec(w->conn, "ROLLBACK"));
    return down ? OUTBOX_ERR_DB : OUTBOX_ERR_TIMEOUT;
}

static outbox_err_t reject(const outbox_delivery_t *d, const char *why)
{
    outbox__log(OUTBOX_LOG_ERROR, CARS_SEARCH_GROUP, "poison_event",
                "event cannot be applied to the search index: dead letter", "reason", why,
                "message_id", d->env.id, "type", d->env.type, "subject",
                d->env.subject ? d->env.subject : "", NULL);
    return OUTBOX_ERR_REJECTED;
}

/* A string member, or NULL for a delete (the tombstone keeps no fields). */
static const char *str_or_null(json_t *data, const char *name, int del)
{
    return del ? NULL : json_string_value(json_object_get(data, name));
}

static outbox_err_t on_event(const outbox_delivery_t *d, void *opaque)
{
    worker_t *w = opaque;
    const char *type = d->env.type;
    int del = !strcmp(type, "CarDeleted");
    if (!del && strcmp(type, "CarCreated") != 0 && strcmp(type, "CarUpdated") != 0)
        return OUTBOX_OK; /* not a car state change: nothing to index */
    json_t *data = json_loads(d->env.data ? d->env.data : "null", JSON_DECODE_ANY, NULL);
    const char *id = json_string_value(json_object_get(data, "id"));
    json_t *ver = json_object_get(data, "version"), *sv = json_object_get(data, "schema_version");
    json_t *year = json_object_get(data, "year"), *price = json_object_get(data, "price");
    const char *why = NULL;
    if (!json_is_object(data))
        why = "data is not a JSON object";
    else if (!outbox_uuid_valid(id))
        why = "data.id is not a car id (UUID)";
    else if (d->env.subject && strcmp(d->env.subject, id) != 0)
        why = "data.id differs from the event subject";
    else if (!json_is_integer(ver) || json_integer_value(ver) < 1)
        why = "data.version is not a positive integer";
    else if (!json_is_integer(sv) || json_integer_value(sv) < 1)
        why = "data.schema_version is not a positive integer";
    else if (!del && (!json_is_string(json_object_get(data, "vin")) ||
                      !json_is_string(json_object_get(data, "make")) ||
                      !json_is_string(json_object_get(data, "model")) || !json_is_integer(year) ||
                      !json_is_integer(price)))
        why = "data lacks vin, make, model, year or price";
    if (why) {
        json_decref(data);
        return reject(d, why);
    }
    if (json_integer_value(sv) > CARS_SCHEMA_VERSION && !w->warned_schema) {
        w->warned_schema = 1;
        outbox__logf(OUTBOX_LOG_WARN, CARS_SEARCH_GROUP, "newer_schema",
                     "event schema_version %lld is newer than this projection's %d: indexing the "
                     "fields it knows; upgrade cars-service",
                     (long long)json_integer_value(sv), CARS_SCHEMA_VERSION);
    }
    char vs[24], svs[16], ys[16], ps[24];
    snprintf(vs, sizeof(vs), "%lld", (long long)json_integer_value(ver));
    snprintf(svs, sizeof(svs), "%lld", (long long)json_integer_value(sv));
    snprintf(ys, sizeof(ys), "%lld", (long long)json_integer_value(year));
    snprintf(ps, sizeof(ps), "%lld", (long long)json_integer_value(price));
    const char *p[10] = {id,
                         vs,
                         del ? "true" : "false",
                         svs,
                         str_or_null(data, "vin", del),
                         str_or_null(data, "make", del),
                         str_or_null(data, "model", del),
                         del ? NULL : ys,
                         del ? NULL : ps,
                         d->env.id};

    char err[512];
    int is_new = 0;
    outbox_err_t rc = OUTBOX_OK;
    if (session(w) != 0) {
        rc = OUTBOX_ERR_DB;
        goto out;
    }
    if (outbox_kit_db_exec(w->conn, "BEGIN", err, sizeof(err)) ||
        outbox_inbox_record(w->conn, CARS_SEARCH_GROUP, d->env.id, &is_new, err, sizeof(err))) {
        rc = failed(w, "inbox record", err, d->env.id);
        goto out;
    }
    if (!is_new) {
        PQclear(PQexec(w->conn, "ROLLBACK"));
        char msg[96];
        snprintf(msg, sizeof(msg), "SKIPPING duplicate message %s", d->env.id);
        outbox__log(OUTBOX_LOG_INFO, CARS_SEARCH_GROUP, "duplicate", msg, "message_id", d->env.id,
                    "type", type, "car_id", id, NULL);
        goto out;
    }
    PGresult *r = PQexecPrepared(w->conn, APPLY_STMT, 10, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        snprintf(err, sizeof(err), "%s", PQresultErrorMessage(r));
        const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        int data_error = st && (!strncmp(st, "22", 2) || !strncmp(st, "23", 2));
        PQclear(r);
        rc = failed(w, "upsert", err, d->env.id);
        if (data_error && rc != OUTBOX_ERR_DB) {
            rc = reject(d, err); /* the data will never fit */
        }
        goto out;
    }
    int applied = !PQgetisnull(r, 0, 0);
    char stored[24];
    snprintf(stored, sizeof(stored), "%s", PQgetvalue(r, 0, 1));
    PQclear(r);
    PGresult *cr = PQexec(w->conn, "COMMIT");
    int ok = PQresultStatus(cr) == PGRES_COMMAND_OK;
    snprintf(err, sizeof(err), "%s", ok ? "" : PQresultErrorMessage(cr));
    PQclear(cr);
    if (!ok) {
        rc = failed(w, "commit", err, d->env.id);
        goto out;
    }
    if (applied)
        outbox__log(OUTBOX_LOG_DEBUG, CARS_SEARCH_GROUP, "indexed",
                    del ? "car removed from the search index (tombstone kept)" : "car indexed",
                    "car_id", id, "version", vs, "type", type, "message_id", d->env.id, NULL);
    else
        outbox__log(OUTBOX_LOG_INFO, CARS_SEARCH_GROUP, "stale_event",
                    "older event ignored: the index already has a newer version of this car",
                    "car_id", id, "event_version", vs, "stored_version", stored, "type", type,
                    "message_id", d->env.id, NULL);
out:
    json_decref(data);
    return rc;
}

/*
 * Inbox records older than inbox_retention are deleted now and then (every
 * maintenance_interval) by the first thread: the relay purges the primary
 * database's inbox, nobody else this one. Safe: a duplicate arriving after
 * its record is gone is still stale for the version gate. (The kit has no
 * inbox purge call yet; this is the library's outbox_inbox table.)
 */
static void purge_inbox(worker_t *w, int64_t *next_ms)
{
    int64_t now = outbox_kit_now_ms(), keep = outbox_kit_conf_ms(w->conf, "inbox_retention");
    if (!w->purger || keep <= 0 || now < *next_ms)
        return;
    *next_ms = now + outbox_kit_conf_ms(w->conf, "maintenance_interval");
    char ms[24];
    snprintf(ms, sizeof(ms), "%lld", (long long)keep);
    const char *p[2] = {ms, CARS_SEARCH_GROUP};
    PGresult *r = PQexecParams(w->conn,
                               "DELETE FROM outbox_inbox WHERE consumer = $2 AND processed_at <"
                               " now() - $1::bigint * interval '1 millisecond'",
                               2, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        outbox__log(OUTBOX_LOG_WARN, CARS_SEARCH_GROUP, "purge_failed", PQresultErrorMessage(r),
                    NULL);
    else if (atoll(PQcmdTuples(r)) > 0)
        outbox__log(OUTBOX_LOG_INFO, CARS_SEARCH_GROUP, "inbox_purged",
                    "purged expired inbox records", "count", PQcmdTuples(r), NULL);
    PQclear(r);
}

static void *run(void *arg)
{
    worker_t *w = arg;
    const char *topics[1] = {CARS_TOPIC};
    outbox_kit_thread_name("c-", "projection");
    char err[512];
    outbox_consumer_t *c = outbox_consumer_new(w->source, CARS_SEARCH_GROUP, w->instance, topics, 1,
                                               w->conf, err, sizeof(err));
    if (!c) {
        outbox__log(OUTBOX_LOG_ERROR, CARS_SEARCH_GROUP, "consumer_failed", err, NULL);
        return NULL;
    }
    int64_t next_purge = 0;
    while (!*w->stop) {
        if (session(w) != 0) {
            outbox_kit_sleep_ms(1000, w->stop);
            continue;
        }
        purge_inbox(w, &next_purge);
        if (outbox_consumer_poll(c, 500, on_event, w) == OUTBOX_ERR_BROKER)
            outbox_kit_sleep_ms(200, w->stop);
    }
    outbox_consumer_destroy(c);
    PQfinish(w->conn);
    w->conn = NULL;
    outbox__log(OUTBOX_LOG_INFO, CARS_SEARCH_GROUP, "consumer_stopped", "consumer stopped",
                "instance", w->instance, NULL);
    return NULL;
}

cars_projection_t *cars_projection_start(const outbox_conf_t *conf, const char *search_url,
                                         char *errstr, size_t errstr_size)
{
    cars_projection_t *p = calloc(1, sizeof(*p));
    int per = (int)outbox_kit_conf_int(conf, "consumer_threads");
    if (p) {
        p->conf = outbox_conf_dup(conf);
        p->search_url = strdup(search_url);
        p->workers = calloc((size_t)per, sizeof(worker_t));
    }
    if (!p || !p->conf || !p->search_url || !p->workers) {
        snprintf(errstr, errstr_size, "out of memory");
        cars_projection_stop(p, 0);
        return NULL;
    }
    char source[1024];
    const char *src = outbox_kit_conf_str(conf, "consumer_source");
    const char *sink = outbox_kit_conf_str(conf, "sink");
    if (src[0])
        snprintf(source, sizeof(source), "%s", src);
    else if (sink[0])
        snprintf(source, sizeof(source), "%s", sink);
    else
        snprintf(source, sizeof(source), "redis://%s", outbox_kit_conf_str(conf, "redis_addr"));
    char host[128] = "host";
    gethostname(host, sizeof(host) - 1);
    for (int k = 0; k < per; k++) {
        worker_t *w = &p->workers[p->n];
        w->conf = p->conf;
        w->search_url = p->search_url;
        w->stop = &p->stop;
        w->purger = k == 0;
        snprintf(w->source, sizeof(w->source), "%s", source);
        snprintf(w->instance, sizeof(w->instance), "%s-%s-%d-%d", CARS_SEARCH_GROUP, host,
                 (int)getpid(), k + 1);
        if (pthread_create(&w->thread, NULL, run, w) != 0) {
            snprintf(errstr, errstr_size, "cannot start the %s consumer thread", CARS_SEARCH_GROUP);
            cars_projection_stop(p, 0);
            return NULL;
        }
        w->started = 1;
        p->n++;
    }
    char n[16];
    snprintf(n, sizeof(n), "%d", per);
    outbox__log(OUTBOX_LOG_INFO, CARS_SEARCH_GROUP, "consumer_started",
                "Search projection consumer started", "group", CARS_SEARCH_GROUP, "threads", n,
                NULL);
    return p;
}

int cars_projection_stop(cars_projection_t *p, int64_t timeout_ms)
{
    if (!p)
        return 0;
    p->stop = 1;
    int64_t deadline = timeout_ms > 0 ? outbox_kit_now_ms() + timeout_ms : 0;
    for (int i = 0; i < p->n; i++) {
        worker_t *w = &p->workers[i];
        if (!w->started)
            continue;
        if (outbox_kit_join_consumer(w->thread, deadline, CARS_SEARCH_GROUP, w->instance) != 0)
            return -1;
        w->started = 0;
    }
    free(p->workers);
    outbox_conf_destroy(p->conf);
    free(p->search_url);
    free(p);
    return 0;
}
