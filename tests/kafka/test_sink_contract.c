/* The Kafka sink's publish contract, against a 3-broker mock cluster (real
 * protocol over loopback), read back with kcat:
 *  - bad URLs and properties fail at open with a clear error, no secret;
 *  - every call holds at most one event per key, as the engine makes them
 *    (run_calls below plays the engine's part);
 *  - a call is confirmed per message from delivery reports, keyed, valid
 *    CloudEvents with the ce_* / content-type / traceparent headers and the
 *    event's own headers, non-string values as their JSON text;
 *  - binary mode: value = data, attributes as ce_* headers;
 *  - a message too large is OUTBOX_ERR_REJECTED and only it: the other
 *    events of the call go through;
 *  - sink->deadline_ms: a deadline already past sends nothing (not_sent,
 *    OUTBOX_ERR_TIMEOUT); a short one is kept;
 *  - retriable produce errors are retried inside the call, in order;
 *  - all brokers down: publish returns OUTBOX_ERR_BROKER within the publish
 *    timeout (plus the purge/probe grace), ping fails; back up: ping and
 *    publish succeed. */
#include "kafka_common.h"

#include "core/message.h"
#include "core/util.h"
#include "sink/sink.h"

/* The events' own headers: a string, a spoofed reserved name, and values
 * that are not strings (sent as their compact JSON text, numbers as written). */
#define HEADERS                                                                                    \
    "{\"tenant\":\"acme\",\"ce_id\":\"spoofed\",\"retries\": 3,\"ratio\":1.50,"                    \
    "\"big\":123456789012345678901234567890,\"flag\":true,\"none\":null,"                          \
    "\"obj\":{ \"a\": [1, 2] }}"

/* publish_timeout timeout_ms, stretched by tu_ms: the mock cluster runs in
 * this process, as slow as it is under valgrind or the sanitizers. */
static outbox_conf_t *sink_conf(long timeout_ms, const char *mode, const char *props)
{
    outbox_conf_t *conf = outbox_conf_new();
    char timeout[32];
    snprintf(timeout, sizeof(timeout), "%ldms", tu_ms(timeout_ms));
    kt_conf_set(conf, "publish_timeout", timeout);
    kt_conf_set(conf, "content_mode", mode);
    kt_conf_set(conf, "kafka_properties", props);
    kt_conf_set(conf, "log_level", getenv("KT_LOG_LEVEL") ? getenv("KT_LOG_LEVEL") : "error");
    return conf;
}

/* n messages on topic, key prefix+(i % nkeys), payload {"seq":from+i,...}
 * (pad extra bytes into the payload of message big_at, if >= 0). */
static outbox_msg_t *make_msgs(const char *topic, const char *prefix, int from, int n, int nkeys,
                               int big_at, int pad)
{
    outbox_msg_t *m = calloc((size_t)n, sizeof(*m));
    for (int i = 0; i < n; i++) {
        char key[64];
        snprintf(key, sizeof(key), "%s%d", prefix, (from + i) % nkeys);
        size_t plen = 128 + (i == big_at ? (size_t)pad : 0);
        char *payload = malloc(plen);
        int w = snprintf(payload, plen, "{\"seq\":%d,\"key\":\"%s\",\"pad\":\"", from + i, key);
        if (i == big_at) {
            memset(payload + w, 'x', (size_t)pad);
            w += pad;
        }
        snprintf(payload + w, plen - (size_t)w, "\"}");
        outbox_uuid_v7(m[i].id);
        m[i].seq = from + i;
        m[i].topic = topic;
        m[i].type = "ContractTested";
        m[i].key = strdup(key);
        m[i].source = "/tests/kafka";
        m[i].payload = payload;
        m[i].headers = HEADERS;
        m[i].traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        m[i].time = "2026-11-22T12:00:00Z";
        char err[256];
        m[i].envelope = outbox__envelope_build(&m[i], &m[i].envelope_len, err, sizeof(err));
        CHECK(m[i].envelope, "envelope: %s", err);
    }
    return m;
}

static void free_msgs(outbox_msg_t *m, int n)
{
    for (int i = 0; i < n; i++) {
        free((char *)m[i].key);
        free((char *)m[i].payload);
        free(m[i].envelope);
    }
    free(m);
}

