/* Kafka client code shared by the Kafka sink (src/sink/kafka.c) and the
 * Kafka consumer (src/consumer/kafka.c), on librdkafka: URL parsing,
 * librdkafka configuration from the config table, log routing, error
 * classes. */
#ifndef OUTBOX_BROKER_KAFKA_H
#define OUTBOX_BROKER_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

#include "outbox/outbox.h"

/**
 * Creates a librdkafka configuration for url
 *   kafka://[user:password@]host:port[,host:port...][/]
 * with bootstrap.servers, client.id, SASL/PLAIN credentials when the URL has
 * them (security.protocol sasl_plaintext unless kafka_properties says
 * otherwise) and librdkafka's log lines routed to the JSON log.
 * On success *out receives the configuration (the caller owns it: pass it
 * to rd_kafka_new or free it with rd_kafka_conf_destroy).
 * Fails with OUTBOX_ERR_CONFIG on a malformed URL. Never logs the password.
 */
outbox_err_t outbox__kafka_conf_new(const char *url, const char *client_id, rd_kafka_conf_t **out,
                                    char *errstr, size_t errstr_size);

/**
 * Sets one property; on failure fills errstr naming the property (its value
 * only when the name does not look secret) and returns OUTBOX_ERR_CONFIG.
 */
outbox_err_t outbox__kafka_conf_set(rd_kafka_conf_t *kc, const char *name, const char *value,
                                    char *errstr, size_t errstr_size);

/**
 * Applies the "k=v,k=v" list of the kafka_properties option to kc (after the
 * caller's own settings, so the user has the last word). Spaces around names
 * and values are trimmed; "\," is a literal comma inside a value.
 */
outbox_err_t outbox__kafka_conf_apply_extra(rd_kafka_conf_t *kc, const outbox_conf_t *conf,
                                            char *errstr, size_t errstr_size);

/** 1 if err says the cluster could not be reached or did not answer in time
 *  (transport, all brokers down, timeouts, purged while waiting). */
int outbox__kafka_err_is_transport(rd_kafka_resp_err_t err);

#endif
