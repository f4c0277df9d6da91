/* CloudEvents 1.0 structured-mode JSON. The data member is the producer's
 * text, checked by core/json.c and spliced in verbatim (whitespace outside
 * strings dropped): it is never parsed into numbers and re-encoded, so
 * 0.1 stays 0.1 and integers of any size survive. The attributes are ours,
 * escaped and unescaped by core/json.c. */
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

/* The members outbox_envelope_parse reads, in this order. */
enum {
    M_SPECVERSION,
    M_ID,
    M_SOURCE,
    M_TYPE,
    M_SUBJECT,
    M_TIME,
    M_TRACEPARENT,
    M_PARTITIONKEY,
    M_DATA,
    M_COUNT
};
static const char *const members[M_COUNT] = {"specversion", "id",           "source",
                                             "type",        "subject",      "time",
                                             "traceparent", "partitionkey", "data"};

/* The string attribute at span as a new C string in *out (NULL when absent
 * or not a string). 0, -1 (a string no C string can carry), -2 (memory). */
static int attr_dup(const char *json, outbox__json_span_t span, char **out)
{
    *out = NULL;
    if (!span.len || json[span.off] != '"')
        return 0;
    return outbox__json_string_dup(json + span.off, span.len, out);
}

/* One pass of the scanner over the document finds every attribute and the
 * data member's span; the attributes are unescaped straight from the text
 * (no jansson tree per delivery: this runs for every message consumed). */
outbox_err_t outbox_envelope_parse(const char *json, size_t len, outbox_envelope_t *env,
                                   char *errstr, size_t errstr_size)
{
    memset(env, 0, sizeof(*env));
    outbox__json_error_t serr;
    outbox__json_span_t sp[M_COUNT];
    if (outbox__json_find_members(json, len, members, M_COUNT, sp, &serr) < 0) {
        if (!strcmp(serr.what, "not a JSON object"))
            return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
                               "envelope is not a JSON object");
        return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
                           "not a JSON document: %s at byte %zu", serr.what, serr.offset);
    }
    char *v[M_DATA] = {0};
    int rc = 0;
    for (int k = 0; k < M_DATA && !rc; k++)
        if ((rc = attr_dup(json, sp[k], &v[k])) == -1)
            outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
                        "envelope attribute %s holds U+0000 or a lone surrogate", members[k]);
    outbox_err_t err = OUTBOX_OK;
    if (rc == -2)
        err = outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    else if (rc == -1)
        err = OUTBOX_ERR_INVALID_ARG;
    else if (!v[M_SPECVERSION] || strcmp(v[M_SPECVERSION], "1.0"))
        err =
            outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size, "specversion is not \"1.0\"");
    else if (!outbox_uuid_valid(v[M_ID]))
        err =
            outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size, "id is missing or not a UUID");
    else if (!v[M_SOURCE] || !v[M_TYPE])
        err = outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size, "source or type missing");
    else if (!(env->data = sp[M_DATA].len ? strndup(json + sp[M_DATA].off, sp[M_DATA].len)
                                          : strdup("null")))
        err = outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    if (!err) {
        memcpy(env->id, v[M_ID], OUTBOX_UUID_STRLEN + 1);
        env->type = v[M_TYPE];
        env->source = v[M_SOURCE];
        env->subject = v[M_SUBJECT];
        env->time = v[M_TIME];
        env->traceparent = v[M_TRACEPARENT];
        env->partitionkey = v[M_PARTITIONKEY];
        v[M_TYPE] = v[M_SOURCE] = v[M_SUBJECT] = v[M_TIME] = v[M_TRACEPARENT] = v[M_PARTITIONKEY] =
            NULL;
    }
    for (int k = 0; k < M_DATA; k++)
        free(v[k]);
    if (err)
        outbox_envelope_term(env);
    return err;
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
