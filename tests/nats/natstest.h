/* Helpers for the NATS JetStream tests: a throwaway nats-server per test
 * (JetStream on, store in a temporary directory, loopback only), a nats.c
 * client to read the stream back, and a relay/DB harness.
 * Header-only (static) so that each test stays one source file. */
#ifndef OUTBOX_TESTS_NATSTEST_H
#define OUTBOX_TESTS_NATSTEST_H

#include <errno.h>
#include <nats/nats.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "outbox/outbox.h"
#include "testutil.h"

typedef struct tn_server_s {
    pid_t pid;
    int port;
    char dir[128]; /* -sd store directory */
    char log[160];
    char url[64];
} tn_server_t;

/* Skips the test when nats-server is not installed. */
static __attribute__((unused)) void tn_require(void)
{
    const char *p = getenv("PATH");
    if (!p)
        p = "/usr/bin:/bin";
    while (*p) {
        const char *colon = strchr(p, ':');
        size_t len = colon ? (size_t)(colon - p) : strlen(p);
        char f[4200];
        snprintf(f, sizeof(f), "%.*s/nats-server", (int)len, p);
        if (len && access(f, X_OK) == 0)
            return;
        p += len + (colon ? 1 : 0);
    }
    tu_skip("nats-server is not installed (apt-get install nats-server)");
}

/* Waits until JetStream answers on s (up to timeout_ms). 0 = ready. */
static __attribute__((unused)) int tn_wait_ready(tn_server_t *s, int timeout_ms)
{
    long long end = tu_now_ms() + timeout_ms;
    while (tu_now_ms() < end) {
        natsConnection *nc = NULL;
        natsOptions *o = NULL;
        natsOptions_Create(&o);
        natsOptions_SetURL(o, s->url);
        natsOptions_SetTimeout(o, 500);
        natsOptions_SetAllowReconnect(o, false);
        natsStatus st = natsConnection_Connect(&nc, o);
        natsOptions_Destroy(o);
        if (st == NATS_OK) {
            jsCtx *js = NULL;
            jsAccountInfo *ai = NULL;
            natsConnection_JetStream(&js, nc, NULL);
            st = js_GetAccountInfo(&ai, js, NULL, NULL);
            jsAccountInfo_Destroy(ai);
            jsCtx_Destroy(js);
            natsConnection_Destroy(nc);
            if (st == NATS_OK)
                return 0;
        } else {
            natsConnection_Destroy(nc);
        }
        tu_sleep_ms(50);
    }
    return -1;
}

/* Servers still running and their stores, killed and removed at exit, so
 * a failing CHECK (exit 1) or a skip leaves nothing behind. */
static __attribute__((unused)) pid_t tn_running[8];
static __attribute__((unused)) char tn_dirs[8][128];

static __attribute__((unused)) void tn_rm_store(const char *dir)
{
    if (dir[0] && !strncmp(dir, "/tmp/outbox-nats.", 17) && !strchr(dir, '\'')) {
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s.log' '%s.relay.log'", dir, dir, dir);
        (void)!system(cmd);
    }
}

static __attribute__((unused)) void tn_at_exit(void)
{
    for (int i = 0; i < 8; i++) {
        if (tn_running[i] > 0) {
            kill(tn_running[i], SIGKILL);
            tu_wait(tn_running[i], 5000);
            tn_running[i] = 0;
        }
        tn_rm_store(tn_dirs[i]);
        tn_dirs[i][0] = '\0';
    }
}

/* Registers (add=1) or forgets (add=0) a running server. */
static __attribute__((unused)) void tn_track(pid_t pid, const char *dir, int add)
{
    static int registered;
    if (!registered++)
        atexit(tn_at_exit);
    for (int i = 0; i < 8; i++)
        if (add ? tn_running[i] == 0 : tn_running[i] == pid) {
            tn_running[i] = add ? pid : 0;
            snprintf(tn_dirs[i], sizeof(tn_dirs[i]), "%s", add ? dir : "");
            return;
        }
}

/* Starts nats-server -js on s->port (a free one when 0) with store s->dir
 * (a new temporary directory when empty). Same port and dir = a restart. */
static __attribute__((unused)) void tn_start(tn_server_t *s)
{
    tn_require();
    if (!s->port)
        s->port = tu_free_port();
    if (!s->dir[0]) {
        snprintf(s->dir, sizeof(s->dir), "/tmp/outbox-nats.XXXXXX");
        CHECK(mkdtemp(s->dir), "mkdtemp: %s", strerror(errno));
        snprintf(s->log, sizeof(s->log), "%s.log", s->dir);
    }
    snprintf(s->url, sizeof(s->url), "nats://127.0.0.1:%d", s->port);
    char port[16];
    snprintf(port, sizeof(port), "%d", s->port);
    char *argv[] = {"nats-server", "-js", "-a", "127.0.0.1", "-p", port, "-sd", s->dir, NULL};
    s->pid = tu_spawn(argv, NULL, s->log);
    tn_track(s->pid, s->dir, 1);
    CHECK(tn_wait_ready(s, 15000) == 0, "nats-server did not start on port %d (log %s)", s->port,
          s->log);
}

