/* Helpers shared by the sink tests (header-only, static): a database with
 * the schema, events enqueued in transactions, an embedded relay, a small
 * libmicrohttpd server on 127.0.0.1 and a growable byte buffer. */
#ifndef OUTBOX_TEST_SINK_TEST_H
#define OUTBOX_TEST_SINK_TEST_H

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <string.h>

#include "outbox/envelope.h"
#include "outbox/outbox.h"
#include "testutil.h"

#define ST_UNUSED __attribute__((unused))

/* Fresh database with the schema applied; returns its conninfo. */
static ST_UNUSED const char *st_setup_db(const char *name, PGconn **out)
{
    return tu_outbox_db(name, out);
}

/* Enqueues one event in its own transaction; returns its outbox seq. */
static ST_UNUSED long long st_enqueue(PGconn *c, const char *topic, const char *type,
                                      const char *key, const char *payload, const char *traceparent,
                                      char id_out[OUTBOX_UUID_STRLEN + 1])
{
    char err[512];
    PQclear(tu_exec(c, "BEGIN"));
    outbox_event_t ev = {.topic = topic,
                         .type = type,
                         .key = key,
                         .payload = payload,
                         .traceparent = traceparent,
                         .source = "/tests/sinks"};
    CHECK(outbox_enqueue(c, &ev, id_out, err, sizeof(err)) == OUTBOX_OK, "enqueue: %s", err);
    PQclear(tu_exec(c, "COMMIT"));
    const char *params[1] = {id_out};
    PGresult *r =
        PQexecParams(c, "SELECT seq FROM outbox WHERE id = $1", 1, NULL, params, NULL, NULL, 0);
    CHECK(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1, "seq of %s: %s", id_out,
          PQerrorMessage(c));
    long long seq = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return seq;
}

static ST_UNUSED void st_conf_set(outbox_conf_t *conf, const char *k, const char *v)
{
    tu_conf_set(conf, k, v);
}

/* A relay configuration for tests: fast polling and backoff, no metrics. */
static ST_UNUSED outbox_conf_t *st_relay_conf(const char *conninfo, const char *sink)
{
    outbox_conf_t *conf = outbox_conf_new();
    CHECK(conf, "outbox_conf_new");
    st_conf_set(conf, "database_url", conninfo);
    st_conf_set(conf, "sink", sink);
    st_conf_set(conf, "metrics_addr", "off");
    st_conf_set(conf, "log_level", "warn");
    st_conf_set(conf, "workers", "2");
    st_conf_set(conf, "batch_size", "10");
    st_conf_set(conf, "poll_interval", "50ms");
    st_conf_set(conf, "backoff_base", "50ms");
    st_conf_set(conf, "backoff_max", "5s");
    st_conf_set(conf, "publish_timeout", "2s");
    return conf;
}

/* Creates and starts a relay; the conf is freed with it. */
static ST_UNUSED outbox_relay_t *st_relay_start(outbox_conf_t *conf)
{
    return tu_relay_start(conf);
}

/* Waits until the outbox table is empty; fails the test after timeout_ms. */
static ST_UNUSED void st_wait_drained(PGconn *c, int timeout_ms)
{
    tu_wait_drained(c, timeout_ms);
}

/* ------------------------------------------------------------------------ */
/* Growable buffer                                                          */

typedef struct st_buf_s {
    char *p;
    size_t len, cap;
} st_buf_t;

static ST_UNUSED void st_buf_add(st_buf_t *b, const char *d, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = realloc(b->p, cap);
        CHECK(b->p, "out of memory");
        b->cap = cap;
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
    b->p[b->len] = '\0';
}

/* ------------------------------------------------------------------------ */
/* HTTP stand-in: libmicrohttpd, one thread per connection, 127.0.0.1.      */

/* Called once per request with the whole body (NUL-terminated). Fills
 * *status, the response body and optional extra header (name, value). */
typedef struct st_req_s {
    struct MHD_Connection *conn;
    const char *method, *url;
    const char *body;
    size_t body_len;
    int status;
    st_buf_t resp;
    const char *content_type;
    char hdr_name[64], hdr_value[128];
} st_req_t;

