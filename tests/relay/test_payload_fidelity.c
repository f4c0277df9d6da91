/* Payloads are carried faithfully (DESIGN.md): events whose data a JSON
 * library would round (0.1, 19.99), refuse (an integer beyond 64 bits,
 * 1e400, "\u0000") or normalise (-0.0, 2.50, -1E+2) go through real
 * PostgreSQL, a relay and Redis Streams. Each stream entry's CloudEvents data
 * is the producer's text byte for byte (whitespace outside strings aside),
 * both in the raw document and as outbox_envelope_parse hands it to
 * consumers; each event is published once and nothing is dead-lettered. */
#include "relay_common.h"

static const char *const payloads[] = {
    "0.1",
    "19.99",
    "123456789012345678901234567890",
    "-123456789012345678901234567890",
    "1e400",
    "-0.0",
    "-1E+2",
    "\"a\\u0000b\"",
    "{\"order\":{\"lines\":[{\"sku\":\"A\",\"price\":19.99,\"qty\":0.1},{\"sku\":\"B\",\"price\":"
    "1e-400}],"
    "\"total\":123456789012345678901234567890.12345678901234567890},\"tags\":[\"x\",null,true,"
    "false,[]],"
    "\"note\":\"caf\\u00e9 \\u0000 \\\"q\\\" \\ud83d\\ude00\",\"amount\":2.50}",
    " {\n  \"a\" : [ 1 , 2.50 , { } ] ,\n\t\"b\" : \" keep  these  spaces \" ,\r\n  \"c\" : "
    "0.30000000000000004\n}\n",
};
#define NP (sizeof(payloads) / sizeof(payloads[0]))

/* created_at as written, and the envelope's time for it */
static const char *const times[][2] = {
    {"2026-01-02 03:04:05+00", "2026-01-02T03:04:05.000000Z"},
    {"2026-01-02 03:04:05.1+00", "2026-01-02T03:04:05.100000Z"},
    {"2026-01-02 03:04:05.123456+00", "2026-01-02T03:04:05.123456Z"},
    {"2026-07-02 03:04:05.5+05:45", "2026-07-01T21:19:05.500000Z"},
    {"1999-12-31 23:59:59.999999-08", "2000-01-01T07:59:59.999999Z"},
    {"10000-01-01 00:00:00.000001+00", "10000-01-01T00:00:00.000001Z"},
};
#define NT (sizeof(times) / sizeof(times[0]))

/* Whether t is YYYY-MM-DDTHH:MM:SS.ffffffZ. */
static int rfc3339_micro(const char *t)
{
    const char *form = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    if (!t || strlen(t) != strlen(form))
        return 0;
    for (size_t i = 0; form[i]; i++)
        if (form[i] == 'd' ? t[i] < '0' || t[i] > '9' : t[i] != form[i])
            return 0;
    return 1;
}

/* Copies s into out without the whitespace outside strings; returns out.
 * Written apart from core/json.c so the test does not grade itself. */
static const char *squeeze(const char *s, char *out, size_t out_size)
{
    size_t n = 0;
    int in_str = 0;
    for (; *s && n + 2 < out_size; s++) {
        if (in_str) {
            out[n++] = *s;
            if (*s == '\\' && s[1])
                out[n++] = *++s;
            else if (*s == '"')
                in_str = 0;
        } else if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r') {
            out[n++] = *s;
            in_str = *s == '"';
        }
    }
    out[n] = '\0';
    return out;
}

