/*
 * The inbound broker adapter: consumer threads that turn received events
 * into use-case calls, each thread with its own broker consumer and its own
 * database session (a session-mode tx_pg_t):
 *
 *   accounts  topic "users",        UserCreated        -> tx_on_user_created
 *   ledger    topic "transactions", TransactionCreated -> tx_process
 *
 * The use case's verdict becomes the handler's answer to the library:
 * OUTBOX_OK (done: acknowledge), OUTBOX_ERR_REJECTED (can never succeed:
 * dead-letter), OUTBOX_ERR_DB (our database is unreachable: retry without
 * charging an attempt), OUTBOX_ERR_IO (failed this time: retry later).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "adapter/tx_adapter.h"
#include "outbox/consumer.h"
#include "usecase/tx_usecase.h"

typedef struct worker_s {
    const char *group; /* consumer group and inbox name */
    const char *topic;
    tx_msg_verdict_t (*fn)(const tx_store_t *store, const tx_msg_t *m);
    outbox_conf_t *conf;
    char url[1024];
    char instance[160];
    tx_pg_t pg;
    tx_store_t store;
    pthread_t thread;
    int started;
    _Atomic int *stop; /* set by another thread to stop this one */
} worker_t;

struct tx_consumers_s {
    _Atomic int stop;
    int nworkers;
    worker_t *workers;
};

static outbox_err_t on_message(const outbox_delivery_t *d, void *opaque)
{
    worker_t *w = opaque;
    tx_msg_t m = {.id = d->env.id,
                  .type = d->env.type ? d->env.type : "",
                  .subject = d->env.subject,
                  .data = d->env.data,
                  .traceparent = d->env.traceparent};
    switch (w->fn(&w->store, &m)) {
    case TX_MSG_DONE:
        return OUTBOX_OK;
    case TX_MSG_REJECT:
        return OUTBOX_ERR_REJECTED;
    case TX_MSG_DB_DOWN:
        return OUTBOX_ERR_DB;
    default:
        return OUTBOX_ERR_IO;
    }
}

static void *run(void *arg)
{
    worker_t *w = arg;
    const char *topics[1] = {w->topic};
    outbox_kit_thread_name("c-", w->group);
    char err[512];
    outbox_consumer_t *c =
        outbox_consumer_new(w->url, w->group, w->instance, topics, 1, w->conf, err, sizeof(err));
    if (!c) {
        outbox__log(OUTBOX_LOG_ERROR, w->group, "consumer_failed", err, NULL);
        return NULL;
    }
    while (!*w->stop) {
        /* A session first: no point taking messages the database cannot apply. */
        if (!w->pg.conn || PQstatus(w->pg.conn) != CONNECTION_OK) {
            PQfinish(w->pg.conn);
            w->pg.conn = outbox_kit_db_connect(w->pg.conninfo, w->pg.appname, err, sizeof(err));
            if (!w->pg.conn) {
                outbox__log(OUTBOX_LOG_ERROR, w->group, "db_down", err, NULL);
                outbox_kit_sleep_ms(1000, w->stop);
                continue;
            }
        }
        if (outbox_consumer_poll(c, 500, on_message, w) != OUTBOX_OK)
            outbox_kit_sleep_ms(200, w->stop); /* broker down: it reconnects */
    }
    outbox_consumer_destroy(c);
    tx_pg_close(&w->pg);
    outbox__log(OUTBOX_LOG_INFO, w->group, "consumer_stopped", "consumer stopped", NULL);
    return NULL;
}

tx_consumers_t *tx_consumers_start(const outbox_conf_t *conf, char *errstr, size_t errstr_size)
{
    tx_consumers_t *cs = calloc(1, sizeof(*cs));
    int per = (int)outbox_kit_conf_int(conf, "consumer_threads");
    if (cs)
        cs->workers = calloc((size_t)(2 * per), sizeof(worker_t));
    if (!cs || !cs->workers) {
        free(cs);
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    char url[1024];
    const char *src = outbox_kit_conf_str(conf, "consumer_source");
    const char *sink = outbox_kit_conf_str(conf, "sink");
    if (src[0])
        snprintf(url, sizeof(url), "%s", src);
    else if (sink[0])
        snprintf(url, sizeof(url), "%s", sink);
    else
        snprintf(url, sizeof(url), "redis://%s", outbox_kit_conf_str(conf, "redis_addr"));
    char host[128] = "host";
    gethostname(host, sizeof(host) - 1);
    static const struct {
        const char *group, *topic, *started;
        tx_msg_verdict_t (*fn)(const tx_store_t *, const tx_msg_t *);
    } defs[2] = {
        {"accounts", TX_USERS_TOPIC, "Accounts consumer started (UserCreated)", tx_on_user_created},
        {"ledger", TX_TOPIC, "Transaction processor started (TransactionCreated)", tx_process}};
    for (int i = 0; i < 2; i++) {
        for (int k = 0; k < per; k++) {
            worker_t *w = &cs->workers[cs->nworkers++];
            w->group = defs[i].group;
            w->topic = defs[i].topic;
            w->fn = defs[i].fn;
            w->stop = &cs->stop;
            w->conf = outbox_conf_dup(conf);
            snprintf(w->url, sizeof(w->url), "%s", url);
            snprintf(w->instance, sizeof(w->instance), "%s-%s-%d-%d", w->group, host, (int)getpid(),
                     k + 1);
            w->pg.conninfo = outbox_kit_conf_database_url(conf);
            w->pg.appname = w->instance;
            w->store = tx_pg_store(&w->pg);
            if (!w->conf || pthread_create(&w->thread, NULL, run, w) != 0) {
                snprintf(errstr, errstr_size, "cannot start the %s consumer", w->group);
                tx_consumers_stop(cs, 0);
                return NULL;
            }
            w->started = 1;
        }
        char n[16];
        snprintf(n, sizeof(n), "%d", per);
        outbox__log(OUTBOX_LOG_INFO, defs[i].group, "consumer_started", defs[i].started, "group",
                    defs[i].group, "topic", defs[i].topic, "threads", n, NULL);
    }
    return cs;
}

int tx_consumers_stop(tx_consumers_t *cs, int64_t timeout_ms)
{
    if (!cs)
        return 0;
    cs->stop = 1;
    int64_t deadline = timeout_ms > 0 ? outbox_kit_now_ms() + timeout_ms : 0;
    for (int i = 0; i < cs->nworkers; i++) {
        worker_t *w = &cs->workers[i];
        if (!w->started)
            continue;
        if (outbox_kit_join_consumer(w->thread, deadline, w->group, w->instance) != 0)
            return -1;
        w->started = 0;
    }
    for (int i = 0; i < cs->nworkers; i++)
        outbox_conf_destroy(cs->workers[i].conf);
    free(cs->workers);
    free(cs);
    return 0;
}