static outbox_sink_t *open_sink(const kt_cluster_t *cl, outbox_conf_t *conf)
{
    char err[512];
    outbox_sink_t *s = outbox__sink_new(cl->url, conf, "worker-t", err, sizeof(err));
    CHECK(s, "sink_new: %s", err);
    return s;
}

static void expect_open_fails(const char *url, const char *props, const char *must,
                              const char *must_not)
{
    outbox_conf_t *conf = sink_conf(3000, "structured", props);
    char err[512] = "";
    outbox_sink_t *s = outbox__sink_new(url, conf, "w", err, sizeof(err));
    CHECK(!s, "sink_new(%s, %s) should fail", url, props);
    CHECK(strstr(err, must), "error \"%s\" does not mention \"%s\"", err, must);
    CHECK(!must_not || !strstr(err, must_not), "error \"%s\" leaks \"%s\"", err, must_not);
    printf("open refused as expected: %s\n", err);
    outbox_conf_destroy(conf);
}

/* Plays the engine: publishes the pending events of m[0..n) (done[i] == 0)
 * in calls of at most one event per key (the oldest pending event of each
 * key), in order. A key whose event failed sends nothing more; the calls
 * stop at the first call with a failure or when the call fails as a whole
 * (*perr). Returns the number of events still pending. */
static int run_calls(outbox_sink_t *s, outbox_msg_t *m, int n, int *done, outbox_err_t *perr)
{
    outbox_msg_t *call = calloc((size_t)n, sizeof(*call));
    int *idx = calloc((size_t)n, sizeof(*idx));
    outbox_pub_result_t *res = calloc((size_t)n, sizeof(*res));
    *perr = OUTBOX_OK;
    for (;;) {
        int k = 0;
        for (int i = 0; i < n; i++) {
            int first = !done[i];
            for (int j = 0; first && j < i; j++)
                first = done[j] || strcmp(m[j].key, m[i].key);
            if (first) {
                idx[k] = i;
                call[k++] = m[i];
            }
        }
        if (!k)
            break;
        memset(res, 0, (size_t)k * sizeof(*res));
        s->deadline_ms = 0;
        *perr = s->ops->publish(s, call, (size_t)k, res);
        int failed = *perr != OUTBOX_OK;
        for (int j = 0; j < k && !failed; j++)
            failed = res[j].err != OUTBOX_OK;
        for (int j = 0; j < k && *perr == OUTBOX_OK; j++)
            if (res[j].err == OUTBOX_OK)
                done[idx[j]] = 1;
        if (failed) {
            printf("call of %d events: %s; first failure: %s\n", k, outbox_err_str(*perr),
                   res[0].err ? res[0].errstr : "(see results)");
            break;
        }
    }
    int left = 0;
    for (int i = 0; i < n; i++)
        left += !done[i];
    free(call);
    free(idx);
    free(res);
    return left;
}

static int has_header(const kt_rec_t *r, const char *kv)
{
    return strstr(r->headers, kv) != NULL;
}

