/*
 * AMQP 0-9-1 client code shared by the AMQP sink (src/sink/amqp.c) and
 * consumer (src/consumer/amqp.c), on rabbitmq-c: URL parsing, connecting
 * (socket, login, channel 1) with a deadline, and turning rabbitmq-c
 * replies into sentences.
 */
#ifndef OUTBOX_BROKER_AMQP_H
#define OUTBOX_BROKER_AMQP_H

#include <amqp.h>
#include <amqp_framing.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

#include "outbox/outbox.h"

/** The AMQP channel both sides use (one per connection). */
#define OUTBOX__AMQP_CHANNEL 1

/** A parsed amqp:// or amqps:// URL. ci's strings point into buf. */
typedef struct outbox__amqp_url_s {
    char *buf;                      /**< owned; amqp_parse_url writes into it */
    struct amqp_connection_info ci; /**< user, password, host, vhost, port, ssl */
    char shown[512];                /**< the URL with the password redacted: safe to log */
} outbox__amqp_url_t;

/**
 * Parses url (amqp://user:pass@host:port/vhost, percent-encoded; amqps://
 * for TLS). An empty vhost ("amqp://host/") means the default "/", as in the
 * AMQP URI spec; use %2f for "/" explicitly. OUTBOX_ERR_CONFIG (never
 * showing the password) on a bad URL, OUTBOX_ERR_NOMEM. On success free
 * with outbox__amqp_url_term.
 */
outbox_err_t outbox__amqp_url_parse(outbox__amqp_url_t *u, const char *url, char *errstr,
                                    size_t errstr_size);

/** Frees what outbox__amqp_url_parse allocated; safe to call twice. */
void outbox__amqp_url_term(outbox__amqp_url_t *u);

/** ms as a struct timeval (negative counts as 0). */
static inline struct timeval outbox__amqp_tv(int64_t ms)
{
    if (ms < 0)
        ms = 0;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    return tv;
}

/** Writes a sentence for a rabbitmq-c RPC reply (meant for one that was
 *  not AMQP_RESPONSE_NORMAL) into out. */
void outbox__amqp_reply_str(amqp_rpc_reply_t r, char *out, size_t out_size);

/** 1 if r is a channel-level error (the connection is still usable once the
 *  channel is re-opened), 0 otherwise. */
int outbox__amqp_is_channel_error(amqp_rpc_reply_t r);

/** Answers a broker's channel.close so the channel number can be re-opened. */
void outbox__amqp_channel_close_ok(amqp_connection_state_t conn, amqp_channel_t ch);

/** Frees *conn without talking to the broker (after an error) and sets it
 *  to NULL. A NULL *conn is a no-op. */
void outbox__amqp_drop(amqp_connection_state_t *conn);

/** Closes *conn politely (bounded by the RPC timeout set at connect), frees
 *  it and sets it to NULL. A NULL *conn is a no-op. */
void outbox__amqp_close(amqp_connection_state_t *conn);

/**
 * Opens a connection to u: TCP (or TLS for amqps, verifying the peer
 * against ca_file when it is not empty), login with heartbeat_s, channel 1.
 * Every step is bounded by timeout_ms. On success *out is the connection
 * (the caller owns it: free it with outbox__amqp_close or outbox__amqp_drop);
 * on failure *out is NULL and the result is OUTBOX_ERR_BROKER (or
 * OUTBOX_ERR_CONFIG for a bad TLS setting, OUTBOX_ERR_NOMEM), errstr saying
 * which step failed, never with the password.
 */
outbox_err_t outbox__amqp_connect(const outbox__amqp_url_t *u, const char *ca_file,
                                  int64_t timeout_ms, int heartbeat_s, amqp_connection_state_t *out,
                                  char *errstr, size_t errstr_size);

#endif
