/* A Kafka consumer process for tests/kafka/test_consumer_inbox.c: reads
 * KT_TOPIC as member KT_NAME of group KT_GROUP at KT_BOOTSTRAPS and applies
 * each message's effect once, with the inbox, in the database KT_DB:
 *
 *   INSERT INTO deliveries      -- autocommit: counts every delivery
 *   BEGIN; outbox_inbox_record(); if new: INSERT INTO effects; COMMIT;
 *
 * With KT_FAIL_EVERY=n, every n-th delivery returns an error after its
 * transaction committed (as if the process died before acknowledging), so
 * Kafka delivers it again. Other settings come from the environment
 * (OUTBOX_KAFKA_PROPERTIES, ...). Runs until SIGTERM. Exit 0 = fine. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outbox/consumer.h"
#include "outbox/outbox.h"

static volatile sig_atomic_t g_stop;
static PGconn *g_db;
static long g_count, g_fail_every;
static const char *g_topic_type;

static void on_term(int sig)
{
    (void)sig;
    g_stop = 1;
}

static int exec_ok(PGresult *r)
{
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        fprintf(stderr, "helper: SQL failed: %s", PQerrorMessage(g_db));
    PQclear(r);
    return ok;
}

static outbox_err_t handler(const outbox_delivery_t *d, void *opaque)
{
    (void)opaque;
    const char *p0[1] = {d->env.id};
    if (!exec_ok(PQexecParams(g_db, "INSERT INTO deliveries (id) VALUES ($1)", 1, NULL, p0, NULL,
                              NULL, 0)))
        return OUTBOX_ERR_DB;
    /* The binary-mode attributes come back as a full envelope. */
    const char *seqp = d->env.data ? strstr(d->env.data, "\"seq\":") : NULL;
    if (!seqp || !d->env.subject || !d->env.partitionkey || !d->env.time || !d->env.traceparent ||
        strcmp(d->env.type, g_topic_type) || strcmp(d->env.subject, d->env.partitionkey)) {
        fprintf(stderr, "helper: incomplete envelope for %s (type %s subject %s data %s)\n",
                d->env.id, d->env.type ? d->env.type : "-", d->env.subject ? d->env.subject : "-",
                d->env.data ? d->env.data : "-");
        exit(3);
    }
    char seq[16];
    snprintf(seq, sizeof(seq), "%d", atoi(seqp + 6));
    char err[256];
    int is_new = 0;
    if (!exec_ok(PQexec(g_db, "BEGIN")))
        return OUTBOX_ERR_DB;
    if (outbox_inbox_record(g_db, "ledger", d->env.id, &is_new, err, sizeof(err)) != OUTBOX_OK) {
        fprintf(stderr, "helper: inbox: %s\n", err);
        exec_ok(PQexec(g_db, "ROLLBACK"));
        return OUTBOX_ERR_DB;
    }
    if (is_new) {
        const char *p[3] = {d->env.id, d->env.subject, seq};
        if (!exec_ok(PQexecParams(g_db, "INSERT INTO effects (id, key, seq) VALUES ($1, $2, $3)", 3,
                                  NULL, p, NULL, NULL, 0))) {
            exec_ok(PQexec(g_db, "ROLLBACK"));
            return OUTBOX_ERR_DB;
        }
    }
    if (!exec_ok(PQexec(g_db, "COMMIT")))
        return OUTBOX_ERR_DB;
    if (g_fail_every > 0 && ++g_count % g_fail_every == 0)
        return OUTBOX_ERR_BROKER; /* committed, but "crashed" before the ack */
    return OUTBOX_OK;
}

int main(void)
{
    const char *boot = getenv("KT_BOOTSTRAPS"), *db = getenv("KT_DB"), *topic = getenv("KT_TOPIC");
    const char *group = getenv("KT_GROUP"), *name = getenv("KT_NAME");
    g_topic_type = getenv("KT_TYPE") ? getenv("KT_TYPE") : "";
    g_fail_every = getenv("KT_FAIL_EVERY") ? atol(getenv("KT_FAIL_EVERY")) : 0;
    if (!boot || !db || !topic || !group || !name) {
        fprintf(stderr,
                "helper: KT_BOOTSTRAPS, KT_DB, KT_TOPIC, KT_GROUP and KT_NAME are required\n");
        return 2;
    }
    signal(SIGTERM, on_term);
    g_db = PQconnectdb(db);
    if (PQstatus(g_db) != CONNECTION_OK) {
        fprintf(stderr, "helper: %s", PQerrorMessage(g_db));
        return 2;
    }
    char err[512], url[512];
    outbox_conf_t *conf = outbox_conf_new();
    if (outbox_conf_from_env(conf, err, sizeof(err)) != OUTBOX_OK) {
        fprintf(stderr, "helper: %s\n", err);
        return 2;
    }
    snprintf(url, sizeof(url), "kafka://%s", boot);
    const char *topics[1] = {topic};
    outbox_consumer_t *c = outbox_consumer_new(url, group, name, topics, 1, conf, err, sizeof(err));
    if (!c) {
        fprintf(stderr, "helper: consumer: %s\n", err);
        return 2;
    }
    outbox_conf_destroy(conf);
    while (!g_stop)
        if (outbox_consumer_poll(c, 200, handler, NULL) != OUTBOX_OK)
            fprintf(stderr, "helper: poll: %s\n", outbox_consumer_errstr(c));
    outbox_consumer_destroy(c);
    PQfinish(g_db);
    return 0;
}
