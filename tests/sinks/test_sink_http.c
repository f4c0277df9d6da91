/* HTTP webhook sink against a strict local stand-in (libmicrohttpd).
 *
 * The stand-in checks every request: method and path, Content-Type,
 * Idempotency-Key = the CloudEvents id, the Webhook-Signature HMAC, the body
 * (outbox_envelope_parse; data equal to the enqueued payload), traceparent,
 * and in binary mode the percent-encoded ce-* headers. It answers 500, 503,
 * 429 with Retry-After (seconds and HTTP-date), 400 or a too-slow reply for
 * chosen events.
 *
 * Phase 0: endpoint down → publish() returns OUTBOX_ERR_BROKER, ping fails.
 * Phase A: structured, signed, one request per event, through the relay:
 *          every event acknowledged at least once, the 400 event dead-
 *          lettered at once (one delivery, reason "rejected"), Retry-After
 *          honoured, per-key order of first acknowledgements = commit order.
 * Phase B: content_mode=binary.
 * Phase C: webhook_batch=true with the first batch answered 503. */
#include <jansson.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <time.h>

#include "core/message.h"
#include "sink/sink.h"
#include "sink_test.h"

#define SECRET "s3cr3t-webhook-key"
#define MAX_EVS 128

enum { A_OK = 0, A_500, A_503, A_429S, A_429D, A_400, A_SLOW };

typedef struct ev_s {
    char id[OUTBOX_UUID_STRLEN + 1];
    char key[64], type[32], payload[256], traceparent[64];
    long long seq;
    int script[4], nscript;
    int deliveries, acked, first_ack;
    long long t[16];
} ev_t;

static ev_t evs[MAX_EVS];
static int nevs, ack_counter, violations, batch_fail_first, batch_requests;
static char first_violation[512];
static const char *mode = "structured", *path = "/hook";
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static void violation(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void violation(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (!violations++)
        snprintf(first_violation, sizeof(first_violation), "%s", buf);
    fprintf(stderr, "stand-in: VIOLATION: %s\n", buf);
}

static ev_t *find(const char *id)
{
    for (int i = 0; i < nevs; i++)
        if (id && !strcmp(evs[i].id, id))
            return &evs[i];
    return NULL;
}

static int json_text_equal(const char *a, size_t alen, const char *b)
{
    json_t *x = json_loadb(a, alen, JSON_DECODE_ANY, NULL),
           *y = json_loads(b, JSON_DECODE_ANY, NULL);
    int eq = x && y && json_equal(x, y);
    json_decref(x);
    json_decref(y);
    return eq;
}

/* Percent-decoding (CloudEvents HTTP binding header values). */
static void pct_decode(const char *in, char *out, size_t size)
{
    size_t j = 0;
    for (const char *p = in; *p && j + 1 < size; p++) {
        unsigned v;
        if (*p == '%' && p[1] && p[2] && sscanf(p + 1, "%2x", &v) == 1) {
            out[j++] = (char)v;
            p += 2;
        } else {
            out[j++] = *p;
        }
    }
    out[j] = '\0';
}

static void check_signature(st_req_t *q)
{
    const char *sig = st_header(q, "Webhook-Signature");
    long long t = 0;
    char v1[80] = "";
    if (!sig || sscanf(sig, "t=%lld,v1=%64[0-9a-f]", &t, v1) != 2 || strlen(v1) != 64) {
        violation("missing or malformed Webhook-Signature: %s", sig ? sig : "(none)");
        return;
    }
    if (llabs((long long)time(NULL) - t) > 300)
        violation("signature timestamp %lld is not current", t);
    char ts[24];
    snprintf(ts, sizeof(ts), "%lld", t);
    crypto_auth_hmacsha256_state st;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)SECRET, strlen(SECRET));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)ts, strlen(ts));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)".", 1);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)q->body, q->body_len);
    crypto_auth_hmacsha256_final(&st, mac);
    char hex[2 * sizeof(mac) + 1];
    sodium_bin2hex(hex, sizeof(hex), mac, sizeof(mac));
    if (strcmp(hex, v1))
        violation("HMAC does not verify (got %s, want %s)", v1, hex);
}

