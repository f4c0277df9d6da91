/* JetStream drops a re-published event id (Nats-Msg-Id) within the duplicate
 * window, and the sink counts that PubAck (Duplicate) as a success:
 *   1. the sink publishes the same event twice -> both confirmed, one
 *      message in the stream, one duplicate ack;
 *   2. a plain nats.c publish with the same Nats-Msg-Id -> PubAck.Duplicate;
 *   3. through the relay: deliver an event, put the same event id back in
 *      the outbox (a relay that crashed before acknowledging would do
 *      that) -> delivered again, stream count unchanged;
 *   4. per-event results (calls of one event per key, as the engine makes
 *      them): an event that cannot form a subject is rejected and the
 *      events after it still go through; a deadline already past sends
 *      nothing (OUTBOX_ERR_TIMEOUT, not sent);
 *   5. an event over the server's max_payload is rejected (dead letter),
 *      the event beside it goes through. */
#include "core/conf.h"
#include "core/message.h"
#include "natstest.h"
#include "core/util.h"
#include "broker/nats.h"
#include "sink/sink.h"

static void make_msg(outbox_msg_t *m, const char *id, const char *topic, const char *type,
                     const char *key)
{
    memset(m, 0, sizeof(*m));
    snprintf(m->id, sizeof(m->id), "%s", id);
    m->topic = topic;
    m->type = type;
    m->key = key;
    m->source = "/test";
    m->payload = "{\"v\":1}";
    m->time = "2026-11-22T10:00:00Z";
    char err[256];
    m->envelope = outbox__envelope_build(m, &m->envelope_len, err, sizeof(err));
    CHECK(m->envelope, "envelope: %s", err);
}

