/* AMQP 0-9-1 connection code shared by the sink and the consumer
 * (rabbitmq-c). See broker/amqp.h. */
#include "broker/amqp.h"

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"

outbox_err_t outbox__amqp_url_parse(outbox__amqp_url_t *u, const char *url, char *errstr,
                                    size_t errstr_size)
{
    memset(u, 0, sizeof(*u));
    outbox__redact_url(url, u->shown, sizeof(u->shown));
    if (!(u->buf = strdup(url)))
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    amqp_default_connection_info(&u->ci);
    if (amqp_parse_url(u->buf, &u->ci) != AMQP_STATUS_OK) {
        free(u->buf);
        u->buf = NULL;
        return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                           "bad AMQP URL \"%s\": expected amqp://user:pass@host:port/vhost",
                           u->shown);
    }
    if (u->ci.port < 1 || u->ci.port > 65535) { /* rabbitmq-c takes "host:0" */
        free(u->buf);
        u->buf = NULL;
        return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                           "bad AMQP URL \"%s\": port %d is not 1..65535", u->shown, u->ci.port);
    }
    if (!u->ci.vhost || !*u->ci.vhost)
        u->ci.vhost = "/";
    return OUTBOX_OK;
}

void outbox__amqp_url_term(outbox__amqp_url_t *u)
{
    free(u->buf);
    u->buf = NULL;
}

void outbox__amqp_reply_str(amqp_rpc_reply_t r, char *out, size_t out_size)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        snprintf(out, out_size, "ok");
        return;
    case AMQP_RESPONSE_NONE:
        snprintf(out, out_size, "no reply from the broker");
        return;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        snprintf(out, out_size, "%s", amqp_error_string2(r.library_error));
        return;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD && r.reply.decoded) {
            const amqp_connection_close_t *m = r.reply.decoded;
            snprintf(out, out_size, "connection closed by the broker: %u %.*s", m->reply_code,
                     (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD && r.reply.decoded) {
            const amqp_channel_close_t *m = r.reply.decoded;
            snprintf(out, out_size, "channel closed by the broker: %u %.*s", m->reply_code,
                     (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        } else {
            snprintf(out, out_size, "unexpected broker method 0x%08x", (unsigned)r.reply.id);
        }
        return;
    }
    snprintf(out, out_size, "unknown rabbitmq-c reply");
}

int outbox__amqp_is_channel_error(amqp_rpc_reply_t r)
{
    return r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
           r.reply.id == AMQP_CHANNEL_CLOSE_METHOD;
}

void outbox__amqp_channel_close_ok(amqp_connection_state_t conn, amqp_channel_t ch)
{
    amqp_channel_close_ok_t ok = {0};
    amqp_send_method(conn, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
}

void outbox__amqp_drop(amqp_connection_state_t *conn)
{
    if (*conn)
        amqp_destroy_connection(*conn);
    *conn = NULL;
}

void outbox__amqp_close(amqp_connection_state_t *conn)
{
    if (!*conn)
        return;
    amqp_connection_close(*conn, AMQP_REPLY_SUCCESS);
    outbox__amqp_drop(conn);
}

outbox_err_t outbox__amqp_connect(const outbox__amqp_url_t *u, const char *ca_file,
                                  int64_t timeout_ms, int heartbeat_s, amqp_connection_state_t *out,
                                  char *errstr, size_t errstr_size)
{
    const struct amqp_connection_info *ci = &u->ci;
    char why[256];
    *out = NULL;
    amqp_connection_state_t conn = amqp_new_connection();
    if (!conn)
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    amqp_socket_t *sock = ci->ssl ? amqp_ssl_socket_new(conn) : amqp_tcp_socket_new(conn);
    if (!sock) {
        amqp_destroy_connection(conn);
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "cannot create an AMQP socket");
    }
    if (ci->ssl && ca_file && *ca_file &&
        amqp_ssl_socket_set_cacert(sock, ca_file) != AMQP_STATUS_OK) {
        amqp_destroy_connection(conn);
        return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                           "cannot load the AMQP CA file %s", ca_file);
    }
    struct timeval tv = outbox__amqp_tv(timeout_ms);
    int st = amqp_socket_open_noblock(sock, ci->host, ci->port, &tv);
    if (st != AMQP_STATUS_OK) {
        amqp_destroy_connection(conn);
        return outbox__err(OUTBOX_ERR_BROKER, errstr, errstr_size,
                           "cannot connect to AMQP broker %s: %s", u->shown,
                           amqp_error_string2(st));
    }
    amqp_set_handshake_timeout(conn, &tv);
    amqp_set_rpc_timeout(conn, &tv);
    amqp_rpc_reply_t r = amqp_login(conn, ci->vhost, 0, 131072, heartbeat_s, AMQP_SASL_METHOD_PLAIN,
                                    ci->user, ci->password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        outbox__amqp_reply_str(r, why, sizeof(why));
        amqp_destroy_connection(conn);
        return outbox__err(OUTBOX_ERR_BROKER, errstr, errstr_size, "AMQP login to %s failed: %s",
                           u->shown, why);
    }
    amqp_channel_open(conn, OUTBOX__AMQP_CHANNEL);
    r = amqp_get_rpc_reply(conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        outbox__amqp_reply_str(r, why, sizeof(why));
        amqp_destroy_connection(conn);
        return outbox__err(OUTBOX_ERR_BROKER, errstr, errstr_size,
                           "AMQP channel.open on %s failed: %s", u->shown, why);
    }
    *out = conn;
    return OUTBOX_OK;
}
