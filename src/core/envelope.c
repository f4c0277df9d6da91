/* CloudEvents 1.0 structured-mode JSON. The data member is the producer's
 * text, checked by core/json.c and spliced in verbatim (whitespace outside
 * strings dropped): it is never parsed into numbers and re-encoded, so
 * 0.1 stays 0.1 and integers of any size survive. The attributes are ours
 * and are escaped by jansson. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/json.h"
#include "core/message.h"
#include "core/util.h"
#include "outbox/envelope.h"

/* Appends ,"name":"<value escaped>" (no comma for the first member), with
 * JSON string escaping written straight into the buffer (no allocation per
 * attribute). Returns 0, or -1 if value is not UTF-8. */
static int add_attr(outbox__buf_t *b, int first, const char *name, const char *value)
{
    size_t vlen = strlen(value);
    if (!outbox__json_utf8_valid(value, vlen))
        return -1;
    outbox__buf_adds(b, first ? "{\"" : ",\"");
    outbox__buf_adds(b, name);
    outbox__buf_adds(b, "\":\"");
    outbox__json_put_escaped(b, value, vlen, 1);
    outbox__buf_add(b, "\"", 1);
    return 0;
}

outbox_err_t outbox__envelope_append(const outbox_msg_t *msg, outbox__buf_t *b, char *errstr,
                                     size_t errstr_size)
{
    const char *payload = msg->payload ? msg->payload : "null";
    size_t plen = msg->payload && msg->payload_len ? msg->payload_len : strlen(payload);
    outbox__json_error_t jerr;
    if (outbox__json_check(payload, plen, &jerr))
        return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
                           "event %s: payload is not valid JSON: %s at byte %zu", msg->id,
                           jerr.what, jerr.offset);
    const char *attrs[][2] = {
        {"specversion", "1.0"},
        {"id", msg->id},
        {"source", msg->source && *msg->source ? msg->source : "/outbox"},
        {"type", msg->type ? msg->type : ""},
        {"subject", msg->key},
        {"time", msg->time},
        {"datacontenttype", "application/json"},
        {"partitionkey", msg->key},
        {"traceparent", msg->traceparent && *msg->traceparent ? msg->traceparent : NULL},
    };
    size_t start = b->len;
    outbox__buf_reserve(b, plen + 384); /* attributes and data usually fit */
    for (size_t i = 0, first = 1; i < sizeof(attrs) / sizeof(attrs[0]); i++) {
        if (!attrs[i][1])
            continue;
        if (add_attr(b, (int)first, attrs[i][0], attrs[i][1])) {
            b->len = start; /* take the partial envelope back */
            if (b->p)
                b->p[start] = '\0';
            return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
                               "event %s: %s is not valid UTF-8", msg->id, attrs[i][0]);
        }
        first = 0;
    }
    outbox__buf_adds(b, ",\"data\":");
    char *data = outbox__buf_reserve(b, plen + 1);
    if (data) {
        b->len += outbox__json_compact(payload, plen, data);
        outbox__buf_add(b, "}", 1);
    }
    if (b->broken)
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size,
                           "out of memory building envelope");
    return OUTBOX_OK;
}

char *outbox__envelope_build(const outbox_msg_t *msg, size_t *len, char *errstr, size_t errstr_size)
{
    outbox__buf_t b = {0};
    if (outbox__envelope_append(msg, &b, errstr, errstr_size)) {
        outbox__buf_free(&b);
        return NULL;
    }
    if (len)
        *len = b.len;
    return b.p;
}

static char *dup_member(json_t *o, const char *name)
{
    json_t *v = json_object_get(o, name);
    return json_is_string(v) ? strdup(json_string_value(v)) : NULL;
}

outbox_err_t outbox_envelope_parse(const char *json, size_t len, outbox_envelope_t *env,
                                   char *errstr, size_t errstr_size)
{
    memset(env, 0, sizeof(*env));
    /* The data member's text, as it is in the document; the rest is read
     * by jansson from a copy with data replaced by null. */
    outbox__json_error_t serr;
    size_t doff = 0, dlen = 0;
    int found = outbox__json_find_member(json, len, "data", &doff, &dlen, &serr);
    if (found < 0) {
        if (!strcmp(serr.what, "not a JSON object"))
            return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
                               "envelope is not a JSON object");
        return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
                           "not a JSON document: %s at byte %zu", serr.what, serr.offset);
    }
    if (!found) {
        doff = len;
        dlen = 0;
    }
    env->data = found ? strndup(json + doff, dlen) : strdup("null");
    char *rest = malloc(len - dlen + 5);
    if (!env->data || !rest) {
        free(rest);
        outbox_envelope_term(env);
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    }
    size_t rlen = doff;
    memcpy(rest, json, doff);
    if (found) {
        memcpy(rest + rlen, "null", 4);
        rlen += 4;
    }
    memcpy(rest + rlen, json + doff + dlen, len - doff - dlen);
    rlen += len - doff - dlen;

    json_error_t jerr;
    json_t *o = json_loadb(rest, rlen, 0, &jerr);
    free(rest);
    outbox_err_t err = OUTBOX_OK;
    if (!o) {
        err = outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
                          "envelope attributes unreadable: %s (line %d)", jerr.text, jerr.line);
        outbox_envelope_term(env);
        return err;
    }
    const char *sv = json_string_value(json_object_get(o, "specversion"));
    const char *id = json_string_value(json_object_get(o, "id"));
    if (!sv || strcmp(sv, "1.0")) {
        err =
            outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size, "specversion is not \"1.0\"");
    } else if (!outbox_uuid_valid(id)) {
        err =
            outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size, "id is missing or not a UUID");
    } else if (!json_is_string(json_object_get(o, "source")) ||
               !json_is_string(json_object_get(o, "type"))) {
        err = outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size, "source or type missing");
    }
    if (err) {
        json_decref(o);
        outbox_envelope_term(env);
        return err;
    }
    memcpy(env->id, id, OUTBOX_UUID_STRLEN + 1);
    env->type = dup_member(o, "type");
    env->source = dup_member(o, "source");
    env->subject = dup_member(o, "subject");
    env->time = dup_member(o, "time");
    env->traceparent = dup_member(o, "traceparent");
    env->partitionkey = dup_member(o, "partitionkey");
    json_decref(o);
    if (!env->type || !env->source) {
        outbox_envelope_term(env);
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    }
    return OUTBOX_OK;
}

void outbox_envelope_term(outbox_envelope_t *env)
{
    if (!env)
        return;
    free(env->type);
    free(env->source);
    free(env->subject);
    free(env->time);
    free(env->traceparent);
    free(env->partitionkey);
    free(env->data);
    memset(env, 0, sizeof(*env));
}
