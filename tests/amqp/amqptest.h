/* Helpers for the AMQP (RabbitMQ) tests: a throwaway RabbitMQ node per test
 * through scripts/rabbitmq.sh (stopped at exit, or by its watcher if the
 * test is killed), a raw rabbitmq-c client to read queues back with their
 * properties, and a relay/DB harness.
 * Header-only (static) so that each test stays one source file. */
#ifndef OUTBOX_TESTS_AMQPTEST_H
#define OUTBOX_TESTS_AMQPTEST_H

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "outbox/consumer.h"
#include "outbox/envelope.h"
#include "outbox/outbox.h"
#include "testutil.h"

#define TA_SCRIPT OUTBOX_SOURCE_DIR "/scripts/rabbitmq.sh"

typedef struct ta_server_s {
    char dir[256];
    int port;
    char url[128];
    int tls_port;      /* with ta_start_opts(1) */
    char tls_url[128]; /* amqps://guest:guest@localhost:PORT/ */
    char ca_file[320]; /* the CA to verify it with */
} ta_server_t;

static ta_server_t ta_server;

static __attribute__((unused)) void ta_run(const char *sub)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "%s %s '%s' </dev/null >/dev/null 2>&1", TA_SCRIPT, sub,
             ta_server.dir);
    int rc = system(cmd);
    CHECK(rc == 0, "rabbitmq.sh %s failed (%d)", sub, rc);
}

static __attribute__((unused)) void ta_atexit(void)
{
    if (ta_server.dir[0]) {
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "%s stop '%s' </dev/null >/dev/null 2>&1", TA_SCRIPT,
                 ta_server.dir);
        if (system(cmd) != 0)
            fprintf(stderr, "warning: rabbitmq.sh stop failed\n");
        ta_server.dir[0] = '\0';
    }
}

/* Starts this test's RabbitMQ node (skips when rabbitmq-server is missing),
 * with a TLS listener too when tls. Returns the amqp:// URL. Prints the
 * start time. */
static __attribute__((unused)) const char *ta_start_opts(int tls)
{
    if (access("/usr/lib/rabbitmq/bin/rabbitmq-server", X_OK) != 0)
        tu_skip("rabbitmq-server is not installed (apt-get install rabbitmq-server)");
    if (access("/usr/bin/python3", X_OK) != 0)
        tu_skip("python3 is needed by scripts/rabbitmq.sh");
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "RABBITMQ_OWNER_PID=%d RABBITMQ_TLS=%s %s start </dev/null",
             (int)getpid(), tls ? "1" : "", TA_SCRIPT);
    long long t0 = tu_now_ms();
    FILE *p = popen(cmd, "r");
    CHECK(p, "popen rabbitmq.sh");
    char line[512];
    while (fgets(line, sizeof(line), p)) {
        char *v;
        if ((v = strstr(line, "RABBITMQ_DIR='"))) {
            v += 14;
            snprintf(ta_server.dir, sizeof(ta_server.dir), "%.*s", (int)strcspn(v, "'"), v);
        } else if ((v = strstr(line, "OUTBOX_TEST_AMQP_PORT='"))) {
            ta_server.port = atoi(v + 23);
        } else if ((v = strstr(line, "OUTBOX_TEST_AMQPS_PORT='"))) {
            ta_server.tls_port = atoi(v + 24);
        } else if ((v = strstr(line, "OUTBOX_TEST_AMQP_CA='"))) {
            v += 21;
            snprintf(ta_server.ca_file, sizeof(ta_server.ca_file), "%.*s", (int)strcspn(v, "'"), v);
        }
    }
    int rc = pclose(p);
    CHECK(rc == 0 && ta_server.dir[0] && ta_server.port > 0, "rabbitmq.sh start failed (%d)", rc);
    atexit(ta_atexit);
    snprintf(ta_server.url, sizeof(ta_server.url), "amqp://guest:guest@127.0.0.1:%d/",
             ta_server.port);
    if (tls) {
        CHECK(ta_server.tls_port > 0 && ta_server.ca_file[0],
              "rabbitmq.sh did not start a TLS listener");
        snprintf(ta_server.tls_url, sizeof(ta_server.tls_url), "amqps://guest:guest@localhost:%d/",
                 ta_server.tls_port);
    }
    printf("rabbitmq: started on port %d in %lld ms\n", ta_server.port, tu_now_ms() - t0);
    fflush(stdout);
    return ta_server.url;
}

static __attribute__((unused)) const char *ta_start(void)
{
    return ta_start_opts(0);
}

