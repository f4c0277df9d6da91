/*
 * NATS JetStream client code shared by the sink (src/sink/nats.c) and the
 * consumer (src/consumer/nats.c), on nats.c: URL parsing, connecting (with
 * background reconnect) and stream provisioning.
 *
 * URL: nats://[user:pass@]host[:port][,host[:port]...]   (port default 4222)
 *      nats://:token@host:port for token authentication (nats://token@host
 *      works too, but only the ":token" form is redacted in log lines).
 *      nats+tls://... (or tls://...): the same over TLS, required: the
 *      server's certificate is verified against nats_ca_file (empty = the
 *      system store) and must name the host of the URL.
 * The password goes to natsOptions_SetUserInfo, never into a server URL,
 * so nats.c's own messages cannot leak it.
 */
#ifndef OUTBOX_BROKER_NATS_H
#define OUTBOX_BROKER_NATS_H

#include <nats/nats.h>
#include <stddef.h>
#include <stdint.h>

#include "outbox/outbox.h"

struct outbox_sink_s;

#define OUTBOX__NATS_MAX_SERVERS 16

typedef struct outbox__nats_url_s {
    char servers[OUTBOX__NATS_MAX_SERVERS][280]; /**< "nats://host:port", no credentials */
    int nservers;
    char user[256];
    char password[256]; /**< secret: never log */
    int tls;            /**< nats+tls:// (or tls://): TLS required, server verified */
    char ca_file[512];  /**< PEM CA certificates for TLS ("" = system store); callers
                             copy nats_ca_file here after parsing */
} outbox__nats_url_t;

/** Parses url (see above). OUTBOX_ERR_CONFIG with a sentence on bad input. */
outbox_err_t outbox__nats_parse_url(const char *url, outbox__nats_url_t *out, char *errstr,
                                    size_t errstr_size);

/**
 * Connects to one of u's servers within timeout_ms. The connection
 * reconnects by itself after a loss (forever); log lines name it `who`.
 * OUTBOX_ERR_BROKER when no server answers.
 */
outbox_err_t outbox__nats_connect(const outbox__nats_url_t *u, const char *who, int64_t timeout_ms,
                                  natsConnection **nc, char *errstr, size_t errstr_size);

/** Writes the stream name for topic: upper-cased, characters that a stream
 *  name cannot hold ('.', '*', '>', '/', '\\', white space) replaced by '_'. */
void outbox__nats_stream_name(const char *topic, char *out, size_t out_size);

/**
 * Makes sure a stream captures "<topic>.>": when stream creation is enabled
 * (nats_stream_create) and no stream of that name exists, creates it with
 * the nats_stream_* options. A stream of another name that already covers
 * the subjects is accepted. OUTBOX_ERR_BROKER when JetStream does not
 * answer; OUTBOX_ERR_CONFIG when the server refuses the configuration.
 */
outbox_err_t outbox__nats_ensure_stream(jsCtx *js, const outbox_conf_t *conf, const char *topic,
                                        int64_t timeout_ms, char *errstr, size_t errstr_size);

/** Writes the text for a nats.c failure into out: the status text plus the
 *  library's last error (of this thread) when it is about the same status. */
void outbox__nats_errtext(natsStatus s, char *out, size_t out_size);

/** 1 if s means the server or the connection is not there (timeout, no
 *  responders, closed, disconnected, I/O, auth), as opposed to a refusal. */
int outbox__nats_is_broker_status(natsStatus s);

/** Publish acknowledgements of this NATS sink that the server flagged as
 *  duplicates (Nats-Msg-Id seen within the stream's duplicate window).
 *  For tests and diagnostics; 0 for a sink of another kind. Defined in
 *  src/sink/nats.c (the counter is the sink's). */
uint64_t outbox__nats_sink_duplicates(const struct outbox_sink_s *sink);

#endif