/* Checks one structured document against the event it names; returns it. */
static ev_t *check_envelope(const char *doc, size_t len, const char *idem, const char *tp_header)
{
    outbox_envelope_t env;
    char err[256];
    if (outbox_envelope_parse(doc, len, &env, err, sizeof(err)) != OUTBOX_OK) {
        violation("body is not a valid CloudEvents document: %s", err);
        return NULL;
    }
    ev_t *ev = find(env.id);
    if (!ev)
        violation("unknown event id %s", env.id);
    else if (idem && strcmp(idem, env.id))
        violation("Idempotency-Key %s != CloudEvents id %s", idem, env.id);
    else if (!env.subject || strcmp(env.subject, ev->key) || strcmp(env.type, ev->type) ||
             strcmp(env.source, "/tests/sinks") || !env.partitionkey ||
             strcmp(env.partitionkey, ev->key))
        violation("event %s: subject/type/source/partitionkey differ from the enqueued event",
                  env.id);
    else if (!json_text_equal(env.data, strlen(env.data), ev->payload))
        violation("event %s: data %s != payload %s", env.id, env.data, ev->payload);
    else if (ev->traceparent[0] ? !env.traceparent || strcmp(env.traceparent, ev->traceparent)
                                : !!env.traceparent)
        violation("event %s: traceparent extension wrong", env.id);
    else if (tp_header != (const char *)-1 &&
             (ev->traceparent[0] ? !tp_header || strcmp(tp_header, ev->traceparent) : !!tp_header))
        violation("event %s: traceparent header wrong (%s)", env.id,
                  tp_header ? tp_header : "none");
    outbox_envelope_term(&env);
    return ev;
}

static ev_t *check_binary(st_req_t *q)
{
    const char *ct = st_header(q, "Content-Type"), *id = st_header(q, "ce-id");
    char buf[256];
    if (!ct || strcmp(ct, "application/json"))
        violation("binary mode: Content-Type %s", ct ? ct : "(none)");
    const char *sv = st_header(q, "ce-specversion");
    if (!sv || strcmp(sv, "1.0"))
        violation("binary mode: ce-specversion %s", sv ? sv : "(none)");
    ev_t *ev = find(id);
    if (!ev) {
        violation("binary mode: unknown ce-id %s", id ? id : "(none)");
        return NULL;
    }
    const char *idem = st_header(q, "Idempotency-Key");
    if (!idem || strcmp(idem, id))
        violation("binary mode: Idempotency-Key %s != ce-id %s", idem ? idem : "(none)", id);
    const char *want[][2] = {{"ce-type", ev->type},
                             {"ce-source", "/tests/sinks"},
                             {"ce-subject", ev->key},
                             {"ce-partitionkey", ev->key}};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const char *v = st_header(q, want[i][0]);
        if (!v) {
            violation("binary mode: %s missing", want[i][0]);
            continue;
        }
        for (const char *p = v; *p; p++)
            if (*p == ' ' || *p == '"' || (unsigned char)*p >= 0x7f)
                violation("binary mode: %s not percent-encoded: %s", want[i][0], v);
        pct_decode(v, buf, sizeof(buf));
        if (strcmp(buf, want[i][1]))
            violation("binary mode: %s decodes to \"%s\", want \"%s\"", want[i][0], buf,
                      want[i][1]);
    }
    if (!st_header(q, "ce-time"))
        violation("binary mode: ce-time missing");
    if (!json_text_equal(q->body, q->body_len, ev->payload))
        violation("binary mode: body %s != payload %s", q->body, ev->payload);
    return ev;
}

