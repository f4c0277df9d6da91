/* JetStream durable pull consumer + inbox: each effect happens once per
 * event id although messages are redelivered:
 *   - the handler commits (inbox record + effect) and then "crashes" before
 *     the ack for every 4th message (returns an error -> Nak -> redelivery,
 *     seen as redelivered, inbox says already processed);
 *   - a second instance of the group fetches a batch and dies without
 *     acknowledging -> the server redelivers after ack wait;
 *   - nats-server is killed and restarted in the middle (consumer reconnects);
 *   - binary-mode events (ce-* headers) are parsed back into the envelope;
 *   - at the end the server loses its store: the running consumer notices
 *     its durable is gone and subscribes again.
 * Then: effects = events, no effect twice, every crash redelivered. */
#include "consumer/consumer.h"
#include "natstest.h"
#include "outbox/consumer.h"
#include "outbox/envelope.h"

#define N 300
#define KEYS 10
#define NBIN 20

typedef struct ctx_s {
    PGconn *db;
    int calls, redelivered, skipped, crashed, bin_ok;
} ctx_t;

static outbox_err_t handler(const outbox_delivery_t *d, void *opaque)
{
    ctx_t *c = opaque;
    c->calls++;
    if (d->redelivered)
        c->redelivered++;
    char err[256];
    PQclear(tu_exec(c->db, "BEGIN"));
    int is_new = 0;
    outbox_err_t e = outbox_inbox_record(c->db, "ledger", d->env.id, &is_new, err, sizeof(err));
    CHECK(e == OUTBOX_OK, "inbox: %s", err);
    if (is_new) {
        const char *p[3] = {d->env.id, d->env.subject ? d->env.subject : "",
                            d->env.data ? d->env.data : ""};
        PGresult *r =
            PQexecParams(c->db, "INSERT INTO effect (msg_id, key, data) VALUES ($1, $2, $3)", 3,
                         NULL, p, NULL, NULL, 0);
        CHECK(PQresultStatus(r) == PGRES_COMMAND_OK, "effect: %s", PQerrorMessage(c->db));
        PQclear(r);
    } else {
        c->skipped++;
    }
    PQclear(tu_exec(c->db, "COMMIT"));
    if (!strcmp(d->topic, "bills")) {
        CHECK(!strcmp(d->env.type, "BillIssued") && d->env.subject &&
                  !strcmp(d->env.subject, "bill-1"),
              "binary attrs: type %s subject %s", d->env.type,
              d->env.subject ? d->env.subject : "(null)");
        CHECK(d->env.traceparent &&
                  !strcmp(d->env.traceparent,
                          "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
              "binary traceparent");
        CHECK(d->env.data && strstr(d->env.data, "\"amount\""), "binary data %s", d->env.data);
        c->bin_ok++;
    }
    /* crash after commit, before the ack: every 4th first delivery */
    if (is_new && !d->redelivered && (d->env.id[35] % 4) == 0) {
        c->crashed++;
        return OUTBOX_ERR_BROKER;
    }
    return OUTBOX_OK;
}

static outbox_consumer_t *consumer(const tn_server_t *s, const char *name)
{
    outbox_conf_t *conf = outbox_conf_new();
    char err[512];
    const char *kv[] = {
        "nats_ack_wait", "1s", "nats_nak_delay", "50ms", "nats_fetch_batch", "25", "log_level",
        "warn",          NULL};
    for (int i = 0; kv[i]; i += 2)
        CHECK(outbox_conf_set(conf, kv[i], kv[i + 1], err, sizeof(err)) == OUTBOX_OK, "%s", err);
    const char *topics[] = {"ledger", "bills"};
    outbox_consumer_t *c =
        outbox_consumer_new(s->url, "ledger-svc", name, topics, 2, conf, err, sizeof(err));
    CHECK(c, "consumer_new: %s", err);
    outbox_conf_destroy(conf);
    return c;
}

int main(void)
{
    tn_require();
    const char *conninfo;
    PGconn *db = tn_db("nats_consumer", &conninfo);
    PQclear(tu_exec(
        db, "CREATE TABLE effect (msg_id uuid NOT NULL, key text, data text, at timestamptz "
            "DEFAULT clock_timestamp(), seq bigserial)"));
    tn_server_t srv = {0};
    tn_start(&srv);

    /* The consumer starts first (creates stream and durable), broker order. */
    PGconn *cdb = tu_connect(conninfo);
    ctx_t ctx = {.db = cdb};
    outbox_consumer_t *c1 = consumer(&srv, "ledger-1");
    CHECK(outbox_consumer_poll(c1, 100, handler, &ctx) == OUTBOX_OK, "first poll: %s",
          outbox_consumer_errstr(c1));

    outbox_relay_t *relay = tn_relay(conninfo, srv.url, NULL);
    for (int i = 0; i < N; i++) {
        char key[32], payload[64];
        snprintf(key, sizeof(key), "acct-%d", i % KEYS);
        snprintf(payload, sizeof(payload), "{\"n\":%d}", i);
        tn_enqueue(db, "ledger", "Posted", key, payload, NULL, NULL, NULL, NULL);
    }
    CHECK(tn_wait_drained(db, 20000) == 0, "relay did not drain");
    outbox_relay_destroy(relay);
    relay = tn_relay(conninfo, srv.url, (const char *const[]){"content_mode", "binary", NULL});
    for (int i = 0; i < NBIN; i++) {
        char payload[64];
        snprintf(payload, sizeof(payload), "{\"amount\":%d}", i);
        tn_enqueue(db, "bills", "BillIssued", "bill-1", payload, NULL,
                   "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", NULL, NULL);
    }
    CHECK(tn_wait_drained(db, 20000) == 0, "relay did not drain (binary)");
    outbox_relay_destroy(relay);

    /* A second instance of the group takes a batch and dies without
     * acknowledging (a plain nats.c client bound to the same durable). */
    {
        jsCtx *js = NULL;
        natsConnection *nc = tn_connect(&srv, &js);
        natsSubscription *sub = NULL;
        jsSubOptions so;
        jsSubOptions_Init(&so);
        so.Stream = "LEDGER";
        so.Consumer = "ledger-svc";
        natsStatus st = js_PullSubscribe(&sub, js, "ledger.>", "ledger-svc", NULL, &so, NULL);
        CHECK(st == NATS_OK, "bind to durable: %s", natsStatus_GetText(st));
        natsMsgList l = {0};
        natsSubscription_Fetch(&l, sub, 25, 2000, NULL);
        printf("second instance took %d messages and died without acking\n", l.Count);
        CHECK(l.Count > 0, "second instance got nothing");
        natsMsgList_Destroy(&l);
        natsSubscription_Destroy(sub);
        jsCtx_Destroy(js);
        natsConnection_Destroy(nc);
    }

    const int total = N + NBIN;
    long long end = tu_now_ms() + 40000;
    int restarted = 0, broker_errs = 0;
    while (tu_now_ms() < end) {
        outbox_err_t e = outbox_consumer_poll(c1, 200, handler, &ctx);
        if (e == OUTBOX_ERR_BROKER)
            broker_errs++;
        long long done = tu_query_ll(db, "SELECT count(*) FROM effect");
        if (!restarted && done >= total / 2) {
            tn_kill(&srv, SIGKILL);
            /* polls while it is down must fail cleanly */
            for (int i = 0; i < 3; i++)
                outbox_consumer_poll(c1, 100, handler, &ctx);
            tn_start(&srv);
            restarted = 1;
            printf("nats-server killed and restarted at %lld effects\n", done);
        }
        if (done >= total && restarted) {
            /* settle: let redeliveries in flight arrive */
            long long settle = tu_now_ms() + 2500;
            while (tu_now_ms() < settle)
                outbox_consumer_poll(c1, 200, handler, &ctx);
            break;
        }
    }
    long long effects = tu_query_ll(db, "SELECT count(*) FROM effect");
    long long distinct = tu_query_ll(db, "SELECT count(DISTINCT msg_id) FROM effect");
    long long inbox =
        tu_query_ll(db, "SELECT count(*) FROM outbox_inbox WHERE consumer = 'ledger'");
    printf("calls=%d effects=%lld distinct=%lld inbox=%lld crashed-before-ack=%d redelivered=%d "
           "skipped-by-inbox=%d binary=%d broker-errors-while-down=%d\n",
           ctx.calls, effects, distinct, inbox, ctx.crashed, ctx.redelivered, ctx.skipped,
           ctx.bin_ok, broker_errs);
    CHECK(effects == total, "effects %lld, want %d", effects, total);
    CHECK(distinct == effects, "an effect happened twice");
    CHECK(inbox == total, "inbox rows %lld", inbox);
    CHECK(ctx.crashed > 0 && ctx.redelivered >= ctx.crashed, "redeliveries %d < crashes %d",
          ctx.redelivered, ctx.crashed);
    CHECK(ctx.skipped >= ctx.crashed, "inbox skipped %d, crashes %d", ctx.skipped, ctx.crashed);
    CHECK(ctx.bin_ok >= NBIN, "binary messages handled: %d", ctx.bin_ok);

    /* The server comes back with an empty store: a relay re-creates the
     * stream, and the running consumer notices its durable is gone,
     * subscribes again and gets the new events. */
    tn_kill(&srv, SIGKILL);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'/jetstream", srv.dir);
    CHECK(system(cmd) == 0, "wipe store");
    tn_start(&srv);
    relay = tn_relay(conninfo, srv.url, NULL);
    for (int i = 0; i < 10; i++)
        tn_enqueue(db, "ledger", "Posted", "acct-new", "{\"n\":1}", NULL, NULL, NULL, NULL);
    CHECK(tn_wait_drained(db, 20000) == 0, "relay after store loss");
    outbox_relay_destroy(relay);
    long long t0 = tu_now_ms();
    while (tu_query_ll(db, "SELECT count(*) FROM effect") < total + 10 && tu_now_ms() - t0 < 20000)
        outbox_consumer_poll(c1, 200, handler, &ctx);
    CHECK(tu_query_ll(db, "SELECT count(*) FROM effect") == total + 10,
          "consumer did not recover after store loss");
    printf("store lost: consumer re-subscribed and got the 10 new events after %lld ms\n",
           tu_now_ms() - t0);
    outbox_consumer_destroy(c1);

    PQfinish(cdb);
    PQfinish(db);
    tn_cleanup(&srv);
    printf("PASS\n");
    return 0;
}