static __attribute__((unused)) void ta_halt(void)
{
    ta_run("halt");
} /* graceful stop, data kept */
static __attribute__((unused)) void ta_kill(void)
{
    ta_run("kill");
} /* SIGKILL, data kept */
static __attribute__((unused)) void ta_restart(void)
{
    long long t0 = tu_now_ms();
    ta_run("restart");
    printf("rabbitmq: restarted in %lld ms\n", tu_now_ms() - t0);
    fflush(stdout);
}

/* ---- raw rabbitmq-c client ---------------------------------------------- */

static __attribute__((unused)) void ta_die_on(amqp_rpc_reply_t r, const char *what)
{
    CHECK(r.reply_type == AMQP_RESPONSE_NORMAL, "%s failed (reply type %d, library error %s)", what,
          (int)r.reply_type, amqp_error_string2(r.library_error));
}

static __attribute__((unused)) amqp_connection_state_t ta_raw_connect(void)
{
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    CHECK(s && amqp_socket_open(s, "127.0.0.1", ta_server.port) == AMQP_STATUS_OK, "raw connect");
    ta_die_on(amqp_login(c, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest"),
              "raw login");
    amqp_channel_open(c, 1);
    ta_die_on(amqp_get_rpc_reply(c), "raw channel.open");
    return c;
}

/* Declares a durable queue bound to a durable topic exchange with "#"
 * (the same declarations the sink and the consumer make). */
static __attribute__((unused)) void ta_raw_queue(amqp_connection_state_t c, const char *queue,
                                                 const char *exchange)
{
    amqp_exchange_declare(c, 1, amqp_cstring_bytes(exchange), amqp_cstring_bytes("topic"), 0, 1, 0,
                          0, amqp_empty_table);
    ta_die_on(amqp_get_rpc_reply(c), "raw exchange.declare");
    amqp_queue_declare(c, 1, amqp_cstring_bytes(queue), 0, 1, 0, 0, amqp_empty_table);
    ta_die_on(amqp_get_rpc_reply(c), "raw queue.declare");
    amqp_queue_bind(c, 1, amqp_cstring_bytes(queue), amqp_cstring_bytes(exchange),
                    amqp_cstring_bytes("#"), amqp_empty_table);
    ta_die_on(amqp_get_rpc_reply(c), "raw queue.bind");
}

typedef void (*ta_msg_fn)(const amqp_envelope_t *env, void *opaque);

/* Consumes queue (auto-ack) until idle_ms pass without a message; returns
 * the count. */
static __attribute__((unused)) long ta_raw_drain(amqp_connection_state_t c, const char *queue,
                                                 int idle_ms, ta_msg_fn fn, void *opaque)
{
    amqp_basic_qos(c, 1, 0, 500, 0);
    ta_die_on(amqp_get_rpc_reply(c), "raw basic.qos");
    amqp_basic_consume(c, 1, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 1, 0,
                       amqp_empty_table);
    ta_die_on(amqp_get_rpc_reply(c), "raw basic.consume");
    long n = 0;
    for (;;) {
        amqp_envelope_t env;
        struct timeval tv = {idle_ms / 1000, (idle_ms % 1000) * 1000};
        amqp_maybe_release_buffers(c);
        amqp_rpc_reply_t r = amqp_consume_message(c, &env, &tv, 0);
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_TIMEOUT)
            break;
        ta_die_on(r, "raw consume");
        fn(&env, opaque);
        amqp_destroy_envelope(&env);
        n++;
    }
    return n;
}

/* Value of string header name in t, copied into out ("" if absent). */
static __attribute__((unused)) void ta_header(const amqp_table_t *t, const char *name, char *out,
                                              size_t size)
{
    out[0] = '\0';
    for (int i = 0; i < t->num_entries; i++) {
        const amqp_table_entry_t *e = &t->entries[i];
        if (e->key.len == strlen(name) && !memcmp(e->key.bytes, name, e->key.len) &&
            (e->value.kind == AMQP_FIELD_KIND_UTF8 || e->value.kind == AMQP_FIELD_KIND_BYTES))
            snprintf(out, size, "%.*s", (int)e->value.value.bytes.len,
                     (const char *)e->value.value.bytes.bytes);
    }
}

/* ---- DB and relay --------------------------------------------------------- */

static __attribute__((unused)) const char *ta_setup_db(const char *name, PGconn **out)
{
    const char *ci = tu_fresh_db(name);
    PGconn *c = tu_connect(ci);
    char err[512];
    CHECK(outbox_migrate(c, NULL, err, sizeof(err)) == OUTBOX_OK, "migrate: %s", err);
    *out = c;
    return ci;
}

