/*
 * The pure decode steps of the broker consumers: what each one reads out
 * of a message its client library handed over (fields, headers,
 * properties), before outbox__consumer_dispatch(). No I/O: the fuzz
 * targets (fuzz/fuzz_consumer_*.c) call them on arbitrary input.
 */
#ifndef OUTBOX_CONSUMER_DECODE_H
#define OUTBOX_CONSUMER_DECODE_H

#include <amqp.h>
#include <amqp_framing.h>
#include <hiredis/hiredis.h>
#include <librdkafka/rdkafka.h>
#include <nats/nats.h>
#include <stddef.h>

#include "consumer/consumer.h"

/** A stream entry of an XREADGROUP reply, [id, [field, value, ...]]: 1 with
 *  *id and, when it has an "event" field, *body and *len (else *body NULL);
 *  0 when entry does not have that shape. */
int outbox__consumer_redis_entry(const redisReply *entry, const char **id, const char **body,
                                 size_t *len);

/** A Pub/Sub push ["message", channel, payload]: 1 with *channel, *body and
 *  *len; 0 for anything else (subscribe confirmations, other shapes). */
int outbox__consumer_redis_pubsub(const redisReply *rep, const char **channel, const char **body,
                                  size_t *len);

/** Dispatches a Kafka message of topic: hdrs (may be NULL) decide
 *  structured or binary mode (see src/consumer/kafka.c); payload may be
 *  NULL (a tombstone). Returns what outbox__consumer_dispatch() returns. */
outbox_err_t outbox__consumer_kafka_handle(outbox_consumer_t *c, const char *topic,
                                           const rd_kafka_headers_t *hdrs, const void *payload,
                                           size_t len, outbox_consumer_handler_fn fn, void *opaque,
                                           int64_t *retry_in);

/** Binary mode of an AMQP message: its ce_* string headers as a
 *  NULL-terminated name/value list of malloc'd strings (free with
 *  outbox__consumer_amqp_attrs_free), or NULL when it is structured. */
char **outbox__consumer_amqp_attrs(const amqp_basic_properties_t *p);
void outbox__consumer_amqp_attrs_free(char **attrs);

/** Dispatches a JetStream message m as one of topic (headers, metadata in
 *  the reply subject, data). Returns what outbox__consumer_dispatch()
 *  returns. */
outbox_err_t outbox__consumer_nats_handle(outbox_consumer_t *c, const char *topic, natsMsg *m,
                                          outbox_consumer_handler_fn fn, void *opaque,
                                          int64_t *retry_in);

#endif