int main(void)
{
    PGconn *c;
    const char *ci = setup_db("payload_fidelity", &c);
    char host[64], err[512];
    int port;
    tu_redis_addr(host, sizeof(host), &port);
    redisContext *r = tu_redis_connect(host, port);
    const char *stream = tu_unique("fidelity");

    static char ids[NP][OUTBOX_UUID_STRLEN + 1];
    PQclear(tu_exec(c, "BEGIN"));
    for (size_t i = 0; i < NP; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%zu", i);
        outbox_event_t ev = {.topic = stream, .type = "Priced", .key = key, .payload = payloads[i]};
        CHECK(outbox_enqueue(c, &ev, ids[i], err, sizeof(err)) == OUTBOX_OK, "enqueue %s: %s",
              payloads[i], err);
    }
    PQclear(tu_exec(c, "COMMIT"));
    /* Creation times the envelope must carry as RFC 3339 UTC with
     * microseconds, written from a session in another time zone: no
     * fraction, a short one, a full one, an offset, a day boundary, a year
     * past 9999. The rest keep their now(). */
    PQclear(tu_exec(c, "SET TimeZone = 'Asia/Kathmandu'"));
    for (size_t i = 0; i < NT; i++) {
        const char *params[2] = {times[i][0], ids[i]};
        PGresult *u =
            PQexecParams(c, "UPDATE outbox SET created_at = $1::timestamptz WHERE id = $2", 2, NULL,
                         params, NULL, NULL, 0);
        CHECK(PQresultStatus(u) == PGRES_COMMAND_OK && !strcmp(PQcmdTuples(u), "1"),
              "setting created_at %s: %s", times[i][0], PQerrorMessage(c));
        PQclear(u);
    }
    /* PostgreSQL's json type keeps the text: what we read back is ours. */
    CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox WHERE payload::text = '1e400'") == 1,
          "the json column did not keep the producer's text");

    outbox_relay_t *relay = tu_relay_start(relay_conf(ci, host, port));
    wait_drained(c, 30000);
    outbox_relay_destroy(relay);
    CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox_dead_letter") == 0,
          "valid JSON payloads were dead-lettered");

    redisReply *rep = redisCommand(r, "XRANGE %s - +", stream);
    CHECK(rep && rep->type == REDIS_REPLY_ARRAY, "XRANGE failed");
    CHECK(rep->elements == NP, "%zu stream entries for %zu events (want each published once)",
          rep->elements, NP);
    int seen[NP] = {0};
    for (size_t e = 0; e < rep->elements; e++) {
        redisReply *f = rep->element[e]->element[1];
        const char *id = NULL, *doc = NULL;
        size_t len = 0;
        for (size_t j = 0; j + 1 < f->elements; j += 2) {
            if (!strcmp(f->element[j]->str, "id"))
                id = f->element[j + 1]->str;
            else if (!strcmp(f->element[j]->str, "event")) {
                doc = f->element[j + 1]->str;
                len = f->element[j + 1]->len;
            }
        }
        CHECK(id && doc, "stream entry without id/event fields");
        size_t i = 0;
        while (i < NP && strcmp(ids[i], id))
            i++;
        CHECK(i < NP, "unknown event %s on the stream", id);
        CHECK(!seen[i]++, "event %s published twice", id);

        static char want[4096], got[4096], tail[4200];
        squeeze(payloads[i], want, sizeof(want));
        /* The raw document: data is the last member, the producer's bytes. */
        snprintf(tail, sizeof(tail), ",\"data\":%s}", want);
        CHECK(len > strlen(tail) && !strcmp(doc + len - strlen(tail), tail),
              "payload %s reached the broker as: %s", payloads[i], doc);
        /* What a consumer gets. */
        outbox_envelope_t env;
        CHECK(outbox_envelope_parse(doc, len, &env, err, sizeof(err)) == OUTBOX_OK, "parse %s: %s",
              doc, err);
        CHECK(!strcmp(squeeze(env.data, got, sizeof(got)), want),
              "consumer got data %s for payload %s", env.data, payloads[i]);
        CHECK(!strcmp(env.id, ids[i]) && !strcmp(env.type, "Priced"), "attributes of %s", doc);
        if (i < NT)
            CHECK(env.time && !strcmp(env.time, times[i][1]),
                  "created_at %s became time %s, want %s", times[i][0],
                  env.time ? env.time : "(none)", times[i][1]);
        else
            CHECK(rfc3339_micro(env.time), "time %s is not RFC 3339 UTC with microseconds",
                  env.time ? env.time : "(none)");
        outbox_envelope_term(&env);
    }
    freeReplyObject(rep);
    redisFree(r);
    PQfinish(c);
    printf("PASS relay_payload_fidelity: %zu payloads (0.1, 19.99, 30-digit integers, 1e400, -0.0, "
           "\\u0000, "
           "nested, whitespace) published once each, data byte for byte, none dead-lettered; %zu "
           "creation times in RFC 3339 UTC\n",
           NP, NT);
    return 0;
}