static __attribute__((unused)) void ta_conf_set(outbox_conf_t *conf, const char *k, const char *v)
{
    char err[512];
    CHECK(outbox_conf_set(conf, k, v, err, sizeof(err)) == OUTBOX_OK, "%s=%s: %s", k, v, err);
}

static __attribute__((unused)) outbox_conf_t *ta_relay_conf(const char *conninfo, const char *url,
                                                            int workers)
{
    outbox_conf_t *conf = outbox_conf_new();
    char w[16];
    snprintf(w, sizeof(w), "%d", workers);
    ta_conf_set(conf, "database_url", conninfo);
    ta_conf_set(conf, "sink", url);
    ta_conf_set(conf, "workers", w);
    ta_conf_set(conf, "metrics_addr", "off");
    ta_conf_set(conf, "log_level", getenv("TA_LOG_LEVEL") ? getenv("TA_LOG_LEVEL") : "warn");
    ta_conf_set(conf, "poll_interval", "100ms");
    ta_conf_set(conf, "publish_timeout", "5s");
    return conf;
}

static __attribute__((unused)) outbox_relay_t *ta_relay_start(outbox_conf_t *conf)
{
    char err[512];
    outbox_relay_t *r = outbox_relay_new(conf, err, sizeof(err));
    CHECK(r, "relay_new: %s", err);
    CHECK(outbox_relay_start(r, err, sizeof(err)) == OUTBOX_OK, "relay_start: %s", err);
    return r;
}

/* Enqueues events ev_first..ev_first+n-1 on topic in transactions of per_tx;
 * event i has key "k<i % nkeys>", type "TestEvent" and payload {"seq":i}. */
static __attribute__((unused)) void ta_enqueue(PGconn *c, const char *topic, int ev_first, int n,
                                               int nkeys, int per_tx,
                                               char (*ids)[OUTBOX_UUID_STRLEN + 1])
{
    char err[512], key[32], payload[64];
    for (int j = 0; j < n; j++) {
        int i = ev_first + j;
        if (j % per_tx == 0)
            PQclear(tu_exec(c, "BEGIN"));
        snprintf(key, sizeof(key), "k%d", i % nkeys);
        snprintf(payload, sizeof(payload), "{\"seq\":%d}", i);
        outbox_event_t ev = {.topic = topic,
                             .type = "TestEvent",
                             .key = key,
                             .payload = payload,
                             .traceparent =
                                 "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                             .headers = "{\"tenant\":\"acme\"}"};
        CHECK(outbox_enqueue(c, &ev, ids ? ids[i] : NULL, err, sizeof(err)) == OUTBOX_OK,
              "enqueue: %s", err);
        if (j % per_tx == per_tx - 1 || j == n - 1)
            PQclear(tu_exec(c, "COMMIT"));
    }
}

static __attribute__((unused)) void ta_wait_drained(PGconn *c, int timeout_ms)
{
    long long end = tu_now_ms() + timeout_ms, left = -1;
    while (tu_now_ms() < end) {
        left = tu_query_ll(c, "SELECT count(*) FROM outbox");
        if (left == 0)
            return;
        tu_sleep_ms(50);
    }
    CHECK(0, "outbox not drained after %d ms: %lld events left", timeout_ms, left);
}

/* "seq" of a payload {"seq":N}. */
static __attribute__((unused)) int ta_seq(const char *data)
{
    const char *p = data ? strstr(data, "\"seq\":") : NULL;
    return p ? atoi(p + 6) : -1;
}

/* Per-event receive counts, indexed by seq. */
typedef struct ta_seen_s {
    int n;
    int *count;
    long total, dups, unknown;
} ta_seen_t;

static __attribute__((unused)) void ta_seen_init(ta_seen_t *s, int n)
{
    memset(s, 0, sizeof(*s));
    s->n = n;
    s->count = calloc((size_t)n, sizeof(int));
}

static __attribute__((unused)) void ta_seen_term(ta_seen_t *s)
{
    free(s->count);
    s->count = NULL;
}

static __attribute__((unused)) void ta_seen_add(ta_seen_t *s, int seq)
{
    s->total++;
    if (seq < 0 || seq >= s->n) {
        s->unknown++;
        return;
    }
    if (s->count[seq]++)
        s->dups++;
}

static __attribute__((unused)) int ta_seen_missing(const ta_seen_t *s, int upto)
{
    int missing = 0;
    for (int i = 0; i < upto && i < s->n; i++)
        if (!s->count[i])
            missing++;
    return missing;
}

#endif