/* Kills the server with sig (SIGKILL: a crash) and reaps it. */
static __attribute__((unused)) void tn_kill(tn_server_t *s, int sig)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, sig);
    if (tu_wait(s->pid, 10000) == -1) {
        kill(s->pid, SIGKILL);
        tu_wait(s->pid, 5000);
    }
    tn_track(s->pid, NULL, 0);
    s->pid = 0;
}

/* Stops the server and removes its store. */
static void tn_cleanup(tn_server_t *s)
{
    tn_kill(s, SIGTERM);
    tn_rm_store(s->dir);
}

/* A plain nats.c client (the "real client" reading the stream back). */
static __attribute__((unused)) natsConnection *tn_connect(const tn_server_t *s, jsCtx **js)
{
    natsConnection *nc = NULL;
    natsStatus st = natsConnection_ConnectTo(&nc, s->url);
    CHECK(st == NATS_OK, "connect %s: %s", s->url, natsStatus_GetText(st));
    st = natsConnection_JetStream(js, nc, NULL);
    CHECK(st == NATS_OK, "JetStream: %s", natsStatus_GetText(st));
    return nc;
}

/* Number of messages in stream, or -1 if it does not exist. */
static __attribute__((unused)) long long tn_stream_msgs(jsCtx *js, const char *stream)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus st = js_GetStreamInfo(&si, js, stream, NULL, &jerr);
    if (st != NATS_OK)
        return -1;
    long long n = (long long)si->State.Msgs;
    jsStreamInfo_Destroy(si);
    return n;
}

/* A fresh database with the outbox schema. */
static __attribute__((unused)) PGconn *tn_db(const char *name, const char **conninfo)
{
    *conninfo = tu_fresh_db(name);
    PGconn *c = tu_connect(*conninfo);
    char err[512];
    CHECK(outbox_migrate(c, NULL, err, sizeof(err)) == OUTBOX_OK, "migrate: %s", err);
    return c;
}

/* Enqueues one event in its own transaction. id may be NULL (generated);
 * id_out (37 bytes) may be NULL. */
static __attribute__((unused)) void tn_enqueue(PGconn *c, const char *topic, const char *type,
                                               const char *key, const char *payload, const char *id,
                                               const char *traceparent, const char *headers,
                                               char *id_out)
{
    PQclear(tu_exec(c, "BEGIN"));
    outbox_event_t ev = {.id = id,
                         .topic = topic,
                         .type = type,
                         .key = key,
                         .payload = payload,
                         .traceparent = traceparent,
                         .headers = headers};
    char err[512];
    outbox_err_t e = outbox_enqueue(c, &ev, id_out, err, sizeof(err));
    CHECK(e == OUTBOX_OK, "enqueue: %s", err);
    PQclear(tu_exec(c, "COMMIT"));
}

/* Starts a relay on db publishing to sink_url; extra is a NULL-terminated
 * list of name/value pairs overriding the test defaults. */
static __attribute__((unused)) outbox_relay_t *tn_relay(const char *conninfo, const char *sink_url,
                                                        const char *const *extra)
{
    outbox_conf_t *conf = outbox_conf_new();
    char err[512];
    const char *defaults[] = {"database_url",
                              conninfo,
                              "sink",
                              sink_url,
                              "workers",
                              "2",
                              "metrics_addr",
                              "off",
                              "poll_interval",
                              "100ms",
                              "backoff_base",
                              "50ms",
                              "backoff_max",
                              "500ms",
                              "rebalance_interval",
                              "200ms",
                              "publish_timeout",
                              "3s",
                              "log_level",
                              "warn",
                              NULL};
    for (int i = 0; defaults[i]; i += 2)
        CHECK(outbox_conf_set(conf, defaults[i], defaults[i + 1], err, sizeof(err)) == OUTBOX_OK,
              "conf %s: %s", defaults[i], err);
    for (int i = 0; extra && extra[i]; i += 2)
        CHECK(outbox_conf_set(conf, extra[i], extra[i + 1], err, sizeof(err)) == OUTBOX_OK,
              "conf %s: %s", extra[i], err);
    outbox_relay_t *r = outbox_relay_new(conf, err, sizeof(err));
    CHECK(r, "relay_new: %s", err);
    CHECK(outbox_relay_start(r, err, sizeof(err)) == OUTBOX_OK, "relay_start: %s", err);
    return r;
}

/* Waits until the outbox table is empty (everything delivered). */
static __attribute__((unused)) int tn_wait_drained(PGconn *c, int timeout_ms)
{
    long long end = tu_now_ms() + timeout_ms;
    while (tu_now_ms() < end) {
        if (tu_query_ll(c, "SELECT count(*) FROM outbox") == 0)
            return 0;
        tu_sleep_ms(50);
    }
    return -1;
}

/* Header value of m or "" when absent. */
static __attribute__((unused)) const char *tn_header(natsMsg *m, const char *key)
{
    const char *v = NULL;
    return natsMsgHeader_Get(m, key, &v) == NATS_OK && v ? v : "";
}

#endif
