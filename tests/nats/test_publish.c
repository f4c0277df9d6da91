/* The relay publishes to NATS JetStream; a plain nats.c client reads the
 * stream back: every event exactly once, subject <topic>.<type>,
 * Nats-Msg-Id = event id, a valid CloudEvents document (structured mode)
 * or ce-* headers with the data as body (binary mode), traceparent and the
 * event's headers carried (non-string values as their compact JSON text,
 * numbers as written), per-key order kept. */
#include <jansson.h>

#include "natstest.h"
#include "outbox/envelope.h"

#define N 600
#define KEYS 25
#define NBIN 40

static char ids[N][OUTBOX_UUID_STRLEN + 1];

static int find_id(const char *id)
{
    for (int i = 0; i < N; i++)
        if (!strcmp(ids[i], id))
            return i;
    return -1;
}

int main(void)
{
    tn_require();
    const char *conninfo;
    PGconn *db = tn_db("nats_publish", &conninfo);
    tn_server_t srv = {0};
    tn_start(&srv);

    /* ---- structured mode ---- */
    outbox_relay_t *relay =
        tn_relay(conninfo, srv.url, (const char *const[]){"workers", "3", NULL});
    long long t0 = tu_now_ms();
    for (int i = 0; i < N; i++) {
        char key[32], payload[128];
        snprintf(key, sizeof(key), "order-%d", i % KEYS);
        snprintf(payload, sizeof(payload), "{\"key\":\"%s\",\"n\":%d}", key, i);
        tn_enqueue(db, "orders", i % 3 ? "OrderUpdated" : "OrderCreated", key, payload, NULL,
                   "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", NULL, ids[i]);
    }
    CHECK(tn_wait_drained(db, 30000) == 0, "outbox not drained: %lld left",
          tu_query_ll(db, "SELECT count(*) FROM outbox"));
    long long ms = tu_now_ms() - t0;
    outbox_relay_destroy(relay);
    CHECK(tu_query_ll(db, "SELECT count(*) FROM outbox_dead_letter") == 0, "dead letters");

    jsCtx *js = NULL;
    natsConnection *nc = tn_connect(&srv, &js);
    long long count = tn_stream_msgs(js, "ORDERS");
    CHECK(count == N, "stream ORDERS holds %lld messages, want %d", count, N);
    static int seen[N];
    int last_n[KEYS];
    for (int k = 0; k < KEYS; k++)
        last_n[k] = -1;
    for (uint64_t seq = 1; seq <= (uint64_t)count; seq++) {
        natsMsg *m = NULL;
        natsStatus st = js_GetMsg(&m, js, "ORDERS", seq, NULL, NULL);
        CHECK(st == NATS_OK, "get msg %llu: %s", (unsigned long long)seq, natsStatus_GetText(st));
        outbox_envelope_t env;
        char err[256];
        CHECK(outbox_envelope_parse(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), &env, err,
                                    sizeof(err)) == OUTBOX_OK,
              "seq %llu: not CloudEvents: %s", (unsigned long long)seq, err);
        const char *msgid = tn_header(m, "Nats-Msg-Id");
        CHECK(!strcmp(msgid, env.id), "Nats-Msg-Id %s != ce id %s", msgid, env.id);
        int i = find_id(env.id);
        CHECK(i >= 0, "unknown id %s", env.id);
        CHECK(!seen[i], "id %s twice in the stream", env.id);
        seen[i] = 1;
        char subj[128];
        snprintf(subj, sizeof(subj), "orders.%s", env.type);
        CHECK(!strcmp(natsMsg_GetSubject(m), subj), "subject %s, want %s", natsMsg_GetSubject(m),
              subj);
        CHECK(!strcmp(env.type, i % 3 ? "OrderUpdated" : "OrderCreated"), "type %s for event %d",
              env.type, i);
        CHECK(!strcmp(tn_header(m, "content-type"), "application/cloudevents+json"),
              "content-type %s", tn_header(m, "content-type"));
        CHECK(env.traceparent && !strcmp(tn_header(m, "traceparent"), env.traceparent),
              "traceparent header");
        /* per-key order: n grows within a key */
        json_t *d = json_loads(env.data, 0, NULL);
        int n = (int)json_integer_value(json_object_get(d, "n"));
        json_decref(d);
        CHECK(n == i, "data.n %d for event %d", n, i);
        CHECK(n > last_n[i % KEYS], "key order-%d: event %d after %d", i % KEYS, n,
              last_n[i % KEYS]);
        last_n[i % KEYS] = n;
        CHECK(env.subject && !strcmp(env.subject, env.partitionkey), "subject/partitionkey");
        outbox_envelope_term(&env);
        natsMsg_Destroy(m);
    }
    for (int i = 0; i < N; i++)
        CHECK(seen[i], "event %d (%s) missing from the stream", i, ids[i]);
    printf("structured: %d events relayed and read back in %lld ms (%.0f events/s incl. enqueue)\n",
           N, ms, N * 1000.0 / (double)(ms ? ms : 1));

    /* ---- binary mode ---- */
    relay = tn_relay(conninfo, srv.url, (const char *const[]){"content_mode", "binary", NULL});
    char bids[NBIN][OUTBOX_UUID_STRLEN + 1];
    for (int i = 0; i < NBIN; i++) {
        char payload[64];
        snprintf(payload, sizeof(payload), "{\"amount\":%d}", i);
        tn_enqueue(db, "payments", "PaymentCaptured", "pay-1", payload, NULL,
                   "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                   "{\"x-tenant\":\"acme\",\"Nats-Msg-Id\":\"evil\",\"retries\":3,\"ratio\":1.50,"
                   "\"big\":123456789012345678901234567890,\"flag\":true,\"none\":null,"
                   "\"obj\":{\"a\": [1, 2]}}",
                   bids[i]);
    }
    CHECK(tn_wait_drained(db, 30000) == 0, "binary: outbox not drained");
    outbox_relay_destroy(relay);
    CHECK(tn_stream_msgs(js, "PAYMENTS") == NBIN, "stream PAYMENTS holds %lld",
          tn_stream_msgs(js, "PAYMENTS"));
    for (int i = 0; i < NBIN; i++) {
        natsMsg *m = NULL;
        CHECK(js_GetMsg(&m, js, "PAYMENTS", (uint64_t)i + 1, NULL, NULL) == NATS_OK, "get %d", i);
        char want[64];
        snprintf(want, sizeof(want), "{\"amount\":%d}", i);
        CHECK(natsMsg_GetDataLength(m) == (int)strlen(want) &&
                  !memcmp(natsMsg_GetData(m), want, strlen(want)),
              "binary body %.*s, want %s", natsMsg_GetDataLength(m), natsMsg_GetData(m), want);
        CHECK(!strcmp(tn_header(m, "Nats-Msg-Id"), bids[i]), "binary Nats-Msg-Id %s",
              tn_header(m, "Nats-Msg-Id"));
        CHECK(!strcmp(tn_header(m, "ce-id"), bids[i]), "ce-id");
        CHECK(!strcmp(tn_header(m, "ce-specversion"), "1.0"), "ce-specversion");
        CHECK(!strcmp(tn_header(m, "ce-type"), "PaymentCaptured"), "ce-type");
        CHECK(!strcmp(tn_header(m, "ce-subject"), "pay-1"), "ce-subject");
        CHECK(!strcmp(tn_header(m, "ce-source"), "/outbox"), "ce-source");
        CHECK(*tn_header(m, "ce-time"), "ce-time");
        CHECK(!strcmp(tn_header(m, "content-type"), "application/json"), "content-type");
        CHECK(!strcmp(tn_header(m, "traceparent"),
                      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
              "traceparent");
        CHECK(!strcmp(tn_header(m, "x-tenant"), "acme"), "event header x-tenant");
        /* Not strings: their compact JSON text, numbers as written (through
         * PostgreSQL jsonb, which keeps them exact). */
        CHECK(!strcmp(tn_header(m, "retries"), "3"), "retries: %s", tn_header(m, "retries"));
        CHECK(!strcmp(tn_header(m, "ratio"), "1.50"), "ratio: %s", tn_header(m, "ratio"));
        CHECK(!strcmp(tn_header(m, "big"), "123456789012345678901234567890"), "big: %s",
              tn_header(m, "big"));
        CHECK(!strcmp(tn_header(m, "flag"), "true"), "flag: %s", tn_header(m, "flag"));
        CHECK(!strcmp(tn_header(m, "none"), "null"), "none: %s", tn_header(m, "none"));
        CHECK(!strcmp(tn_header(m, "obj"), "{\"a\":[1,2]}"), "obj: %s", tn_header(m, "obj"));
        CHECK(strcmp(tn_header(m, "Nats-Msg-Id"), "evil"), "event header overrode Nats-Msg-Id");
        CHECK(!strcmp(natsMsg_GetSubject(m), "payments.PaymentCaptured"), "subject");
        natsMsg_Destroy(m);
    }
    printf("binary: %d events with ce-* headers, traceparent and event headers\n", NBIN);

    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    PQfinish(db);
    tn_cleanup(&srv);
    printf("PASS\n");
    return 0;
}
