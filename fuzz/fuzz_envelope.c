/*
 * src/core/envelope.c: the CloudEvents envelope.
 *
 *  1. The input as a document a consumer received (outbox_envelope_parse):
 *     what it accepts has a UUID id, type and source, and data that is the
 *     document's "data" member byte for byte.
 *  2. The input as an event the relay wraps (outbox__envelope_build):
 *     lines type, key, source, traceparent, then the payload. It is
 *     refused exactly when the payload is not JSON or an attribute is not
 *     UTF-8; what it builds parses back to the same attributes and to the
 *     payload with only the whitespace outside strings removed.
 */
#include <jansson.h>
#include <string.h>

#include "core/json.h"
#include "core/message.h"
#include "fuzz_common.h"
#include "outbox/envelope.h"

static int same(const char *a, const char *b)
{
    return a && b && !strcmp(a, b);
}

static void check_parse(const char *s, size_t size)
{
    outbox_envelope_t env;
    char err[512];
    outbox_err_t rc = outbox_envelope_parse(s, size, &env, err, sizeof(err));
    if (rc != OUTBOX_OK) {
        FUZZ_CHECK(rc == OUTBOX_ERR_INVALID_ARG, "parse returned %s", outbox_err_str(rc));
        FUZZ_CHECK(!env.data && !env.type, "a refused envelope keeps strings");
        return;
    }
    FUZZ_CHECK(outbox_uuid_valid(env.id), "id %s", env.id);
    FUZZ_CHECK(env.type && env.source && env.data, "type, source or data missing");
    size_t off, vlen;
    int found = outbox__json_find_member(s, size, "data", &off, &vlen, NULL);
    FUZZ_CHECK(found >= 0, "an accepted envelope whose data cannot be found");
    if (found)
        FUZZ_CHECK(strlen(env.data) == vlen && !memcmp(env.data, s + off, vlen),
                   "data is not the document's data member byte for byte");
    else
        FUZZ_CHECK(!strcmp(env.data, "null"), "absent data is not null");
    /* The attributes are what jansson reads in the same document. */
    json_t *o = json_loadb(s, size, 0, NULL);
    if (o) {
        const char *jt = json_string_value(json_object_get(o, "type")),
                   *js = json_string_value(json_object_get(o, "source")),
                   *jid = json_string_value(json_object_get(o, "id")),
                   *jtp = json_string_value(json_object_get(o, "traceparent"));
        FUZZ_CHECK(same(env.type, jt) && same(env.source, js) && same(env.id, jid),
                   "attributes differ from jansson's: type %s/%s source %s/%s", env.type,
                   jt ? jt : "(none)", env.source, js ? js : "(none)");
        FUZZ_CHECK(jtp ? same(env.traceparent, jtp) : !env.traceparent, "traceparent %s/%s",
                   env.traceparent ? env.traceparent : "(none)", jtp ? jtp : "(none)");
        json_decref(o);
    }
    outbox_envelope_term(&env);
}

static void check_build(const uint8_t *data, size_t size)
{
    fuzz_lines_t r;
    const char *line;
    size_t len;
    char *attr[4] = {0};
    fuzz_lines_init(&r, data, size);
    for (int i = 0; i < 4; i++)
        attr[i] = fuzz_line(&r, &line, &len) ? fuzz_str((const uint8_t *)line, len) : NULL;
    size_t plen;
    const char *payload = fuzz_rest(&r, &plen);
    char *p = fuzz_str((const uint8_t *)payload, plen);

    outbox_msg_t m = {.seq = 1,
                      .id = "0190a6f0-8b1c-7d2e-9f30-4a5b6c7d8e9f",
                      .topic = "orders",
                      .type = attr[0] ? attr[0] : "OrderCreated",
                      .key = attr[1] ? attr[1] : "order-1",
                      .source = attr[2],
                      .traceparent = attr[3],
                      .payload = p,
                      .payload_len = plen,
                      .time = "2026-01-02T03:04:05.678Z"};
    const char *source = m.source && *m.source ? m.source : "/outbox";
    int want_ok = outbox__json_check(p, plen ? plen : strlen(p), NULL) == 0;
    const char *const texts[] = {m.type, m.key, source, m.traceparent};
    for (int i = 0; i < 4; i++)
        if (texts[i] && !outbox__json_utf8_valid(texts[i], strlen(texts[i])))
            want_ok = 0;

    size_t elen = 0;
    char err[512];
    char *doc = outbox__envelope_build(&m, &elen, err, sizeof(err));
    FUZZ_CHECK(!doc == !want_ok, "build %s what it should %s (%s)", doc ? "accepts" : "refuses",
               want_ok ? "accept" : "refuse", doc ? "" : err);
    if (doc) {
        FUZZ_CHECK(strlen(doc) == elen, "envelope length %zu, strlen %zu", elen, strlen(doc));
        outbox_envelope_t env;
        outbox_err_t rc = outbox_envelope_parse(doc, elen, &env, err, sizeof(err));
        FUZZ_CHECK(rc == OUTBOX_OK, "the envelope built does not parse: %s", err);
        char *compact = malloc(plen + 1);
        FUZZ_CHECK(compact, "out of memory");
        size_t n = outbox__json_compact(p, plen, compact);
        compact[n] = '\0';
        FUZZ_CHECK(!strcmp(env.data, compact), "data is not the payload as written");
        FUZZ_CHECK(!strcmp(env.id, m.id) && same(env.type, m.type) && same(env.source, source) &&
                       same(env.subject, m.key) && same(env.partitionkey, m.key) &&
                       same(env.time, m.time),
                   "an attribute changed on the way");
        if (m.traceparent && *m.traceparent)
            FUZZ_CHECK(same(env.traceparent, m.traceparent), "traceparent changed");
        else
            FUZZ_CHECK(!env.traceparent, "traceparent appeared");
        outbox_envelope_term(&env);
        free(compact);
        free(doc);
    }
    for (int i = 0; i < 4; i++)
        free(attr[i]);
    free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_parse((const char *)data, size);
    check_build(data, size);
    return 0;
}