int main(void)
{
    tn_require();
    const char *conninfo;
    PGconn *db = tn_db("nats_dedup", &conninfo); /* skips now, not half-way, without PostgreSQL */
    tn_server_t srv = {0};
    tn_start(&srv);
    jsCtx *js = NULL;
    natsConnection *nc = tn_connect(&srv, &js);
    char err[512];

    /* 1. the sink, twice */
    outbox_conf_t *conf = outbox_conf_new();
    CHECK(outbox_conf_set(conf, "publish_timeout", "3s", err, sizeof(err)) == OUTBOX_OK, "%s", err);
    outbox_sink_t *sink = outbox__sink_new(srv.url, conf, "test", err, sizeof(err));
    CHECK(sink, "sink_new: %s", err);
    char id[OUTBOX_UUID_STRLEN + 1];
    outbox_uuid_v7(id);
    outbox_msg_t m;
    make_msg(&m, id, "dedup", "Thing", "k1");
    outbox_pub_result_t res;
    CHECK(sink->ops->publish(sink, &m, 1, &res) == OUTBOX_OK && res.err == OUTBOX_OK,
          "first publish: %s", res.errstr);
    CHECK(tn_stream_msgs(js, "DEDUP") == 1, "after first publish: %lld",
          tn_stream_msgs(js, "DEDUP"));
    CHECK(outbox__nats_sink_duplicates(sink) == 0, "no duplicate yet");
    CHECK(sink->ops->publish(sink, &m, 1, &res) == OUTBOX_OK && res.err == OUTBOX_OK,
          "second publish: %s", res.errstr);
    CHECK(outbox__nats_sink_duplicates(sink) == 1, "duplicate acks: %llu",
          (unsigned long long)outbox__nats_sink_duplicates(sink));
    CHECK(tn_stream_msgs(js, "DEDUP") == 1, "stream grew on a re-publish: %lld",
          tn_stream_msgs(js, "DEDUP"));
    printf("sink: same id published twice -> 1 message, 1 duplicate PubAck\n");

    /* 2. a plain client re-publishing the id */
    natsMsg *raw = NULL;
    natsMsg_Create(&raw, "dedup.Thing", NULL, m.envelope, (int)m.envelope_len);
    natsMsgHeader_Set(raw, "Nats-Msg-Id", id);
    jsPubAck *pa = NULL;
    natsStatus st = js_PublishMsg(&pa, js, raw, NULL, NULL);
    CHECK(st == NATS_OK && pa, "raw publish: %s", natsStatus_GetText(st));
    CHECK(pa->Duplicate, "PubAck.Duplicate not set for a re-published Nats-Msg-Id");
    jsPubAck_Destroy(pa);
    natsMsg_Destroy(raw);
    CHECK(tn_stream_msgs(js, "DEDUP") == 1, "stream grew: %lld", tn_stream_msgs(js, "DEDUP"));
    printf("client: PubAck.Duplicate=true, stream count unchanged\n");

    /* 4. per-event results in one call (one event per key, as the engine
     *    makes them): a ok, b rejected (bad subject), c and d still sent */
    outbox_msg_t batch[4];
    char ids[4][OUTBOX_UUID_STRLEN + 1];
    for (int i = 0; i < 4; i++)
        outbox_uuid_v7(ids[i]);
    make_msg(&batch[0], ids[0], "dedup", "Thing", "a");
    make_msg(&batch[1], ids[1], "dedup", "Bad Type", "b");
    make_msg(&batch[2], ids[2], "dedup", "Thing", "c");
    make_msg(&batch[3], ids[3], "dedup", "Thing", "d");
    outbox_pub_result_t bres[4];
    CHECK(sink->ops->publish(sink, batch, 4, bres) == OUTBOX_OK, "batch publish");
    CHECK(bres[0].err == OUTBOX_OK, "a: %s", bres[0].errstr);
    CHECK(bres[1].err == OUTBOX_ERR_REJECTED && !bres[1].not_sent, "b should be rejected: %d %s",
          bres[1].err, bres[1].errstr);
    CHECK(bres[2].err == OUTBOX_OK, "c (after the rejected one): %s", bres[2].errstr);
    CHECK(bres[3].err == OUTBOX_OK, "d: %s", bres[3].errstr);
    CHECK(tn_stream_msgs(js, "DEDUP") == 4, "stream: %lld, want 4", tn_stream_msgs(js, "DEDUP"));
    printf("per event: a rejected event does not stop the others (%s)\n", bres[1].errstr);

    /* 4b. a deadline already past: nothing sent, nothing charged */
    for (int i = 0; i < 4; i++) {
        free(batch[i].envelope);
        outbox_uuid_v7(ids[i]);
        make_msg(&batch[i], ids[i], "dedup", "Thing", i % 2 ? "e" : "f");
    }
    sink->deadline_ms = outbox__now_ms() - 1;
    CHECK(sink->ops->publish(sink, batch, 2, bres) == OUTBOX_OK, "publish past deadline");
    CHECK(bres[0].err == OUTBOX_ERR_TIMEOUT && bres[0].not_sent &&
              bres[1].err == OUTBOX_ERR_TIMEOUT && bres[1].not_sent,
          "past deadline: %d/%d %d/%d", bres[0].err, bres[0].not_sent, bres[1].err,
          bres[1].not_sent);
    sink->deadline_ms = 0;
    CHECK(tn_stream_msgs(js, "DEDUP") == 4, "stream grew past the deadline: %lld",
          tn_stream_msgs(js, "DEDUP"));

    /* 5. an event larger than the server's max_payload (1 MB) is rejected for good */
    {
        size_t big = 2u << 20;
        char *payload = malloc(big + 16);
        CHECK(payload, "oom");
        payload[0] = '"';
        memset(payload + 1, 'x', big);
        payload[big + 1] = '"';
        payload[big + 2] = '\0';
        outbox_msg_t bm[2];
        char bid[2][OUTBOX_UUID_STRLEN + 1];
        outbox_uuid_v7(bid[0]);
        outbox_uuid_v7(bid[1]);
        make_msg(&bm[0], bid[0], "dedup", "Thing", "c");
        free(bm[0].envelope);
        bm[0].payload = payload;
        bm[0].envelope = outbox__envelope_build(&bm[0], &bm[0].envelope_len, err, sizeof(err));
        make_msg(&bm[1], bid[1], "dedup", "Thing", "d");
        outbox_pub_result_t r2[2];
        CHECK(sink->ops->publish(sink, bm, 2, r2) == OUTBOX_OK, "big publish call");
        CHECK(r2[0].err == OUTBOX_ERR_REJECTED, "oversized event: %d %s", r2[0].err, r2[0].errstr);
        CHECK(r2[1].err == OUTBOX_OK, "small event beside it: %s", r2[1].errstr);
        printf("oversized: rejected (%s)\n", r2[0].errstr);
        free(bm[0].envelope);
        free(bm[1].envelope);
        free(payload);
    }
    for (int i = 0; i < 4; i++)
        free(batch[i].envelope);
    free(m.envelope);
    outbox__sink_destroy(sink);
    outbox_conf_destroy(conf);

    /* 3. through the relay: the same event id enqueued again after delivery */
    outbox_relay_t *relay = tn_relay(conninfo, srv.url, NULL);
    char eid[OUTBOX_UUID_STRLEN + 1];
    tn_enqueue(db, "relayed", "OrderCreated", "o-1", "{\"n\":1}", NULL, NULL, NULL, eid);
    CHECK(tn_wait_drained(db, 15000) == 0, "first delivery");
    CHECK(tn_stream_msgs(js, "RELAYED") == 1, "after first delivery: %lld",
          tn_stream_msgs(js, "RELAYED"));
    tn_enqueue(db, "relayed", "OrderCreated", "o-1", "{\"n\":1}", eid, NULL, NULL, NULL);
    CHECK(tn_wait_drained(db, 15000) == 0, "second delivery");
    CHECK(tu_query_ll(db, "SELECT count(*) FROM outbox_dead_letter") == 0, "dead letter");
    CHECK(tn_stream_msgs(js, "RELAYED") == 1, "re-delivered id stored twice: %lld",
          tn_stream_msgs(js, "RELAYED"));
    outbox_relay_destroy(relay);
    printf("relay: same event id delivered twice -> 1 message in the stream\n");

    PQfinish(db);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    tn_cleanup(&srv);
    printf("PASS\n");
    return 0;
}