static void answer(st_req_t *q, ev_t *ev, int action)
{
    switch (action) {
    case A_OK:
        q->status = 200;
        break;
    case A_500:
        q->status = 500;
        break;
    case A_503:
        q->status = 503;
        break;
    case A_429S:
        q->status = 429;
        snprintf(q->hdr_name, sizeof(q->hdr_name), "Retry-After");
        snprintf(q->hdr_value, sizeof(q->hdr_value), "2");
        break;
    case A_429D: {
        q->status = 429;
        time_t t = time(NULL) + 3;
        struct tm tm;
        gmtime_r(&t, &tm);
        snprintf(q->hdr_name, sizeof(q->hdr_name), "Retry-After");
        strftime(q->hdr_value, sizeof(q->hdr_value), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        break;
    }
    case A_400:
        q->status = 400;
        break;
    }
    st_buf_add(&q->resp, q->status == 200 ? "{\"ok\":true}" : "{\"error\":\"scripted\"}",
               q->status == 200 ? 11 : 20);
    if (ev && q->status == 200 && !ev->acked++)
        ev->first_ack = ++ack_counter;
}

static void handle(st_req_t *q, void *arg)
{
    pthread_mutex_lock(&mu);
    long long now = tu_now_ms();
    if (strcmp(q->method, "POST") || strcmp(q->url, path)) {
        violation("unexpected %s %s (want POST %s)", q->method, q->url, path);
        q->status = 404;
        pthread_mutex_unlock(&mu);
        return;
    }
    check_signature(q);
    if (!strcmp(mode, "batch")) {
        const char *ct = st_header(q, "Content-Type");
        if (!ct || strcmp(ct, "application/cloudevents-batch+json"))
            violation("batch mode: Content-Type %s", ct ? ct : "(none)");
        json_t *arr = json_loadb(q->body, q->body_len, 0, NULL);
        if (!json_is_array(arr) || !json_array_size(arr))
            violation("batch mode: body is not a non-empty JSON array");
        int fail = batch_fail_first > 0;
        batch_fail_first -= fail;
        batch_requests++;
        size_t i;
        json_t *el;
        json_array_foreach(arr, i, el)
        {
            char *s = json_dumps(el, JSON_COMPACT);
            ev_t *ev = s ? check_envelope(s, strlen(s), NULL, (const char *)-1) : NULL;
            free(s);
            if (ev) {
                ev->deliveries++;
                if (!fail && !ev->acked++)
                    ev->first_ack = ++ack_counter;
            }
        }
        json_decref(arr);
        answer(q, NULL, fail ? A_503 : A_OK);
        pthread_mutex_unlock(&mu);
        return;
    }
    ev_t *ev;
    if (!strcmp(mode, "binary")) {
        ev = check_binary(q);
    } else {
        const char *ct = st_header(q, "Content-Type");
        if (!ct || strcmp(ct, "application/cloudevents+json"))
            violation("structured mode: Content-Type %s", ct ? ct : "(none)");
        ev = check_envelope(q->body, q->body_len, st_header(q, "Idempotency-Key"),
                            st_header(q, "traceparent"));
        if (!st_header(q, "Idempotency-Key"))
            violation("structured mode: no Idempotency-Key");
    }
    if (!ev) {
        q->status = 422;
        pthread_mutex_unlock(&mu);
        return;
    }
    int n = ev->deliveries++;
    if (n < 16)
        ev->t[n] = now;
    int action = n < ev->nscript ? ev->script[n] : A_OK;
    if (action == A_SLOW) {
        pthread_mutex_unlock(&mu);
        tu_sleep_ms(2500); /* longer than publish_timeout: the client gives up */
        q->status = 200;
        return; /* an answer nobody reads: not counted as acknowledged */
    }
    answer(q, ev, action);
    pthread_mutex_unlock(&mu);
}

static ev_t *add(PGconn *c, const char *type, const char *key, int rev, const char *tp, int nscript,
                 ...)
{
    CHECK(nevs < MAX_EVS, "too many events");
    ev_t *ev = &evs[nevs];
    memset(ev, 0, sizeof(*ev));
    snprintf(ev->type, sizeof(ev->type), "%s", type);
    snprintf(ev->key, sizeof(ev->key), "%s", key);
    json_t *p =
        json_pack("{s:s, s:i, s:s}", "key", key, "rev", rev, "note", "multi\nline \"text\" ü");
    char *s = json_dumps(p, JSON_INDENT(1)); /* producer's own formatting, newlines included */
    snprintf(ev->payload, sizeof(ev->payload), "%s", s);
    free(s);
    json_decref(p);
    if (tp)
        snprintf(ev->traceparent, sizeof(ev->traceparent), "%s", tp);
    va_list ap;
    va_start(ap, nscript);
    for (int i = 0; i < nscript; i++)
        ev->script[i] = va_arg(ap, int);
    va_end(ap);
    ev->nscript = nscript;
    char id[OUTBOX_UUID_STRLEN + 1];
    pthread_mutex_lock(&mu);
    nevs++; /* visible to the stand-in before the relay can see the row */
    pthread_mutex_unlock(&mu);
    ev->seq = st_enqueue(c, "orders", type, key, ev->payload, tp, id);
    pthread_mutex_lock(&mu);
    memcpy(ev->id, id, sizeof(id));
    pthread_mutex_unlock(&mu);
    return ev;
}

/* Per key, the first acknowledgements happen in commit order. */
static void check_order(int from, int to)
{
    for (int i = from; i < to; i++)
        for (int j = i + 1; j < to; j++)
            if (!strcmp(evs[i].key, evs[j].key) && evs[i].acked && evs[j].acked)
                CHECK(evs[i].first_ack < evs[j].first_ack,
                      "key %s: event seq %lld acknowledged before seq %lld", evs[i].key, evs[j].seq,
                      evs[i].seq);
}

static void phase0_unreachable(void)
{
    char err[512];
    outbox_conf_t *conf = outbox_conf_new();
    st_conf_set(conf, "publish_timeout", "1s");
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", tu_free_port()); /* nobody listens */
    outbox_sink_t *s = outbox__sink_new(url, conf, "test", err, sizeof(err));
    CHECK(s, "sink_new: %s", err);
    outbox_msg_t m = {.seq = 1,
                      .topic = "t",
                      .type = "T",
                      .key = "k",
                      .payload = "{}",
                      .time = "2026-11-22T00:00:00Z"};
    outbox_uuid_v7(m.id);
    m.envelope = outbox__envelope_build(&m, &m.envelope_len, err, sizeof(err));
    CHECK(m.envelope, "envelope: %s", err);
    outbox_pub_result_t res = {0};
    CHECK(s->ops->publish(s, &m, 1, &res) == OUTBOX_ERR_BROKER,
          "publish to a closed port must return BROKER");
    CHECK(res.err == OUTBOX_ERR_BROKER && res.errstr[0], "res: %d %s", res.err, res.errstr);
    CHECK(s->ops->ping(s, err, sizeof(err)) == OUTBOX_ERR_BROKER,
          "ping to a closed port must fail");
    printf("phase 0: unreachable -> OUTBOX_ERR_BROKER (%s)\n", res.errstr);
    free(m.envelope);
    outbox__sink_destroy(s);
    outbox__sink_destroy(NULL);
    /* A bad URL is refused at open. */
    CHECK(!outbox__sink_new("http://", conf, "test", err, sizeof(err)),
          "http:// without host accepted");
    outbox_conf_destroy(conf);
}

int main(void)
{
    CHECK(sodium_init() >= 0, "sodium_init");
    phase0_unreachable();

    PGconn *c;
    const char *ci = st_setup_db("sink_http", &c);
    st_server_t srv = {0};
    st_server_start(&srv, handle, NULL);
    char url[128], err[512];

    /* ---- Phase A: structured, signed ---- */
    const char *tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    ev_t *e500 = NULL, *e429s = NULL, *e429d = NULL, *eslow = NULL, *ebad;
    for (int rev = 0; rev < 5; rev++) {
        for (int k = 0; k < 6; k++) {
            char key[16];
            snprintf(key, sizeof(key), "k%d", k);
            int i = rev * 6 + k;
            const char *type = rev == 0 ? "OrderCreated" : "OrderUpdated";
            ev_t *ev;
            if (i == 2)
                ev = e500 = add(c, type, key, rev, NULL, 1, A_500);
            else if (i == 8)
                ev = e429s = add(c, type, key, rev, tp, 1, A_429S);
            else if (i == 14)
                ev = e429d = add(c, type, key, rev, NULL, 1, A_429D);
            else if (i == 20)
                ev = eslow = add(c, type, key, rev, NULL, 1, A_SLOW);
            else if (i == 25)
                ev = add(c, type, key, rev, NULL, 2, A_500, A_503);
            else
                ev = add(c, type, key, rev, i % 4 == 0 ? tp : NULL, 0);
            (void)ev;
        }
    }
    ebad = add(c, "OrderCreated", "k-bad", 0, NULL, 1, A_400);
    int endA = nevs;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", srv.port);
    outbox_conf_t *conf = st_relay_conf(ci, url);
    st_conf_set(conf, "webhook_secret", SECRET);
    st_conf_set(conf, "publish_timeout", "1s");
    long long t0 = tu_now_ms();
    outbox_relay_t *r = st_relay_start(conf);
    st_wait_drained(c, 40000);
    long long tA = tu_now_ms() - t0;
    outbox_relay_destroy(r);

    pthread_mutex_lock(&mu);
    CHECK(violations == 0, "%d protocol violations; first: %s", violations, first_violation);
    for (int i = 0; i < endA; i++) {
        if (&evs[i] == ebad)
            continue;
        CHECK(evs[i].acked >= 1, "event %d (%s) never acknowledged (%d deliveries)", i, evs[i].id,
              evs[i].deliveries);
    }
    CHECK(ebad->deliveries == 1 && ebad->acked == 0, "400 event delivered %d times (want once)",
          ebad->deliveries);
    CHECK(e500->deliveries >= 2 && eslow->deliveries >= 2 && e429s->deliveries >= 2 &&
              e429d->deliveries >= 2,
          "scripted failures were not retried");
    long long gap500 = e500->t[1] - e500->t[0], gap429s = e429s->t[1] - e429s->t[0],
              gap429d = e429d->t[1] - e429d->t[0];
    check_order(0, endA);
    pthread_mutex_unlock(&mu);
    /* Retry-After: the relay may not come back before the server said so
     * (a lower bound fixed by the protocol), and a 500 (plain backoff from
     * 50 ms) comes back sooner than a 429 with Retry-After: 2. */
    CHECK(gap429s >= 1900, "Retry-After: 2 not honoured: retried after %lld ms", gap429s);
    CHECK(gap429d >= 1000, "Retry-After HTTP-date (+3 s) not honoured: retried after %lld ms",
          gap429d);
    CHECK(gap500 < gap429s,
          "a 500 retry (%lld ms) was not sooner than a Retry-After: 2 retry (%lld ms)", gap500,
          gap429s);
    PGresult *dl = tu_exec(c, "SELECT id, reason FROM outbox_dead_letter");
    CHECK(PQntuples(dl) == 1, "%d dead letters, want 1", PQntuples(dl));
    CHECK(!strcmp(PQgetvalue(dl, 0, 0), ebad->id) && !strcmp(PQgetvalue(dl, 0, 1), "rejected"),
          "dead letter %s reason %s", PQgetvalue(dl, 0, 0), PQgetvalue(dl, 0, 1));
    PQclear(dl);
    int deliveries = 0;
    for (int i = 0; i < endA; i++)
        deliveries += evs[i].deliveries;
    printf("phase A: %d events, %d requests, drained in %lld ms; retry gaps: 500 -> %lld ms, "
           "429 Retry-After: 2 -> %lld ms, 429 Retry-After: <date +3s> -> %lld ms; slow event "
           "delivered %d times\n",
           endA, deliveries, tA, gap500, gap429s, gap429d, eslow->deliveries);

    /* ---- Phase B: binary content mode ---- */
    pthread_mutex_lock(&mu);
    mode = "binary";
    path = "/bin";
    pthread_mutex_unlock(&mu);
    int startB = nevs, connsB = st_server_connections(&srv);
    const char *bkeys[] = {"car 7\"\xc3\xbc", "k%x", "plain"};
    for (int i = 0; i < 9; i++)
        add(c, i < 3 ? "CarCreated" : "CarUpdated", bkeys[i % 3], i, i == 4 ? tp : NULL,
            i == 5 ? 1 : 0, A_500);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/bin", srv.port);
    conf = st_relay_conf(ci, url);
    st_conf_set(conf, "webhook_secret", SECRET);
    st_conf_set(conf, "content_mode", "binary");
    r = st_relay_start(conf);
    st_wait_drained(c, 30000);
    outbox_relay_destroy(r);
    pthread_mutex_lock(&mu);
    CHECK(violations == 0, "%d protocol violations; first: %s", violations, first_violation);
    for (int i = startB; i < nevs; i++)
        CHECK(evs[i].acked >= 1, "binary event %d never acknowledged", i);
    check_order(startB, nevs);
    pthread_mutex_unlock(&mu);
    int reqB = 0;
    for (int i = startB; i < nevs; i++)
        reqB += evs[i].deliveries;
    connsB = st_server_connections(&srv) - connsB;
    /* Keep-alive: one connection per worker (2), not one per request. */
    CHECK(connsB <= 4 && connsB < reqB, "%d connections for %d requests: the handle is not reused",
          connsB, reqB);
    printf("phase B: %d binary-mode events delivered (ce-* headers percent-encoded), %d requests "
           "on %d connections\n",
           nevs - startB, reqB, connsB);

    /* ---- Phase C: batch mode, first batch answered 503 ---- */
    pthread_mutex_lock(&mu);
    mode = "batch";
    path = "/batch";
    batch_fail_first = 1;
    pthread_mutex_unlock(&mu);
    int startC = nevs;
    for (int i = 0; i < 12; i++) {
        char key[16];
        snprintf(key, sizeof(key), "b%d", i % 3);
        add(c, "BatchEvent", key, i, i % 5 == 0 ? tp : NULL, 0);
    }
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/batch", srv.port);
    conf = st_relay_conf(ci, url);
    st_conf_set(conf, "webhook_secret", SECRET);
    st_conf_set(conf, "webhook_batch", "true");
    r = st_relay_start(conf);
    st_wait_drained(c, 30000);
    outbox_relay_destroy(r);
    pthread_mutex_lock(&mu);
    CHECK(violations == 0, "%d protocol violations; first: %s", violations, first_violation);
    int redelivered = 0;
    for (int i = startC; i < nevs; i++) {
        CHECK(evs[i].acked >= 1, "batch event %d never acknowledged", i);
        redelivered += evs[i].deliveries > 1;
    }
    CHECK(redelivered >= 1, "the 503-answered batch was not retried");
    check_order(startC, nevs);
    printf("phase C: %d events in %d batch requests; %d redelivered after the scripted 503\n",
           nevs - startC, batch_requests, redelivered);
    pthread_mutex_unlock(&mu);

    st_server_stop(&srv);
    PQfinish(c);
    (void)err;
    printf("PASS sink_http\n");
    return 0;
}
