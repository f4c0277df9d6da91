/* Helpers for tests that run outbox-relay as child processes. */
#ifndef OUTBOX_TEST_PROC_COMMON_H
#define OUTBOX_TEST_PROC_COMMON_H

#include <jansson.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "relay_common.h"

/* Spawns build/bin/outbox-relay with DATABASE_URL, OUTBOX_SINK and the
 * given extra "K=V" entries (NULL-terminated, up to 16). */
static __attribute__((unused)) pid_t spawn_relay(const char *conninfo, const char *sink,
                                                 char *const extra[], const char *log)
{
    static char db[8][1200], sk[8][300];
    static int slot;
    int s = slot++ % 8;
    snprintf(db[s], sizeof(db[s]), "DATABASE_URL=%s", conninfo);
    snprintf(sk[s], sizeof(sk[s]), "OUTBOX_SINK=%s", sink);
    char *env[24];
    int n = 0;
    env[n++] = db[s];
    env[n++] = sk[s];
    env[n++] = "OUTBOX_METRICS_ADDR=off";
    for (int i = 0; extra && extra[i] && n < 23; i++)
        env[n++] = extra[i];
    env[n] = NULL;
    char *argv[] = {(char *)tu_bin("outbox-relay"), NULL};
    return tu_spawn(argv, env, log);
}

/* Background producer: enqueues n events (key k<i % nkeys>, payload seq i)
 * on its own connection, one transaction per `per_tx`, optionally paced. */
typedef struct producer_s {
    const char *conninfo, *topic;
    int n, nkeys, per_tx, pause_ms; /* pause after each transaction */
    char (*ids)[OUTBOX_UUID_STRLEN + 1];
    _Atomic int done; /* set by the producer thread */
    pthread_t thread;
} producer_t;

static void *producer_main(void *arg)
{
    producer_t *p = arg;
    PGconn *c = tu_connect(p->conninfo);
    char err[512], key[32], payload[128];
    for (int i = 0; i < p->n; i++) {
        if (i % p->per_tx == 0)
            PQclear(tu_exec(c, "BEGIN"));
        snprintf(key, sizeof(key), "k%d", i % p->nkeys);
        snprintf(payload, sizeof(payload), "{\"seq\":%d,\"key\":\"%s\"}", i, key);
        outbox_event_t ev = {
            .topic = p->topic, .type = "TestEvent", .key = key, .payload = payload};
        CHECK(outbox_enqueue(c, &ev, p->ids[i], err, sizeof(err)) == OUTBOX_OK, "enqueue: %s", err);
        if (i % p->per_tx == p->per_tx - 1 || i == p->n - 1) {
            PQclear(tu_exec(c, "COMMIT"));
            if (p->pause_ms)
                tu_sleep_ms(p->pause_ms);
        }
    }
    PQfinish(c);
    p->done = 1;
    return NULL;
}

static __attribute__((unused)) void producer_start(producer_t *p)
{
    p->done = 0;
    CHECK(pthread_create(&p->thread, NULL, producer_main, p) == 0, "pthread_create");
}

/* ---- the relay's log: one JSON object per line ---- */

/* Counts the lines of the log file path whose "event" is event; with
 * first_line, the 1-based line number of the first one goes there (0 if
 * none). Lines that are not JSON objects (other output) are ignored. */
static __attribute__((unused)) int log_count(const char *path, const char *event, int *first_line)
{
    FILE *fp = fopen(path, "r");
    int n = 0, lineno = 0;
    if (first_line)
        *first_line = 0;
    if (!fp)
        return 0;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, fp) > 0) {
        lineno++;
        json_t *o = json_loads(line, JSON_DISABLE_EOF_CHECK, NULL);
        const char *ev = json_string_value(json_object_get(o, "event"));
        if (ev && !strcmp(ev, event)) {
            if (!n && first_line)
                *first_line = lineno;
            n++;
        }
        json_decref(o);
    }
    free(line);
    fclose(fp);
    return n;
}

/* Waits until the log shows event at least once; fails after timeout_ms. */
static __attribute__((unused)) void wait_log_event(const char *path, const char *event,
                                                   int timeout_ms)
{
    long long end = tu_now_ms() + timeout_ms;
    while (log_count(path, event, NULL) == 0) {
        CHECK(tu_now_ms() < end, "no \"%s\" line in %s after %d ms", event, path, timeout_ms);
        tu_sleep_ms(20);
    }
}

/* 1 while pid runs; a child that has exited is reaped (so check it once). */
static __attribute__((unused)) int proc_alive(pid_t pid)
{
    int st;
    return waitpid(pid, &st, WNOHANG) == 0;
}

#endif