int main(void)
{
    char err[512];
    outbox_err_t perr;
    /* Configuration errors are caught at open, before any broker is involved. */
    expect_open_fails("kafka://", "", "no broker list", NULL);
    expect_open_fails("kafka://localhost", "", "not host:port", NULL);
    expect_open_fails("kafka://127.0.0.1:9092", "no.such.property=1", "no.such.property", NULL);
    expect_open_fails("kafka://127.0.0.1:9092", "my.password=hunter2", "my.password", "hunter2");
    expect_open_fails("kafka://127.0.0.1:9092", "linger.ms", "not name=value", NULL);

    kt_cluster_t cl;
    kt_cluster_start(&cl, 3);
    kt_topic(&cl, "contract", 4, 3);
    kt_topic(&cl, "contract-big", 2, 3);
    kt_topic(&cl, "contract-bin", 2, 3);
    kt_topic(&cl, "contract-err", 3, 3);
    kt_topic(&cl, "contract-down", 3, 3);

    /* 1. A structured batch, confirmed per message. */
    outbox_conf_t *conf = sink_conf(3000, "structured", "");
    outbox_sink_t *s = open_sink(&cl, conf);
    /* The cluster answers: a state to wait for (its brokers run in this
     * process, slow under valgrind), not the first ping's luck. */
    long long tp = tu_now_ms();
    while (s->ops->ping(s, err, sizeof(err)) != OUTBOX_OK)
        CHECK(tu_now_ms() - tp < tu_ms(10000), "ping: %s", err);
    int n = 200;
    outbox_msg_t *m = make_msgs("contract", "c", 0, n, 10, -1, 0);
    outbox_pub_result_t *res;
    int *done = calloc(1000, sizeof(int));
    long long t0 = tu_now_ms();
    CHECK(run_calls(s, m, n, done, &perr) == 0 && perr == OUTBOX_OK, "publish: %s",
          outbox_err_str(perr));
    printf("published %d structured events (calls of 10 keys) in %lld ms\n", n, tu_now_ms() - t0);
    long got;
    kt_rec_t *recs = kt_kcat_read(&cl, "contract", 1, &got);
    CHECK(got == n, "read %ld of %d", got, n);
    CHECK(kt_check(recs, got, "c", n, 10) == 0, "duplicates in a clean run");
    for (long i = 0; i < got; i++) {
        char want[128];
        snprintf(want, sizeof(want), "ce_id=%s", recs[i].env.id);
        CHECK(has_header(&recs[i], want), "headers %s lack %s", recs[i].headers, want);
        CHECK(
            has_header(&recs[i], "content-type=application/cloudevents+json") &&
                has_header(&recs[i], "ce_specversion=1.0") &&
                has_header(&recs[i], "ce_type=ContractTested") &&
                has_header(&recs[i], "ce_source=/tests/kafka") &&
                has_header(&recs[i],
                           "traceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01") &&
                has_header(&recs[i], "tenant=acme") && !has_header(&recs[i], "spoofed"),
            "headers: %s", recs[i].headers);
        CHECK(has_header(&recs[i], "retries=3") && has_header(&recs[i], "ratio=1.50") &&
                  has_header(&recs[i], "big=123456789012345678901234567890") &&
                  has_header(&recs[i], "flag=true") && has_header(&recs[i], "none=null") &&
                  has_header(&recs[i], "obj={\"a\":[1,2]}"),
              "non-string headers not sent as their JSON text: %s", recs[i].headers);
        CHECK(recs[i].env.traceparent, "no traceparent in the envelope");
    }
    kt_recs_free(recs, got);
    free_msgs(m, n);

    /* 2. Too large: rejected for good, alone; the other events of the call
     * (one per key) go through. */
    outbox_conf_t *conf_small = sink_conf(3000, "structured", "message.max.bytes=2000");
    outbox_sink_t *s_small = open_sink(&cl, conf_small);
    m = make_msgs("contract-big", "b", 0, 4, 4, 2, 5000); /* keys b0..b3; #2 (b2) is big */
    res = calloc(4, sizeof(*res));
    CHECK(s_small->ops->publish(s_small, m, 4, res) == OUTBOX_OK, "publish big");
    printf("too large: [%s] [%s] [%s] [%s]\n", outbox_err_str(res[0].err),
           outbox_err_str(res[1].err), res[2].errstr, outbox_err_str(res[3].err));
    CHECK(res[0].err == OUTBOX_OK && res[1].err == OUTBOX_OK && res[3].err == OUTBOX_OK,
          "small ones");
    CHECK(res[2].err == OUTBOX_ERR_REJECTED && !res[2].not_sent, "too large: %s", res[2].errstr);
    free_msgs(m, 4);
    m = make_msgs("contract-big", "b", 4, 4, 4, 0, 5000); /* #0 (b0) big: the rest still goes */
    CHECK(s_small->ops->publish(s_small, m, 4, res) == OUTBOX_OK, "publish big 2");
    CHECK(res[0].err == OUTBOX_ERR_REJECTED && res[1].err == OUTBOX_OK && res[2].err == OUTBOX_OK &&
              res[3].err == OUTBOX_OK,
          "a rejection stopped other events: %d %d %d %d (%s)", res[0].err, res[1].err, res[2].err,
          res[3].err, res[0].errstr);
    recs = kt_kcat_read(&cl, "contract-big", 1, &got);
    CHECK(got == 6, "contract-big holds %ld records, want 6 (0, 1, 3, 5, 6, 7)", got);
    for (long i = 0; i < got; i++)
        CHECK(recs[i].seq != 2 && recs[i].seq != 4, "rejected seq %d published", recs[i].seq);
    kt_recs_free(recs, got);
    free_msgs(m, 4);

    /* 2b. The deadline: one already past sends nothing (not sent, nothing
     * charged); a short one is kept. */
    m = make_msgs("contract-big", "late", 0, 4, 4, -1, 0);
    s_small->deadline_ms = outbox__now_ms() - 1;
    CHECK(s_small->ops->publish(s_small, m, 4, res) == OUTBOX_OK, "publish past deadline");
    for (int i = 0; i < 4; i++)
        CHECK(res[i].err == OUTBOX_ERR_TIMEOUT && res[i].not_sent, "past deadline %d: %d %s", i,
              res[i].err, res[i].errstr);
    s_small->deadline_ms = outbox__now_ms() + tu_ms(1500);
    t0 = tu_now_ms();
    CHECK(s_small->ops->publish(s_small, m, 4, res) == OUTBOX_OK, "publish with deadline");
    long long took_dl = tu_now_ms() - t0;
    for (int i = 0; i < 4; i++)
        CHECK(res[i].err == OUTBOX_OK, "deadline 1.5 s, event %d: %s", i, res[i].errstr);
    CHECK(took_dl <= tu_ms(1500 + 100), "publish took %lld ms with a %ld ms deadline", took_dl,
          tu_ms(1500));
    s_small->deadline_ms = 0;
    recs = kt_kcat_read(&cl, "contract-big", 1, &got);
    CHECK(got == 10, "contract-big holds %ld records, want 10 (4 after the deadline tests)", got);
    kt_recs_free(recs, got);
    printf("deadline: past -> 4 not sent; 1.5 s -> 4 confirmed in %lld ms\n", took_dl);
    free_msgs(m, 4);
    free(res);
    outbox__sink_destroy(s_small);
    outbox_conf_destroy(conf_small);

    /* 3. Binary mode. */
    outbox_conf_t *conf_bin = sink_conf(3000, "binary", "");
    outbox_sink_t *s_bin = open_sink(&cl, conf_bin);
    m = make_msgs("contract-bin", "x", 0, 6, 6, -1, 0);
    res = calloc(6, sizeof(*res));
    CHECK(s_bin->ops->publish(s_bin, m, 6, res) == OUTBOX_OK, "publish binary");
    for (int i = 0; i < 6; i++)
        CHECK(res[i].err == OUTBOX_OK, "binary %d: %s", i, res[i].errstr);
    recs = kt_kcat_read(&cl, "contract-bin", 0, &got);
    CHECK(got == 6, "binary: %ld records", got);
    CHECK(kt_check(recs, got, "x", 6, 6) == 0, "binary duplicates");
    for (long i = 0; i < got; i++) {
        char want[64];
        snprintf(want, sizeof(want), "ce_subject=%s", recs[i].key);
        CHECK(recs[i].value[0] == '{' && strstr(recs[i].value, "\"seq\":") &&
                  !strstr(recs[i].value, "specversion"),
              "binary value is not the data: %s", recs[i].value);
        CHECK(has_header(&recs[i], "ce_specversion=1.0") && has_header(&recs[i], want) &&
                  has_header(&recs[i], "content-type=application/json") &&
                  has_header(&recs[i], "ce_id=") &&
                  has_header(&recs[i], "ce_time=2026-11-22T12:00:00Z") &&
                  has_header(&recs[i], "ce_traceparent="),
              "binary headers: %s", recs[i].headers);
    }
    kt_recs_free(recs, got);
    free_msgs(m, 6);
    free(res);
    outbox__sink_destroy(s_bin);
    outbox_conf_destroy(conf_bin);

    /* 4. Retriable produce errors are retried by the producer, in order. */
    rd_kafka_mock_push_request_errors(
        cl.mc, 0 /* Produce */, 6, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        RD_KAFKA_RESP_ERR__TRANSPORT, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE);
    n = 300;
    m = make_msgs("contract-err", "e", 0, n, 7, -1, 0);
    memset(done, 0, 1000 * sizeof(int));
    t0 = tu_now_ms();
    int left = run_calls(s, m, n, done, &perr);
    printf("with 6 injected produce errors: %d/%d confirmed in %lld ms\n", n - left, n,
           tu_now_ms() - t0);
    CHECK(left == 0 && perr == OUTBOX_OK, "retriable errors surfaced: %d/%d left", left, n);
    recs = kt_kcat_read(&cl, "contract-err", 1, &got);
    long dups = kt_check(recs, got, "e", n, 7);
    printf("contract-err: %ld records, %ld duplicates\n", got, dups);
    CHECK(dups == 0, "idempotent producer let %ld duplicates through", dups);
    kt_recs_free(recs, got);
    free_msgs(m, n);

    /* 5. A fatal idempotence error (the broker says the producer's sequence
     * is out of order): the sink drops the producer, the next call uses a
     * new one; retrying the failed events in order leaves no gap. */
    kt_topic(&cl, "contract-fatal", 1, 3);
    rd_kafka_mock_push_request_errors(cl.mc, 0, 1, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER);
    n = 50;
    m = make_msgs("contract-fatal", "f", 0, n, 5, -1, 0);
    res = calloc((size_t)n, sizeof(*res));
    memset(done, 0, 1000 * sizeof(int));
    left = run_calls(s, m, n, done, &perr);
    printf("out-of-order sequence: %d of %d events left after the first failed call (%s)\n", left,
           n, outbox_err_str(perr));
    /* The events of the failed call are retried, never dead-lettered. */
    CHECK(perr != OUTBOX_ERR_REJECTED, "fatal producer error rejected the call");
    /* The relay's part: probe, then publish what is left, in order. */
    t0 = tu_now_ms();
    while (s->ops->ping(s, err, sizeof(err)) != OUTBOX_OK)
        CHECK(tu_now_ms() - t0 < tu_ms(10000), "ping after the fatal error: %s", err);
    left = run_calls(s, m, n, done, &perr);
    CHECK(left == 0 && perr == OUTBOX_OK, "republish after fatal: %d left", left);
    recs = kt_kcat_read(&cl, "contract-fatal", 1, &got);
    dups = kt_check(recs, got, "f", n, 5);
    printf("contract-fatal: %ld records, %ld duplicates, no gap, order kept\n", got, dups);
    kt_recs_free(recs, got);
    free_msgs(m, n);
    free(res);

    /* 6. All brokers down: the call reports the broker unreachable. */
    for (int b = 1; b <= 3; b++)
        rd_kafka_mock_broker_set_down(cl.mc, b);
    m = make_msgs("contract-down", "d", 0, 20, 20, -1, 0);
    res = calloc(20, sizeof(*res));
    t0 = tu_now_ms();
    perr = s->ops->publish(s, m, 20, res);
    long long took = tu_now_ms() - t0;
    printf("all brokers down: publish -> %s after %lld ms: %s\n", outbox_err_str(perr), took,
           res[0].errstr);
    CHECK(perr == OUTBOX_ERR_BROKER, "publish with every broker down returned %s",
          outbox_err_str(perr));
    CHECK(took < tu_ms(3000 + 4000), "publish took %lld ms with a %ld ms timeout", took,
          tu_ms(3000));
    for (int i = 0; i < 20; i++)
        CHECK(res[i].err != OUTBOX_OK, "message %d confirmed while all brokers are down", i);
    CHECK(s->ops->ping(s, err, sizeof(err)) == OUTBOX_ERR_BROKER, "ping while down");
    printf("ping while down: %s\n", err);
    free_msgs(m, 20);
    for (int b = 1; b <= 3; b++)
        rd_kafka_mock_broker_set_up(cl.mc, b);
    t0 = tu_now_ms();
    while (s->ops->ping(s, err, sizeof(err)) != OUTBOX_OK)
        CHECK(tu_now_ms() - t0 < tu_ms(20000),
              "ping still failing 20 s after the brokers came back: %s", err);
    printf("ping ok %lld ms after the brokers came back\n", tu_now_ms() - t0);
    m = make_msgs("contract-down", "d", 100, 20, 20, -1, 0);
    CHECK(s->ops->publish(s, m, 20, res) == OUTBOX_OK, "publish after recovery");
    for (int i = 0; i < 20; i++)
        CHECK(res[i].err == OUTBOX_OK, "after recovery %d: %s", i, res[i].errstr);
    free_msgs(m, 20);
    free(res);
    recs = kt_kcat_read(&cl, "contract-down", 1, &got);
    int after = 0;
    for (long i = 0; i < got; i++)
        after += recs[i].seq >= 100;
    CHECK(after == 20, "after recovery: %d of 20 records", after);
    kt_recs_free(recs, got);

    free(done);
    outbox__sink_destroy(s);
    outbox_conf_destroy(conf);
    kt_cluster_stop(&cl);
    printf("PASS kafka_sink_contract\n");
    return 0;
}