typedef void (*st_handler_fn)(st_req_t *req, void *arg);

typedef struct st_server_s {
    struct MHD_Daemon *d;
    int port;
    st_handler_fn fn;
    void *arg;
    int connections; /* TCP connections accepted so far (keep-alive checks) */
} st_server_t;

static enum MHD_Result st_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls)
{
    st_server_t *s = cls;
    st_buf_t *b = *con_cls;
    if (!b) {
        b = calloc(1, sizeof(*b));
        CHECK(b, "out of memory");
        st_buf_add(b, "", 0);
        *con_cls = b;
        return MHD_YES;
    }
    if (*upload_size) {
        st_buf_add(b, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    st_req_t req = {.conn = conn,
                    .method = method,
                    .url = url,
                    .body = b->p,
                    .body_len = b->len,
                    .status = 200,
                    .content_type = "application/json"};
    s->fn(&req, s->arg);
    if (!req.resp.p)
        st_buf_add(&req.resp, "", 0);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(req.resp.len, req.resp.p, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(resp, "Content-Type", req.content_type);
    if (req.hdr_name[0])
        MHD_add_response_header(resp, req.hdr_name, req.hdr_value);
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)req.status, resp);
    MHD_destroy_response(resp);
    free(req.resp.p);
    return ret;
}

static void st_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    st_buf_t *b = *con_cls;
    if (b) {
        free(b->p);
        free(b);
    }
    *con_cls = NULL;
}

static void st_notify_conn(void *cls, struct MHD_Connection *conn, void **socket_context,
                           enum MHD_ConnectionNotificationCode code)
{
    st_server_t *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED)
        __atomic_add_fetch(&s->connections, 1, __ATOMIC_SEQ_CST);
}

static ST_UNUSED int st_server_connections(st_server_t *s)
{
    return __atomic_load_n(&s->connections, __ATOMIC_SEQ_CST);
}

/* Starts the stand-in; with key_pem and cert_pem (PEM text) it speaks TLS. */
static ST_UNUSED void st_server_start_tls(st_server_t *s, st_handler_fn fn, void *arg,
                                          const char *key_pem, const char *cert_pem)
{
    s->fn = fn;
    s->arg = arg;
    unsigned flags =
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG;
    if (key_pem)
        flags |= MHD_USE_TLS;
    for (int tries = 0; tries < 20 && !s->d; tries++) {
        s->port = tu_free_port();
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (key_pem)
            s->d = MHD_start_daemon(flags, (uint16_t)s->port, NULL, NULL, st_access, s,
                                    MHD_OPTION_SOCK_ADDR, &a, MHD_OPTION_NOTIFY_COMPLETED,
                                    st_completed, NULL, MHD_OPTION_NOTIFY_CONNECTION,
                                    st_notify_conn, s, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
                                    MHD_OPTION_HTTPS_MEM_KEY, key_pem, MHD_OPTION_HTTPS_MEM_CERT,
                                    cert_pem, MHD_OPTION_END);
        else
            s->d = MHD_start_daemon(
                flags, (uint16_t)s->port, NULL, NULL, st_access, s, MHD_OPTION_SOCK_ADDR, &a,
                MHD_OPTION_NOTIFY_COMPLETED, st_completed, NULL, MHD_OPTION_NOTIFY_CONNECTION,
                st_notify_conn, s, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_END);
    }
    CHECK(s->d, "cannot start the HTTP%s stand-in on 127.0.0.1", key_pem ? "S" : "");
}

static ST_UNUSED void st_server_start(st_server_t *s, st_handler_fn fn, void *arg)
{
    st_server_start_tls(s, fn, arg, NULL, NULL);
}

static ST_UNUSED void st_server_stop(st_server_t *s)
{
    if (s->d)
        MHD_stop_daemon(s->d);
    s->d = NULL;
}

static ST_UNUSED const char *st_header(st_req_t *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

#endif
