/* CloudEvents 1.0 structured-mode JSON, built and parsed with jansson. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/message.h"
#include "core/util.h"
#include "outbox/envelope.h"

char *outbox__envelope_build(const outbox_msg_t *msg, size_t *len, char *errstr, size_t errstr_size)
{
    json_error_t jerr;
    json_t *data = json_loads(msg->payload ? msg->payload : "null", JSON_DECODE_ANY, &jerr);
    if (!data) {
        outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
                    "event %s: payload is not valid JSON: %s", msg->id, jerr.text);
        return NULL;
    }
    json_t *o = json_object();
    json_object_set_new(o, "specversion", json_string("1.0"));
    json_object_set_new(o, "id", json_string(msg->id));
    json_object_set_new(o, "source", json_string(msg->source && *msg->source ? msg->source : "/outbox"));
    json_object_set_new(o, "type", json_string(msg->type));
    if (msg->key)
        json_object_set_new(o, "subject", json_string(msg->key));
    if (msg->time)
        json_object_set_new(o, "time", json_string(msg->time));
    json_object_set_new(o, "datacontenttype", json_string("application/json"));
    if (msg->key)
        json_object_set_new(o, "partitionkey", json_string(msg->key));
    if (msg->traceparent && *msg->traceparent)
        json_object_set_new(o, "traceparent", json_string(msg->traceparent));
    json_object_set_new(o, "data", data);
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    json_decref(o);
    if (!s) {
        outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory building envelope");
        return NULL;
    }
    if (len)
        *len = strlen(s);
    return s;
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
    json_error_t jerr;
    json_t *o = json_loadb(json, len, 0, &jerr);
    if (!o)
        return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
                           "not a JSON document: %s (line %d)", jerr.text, jerr.line);
    outbox_err_t err = OUTBOX_OK;
    const char *sv = json_string_value(json_object_get(o, "specversion"));
    const char *id = json_string_value(json_object_get(o, "id"));
    if (!json_is_object(o)) {
        err = outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size, "envelope is not a JSON object");
    } else if (!sv || strcmp(sv, "1.0")) {
        err = outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size, "specversion is not \"1.0\"");
    } else if (!outbox_uuid_valid(id)) {
        err = outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size, "id is missing or not a UUID");
    } else if (!json_is_string(json_object_get(o, "source")) ||
               !json_is_string(json_object_get(o, "type"))) {
        err = outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size, "source or type missing");
    }
    if (err) {
        json_decref(o);
        return err;
    }
    memcpy(env->id, id, OUTBOX_UUID_STRLEN + 1);
    env->type = dup_member(o, "type");
    env->source = dup_member(o, "source");
    env->subject = dup_member(o, "subject");
    env->time = dup_member(o, "time");
    env->traceparent = dup_member(o, "traceparent");
    env->partitionkey = dup_member(o, "partitionkey");
    json_t *data = json_object_get(o, "data");
    env->data = json_dumps(data ? data : json_null(), JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!env->type || !env->source || !env->data) {
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
