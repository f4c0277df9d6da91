/* TLS for the HTTP and OpenSearch sinks, against a libmicrohttpd stand-in
 * with a throwaway self-signed certificate for 127.0.0.1 (made with the
 * openssl command; skipped without it). No database needed.
 *
 * - verification is on by default: the unknown certificate makes the
 *   endpoint unreachable (OUTBOX_ERR_BROKER for the call, ping fails) and
 *   nothing reaches the server;
 * - webhook_ca_file / opensearch_ca_file with the certificate: delivered;
 * - webhook_insecure_skip_verify: delivered (the loud opt-out). */
#include <unistd.h>

#include "core/message.h"
#include "sink/sink.h"
#include "sink_test.h"

static int posts, bulks;

static void handle(st_req_t *q, void *arg)
{
    if (!strcmp(q->method, "POST") && !strcmp(q->url, "/hook")) {
        __atomic_add_fetch(&posts, 1, __ATOMIC_SEQ_CST);
    } else if (!strcmp(q->method, "POST") && !strcmp(q->url, "/_bulk")) {
        __atomic_add_fetch(&bulks, 1, __ATOMIC_SEQ_CST);
        const char *r =
            "{\"took\":1,\"errors\":false,\"items\":[{\"index\":{\"_index\":\"t\",\"_id\":\"k\","
            "\"_version\":1,\"result\":\"created\",\"status\":201}}]}";
        st_buf_add(&q->resp, r, strlen(r));
    } else if (!strcmp(q->method, "GET") && !strcmp(q->url, "/")) {
        st_buf_add(&q->resp, "{\"name\":\"stand-in\"}", 19);
    } else {
        q->status = 404;
    }
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    CHECK(f, "open %s", path);
    st_buf_t b = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        st_buf_add(&b, chunk, n);
    fclose(f);
    return b.p;
}

static outbox_err_t publish_one(const char *url, outbox_conf_t *conf, outbox_pub_result_t *res,
                                int *ping_ok)
{
    char err[512];
    outbox_sink_t *s = outbox__sink_new(url, conf, "test", err, sizeof(err));
    CHECK(s, "sink_new %s: %s", url, err);
    outbox_msg_t m = {.seq = 1,
                      .topic = "t",
                      .type = "T",
                      .key = "k",
                      .payload = "{\"a\":1}",
                      .time = "2026-11-22T00:00:00Z"};
    outbox_uuid_v7(m.id);
    m.envelope = outbox__envelope_build(&m, &m.envelope_len, err, sizeof(err));
    CHECK(m.envelope, "envelope: %s", err);
    memset(res, 0, sizeof(*res));
    outbox_err_t rc = s->ops->publish(s, &m, 1, res);
    *ping_ok = s->ops->ping(s, err, sizeof(err)) == OUTBOX_OK;
    free(m.envelope);
    outbox__sink_destroy(s);
    return rc;
}

int main(void)
{
    if (system("openssl version >/dev/null 2>&1") != 0)
        tu_skip("the openssl command is not installed (needed to make a test certificate)");
    char dir[] = "/tmp/outbox-sink-tls-XXXXXX";
    CHECK(mkdtemp(dir), "mkdtemp");
    char cmd[2048], key[600], cert[600];
    snprintf(key, sizeof(key), "%s/key.pem", dir);
    snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
    snprintf(
        cmd, sizeof(cmd),
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout %s -out %s -days 1 -subj /CN=127.0.0.1 "
        "-addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1",
        key, cert);
    CHECK(system(cmd) == 0, "openssl req failed: %s", cmd);
    char *key_pem = slurp(key), *cert_pem = slurp(cert);

    st_server_t srv = {0};
    st_server_start_tls(&srv, handle, NULL, key_pem, cert_pem);
    char hook[128], os[128];
    snprintf(hook, sizeof(hook), "https://127.0.0.1:%d/hook", srv.port);
    snprintf(os, sizeof(os), "opensearch+https://127.0.0.1:%d/t-", srv.port);
    outbox_pub_result_t res;
    int ping_ok;

    /* Default: verification on; an unknown certificate = unreachable. */
    outbox_conf_t *conf = outbox_conf_new();
    st_conf_set(conf, "publish_timeout", "3s");
    CHECK(publish_one(hook, conf, &res, &ping_ok) == OUTBOX_ERR_BROKER,
          "self-signed certificate accepted: %s", res.errstr);
    CHECK(!ping_ok, "ping accepted a self-signed certificate");
    CHECK(publish_one(os, conf, &res, &ping_ok) == OUTBOX_ERR_BROKER,
          "opensearch: self-signed accepted: %s", res.errstr);
    CHECK(!ping_ok, "opensearch ping accepted a self-signed certificate");
    CHECK(__atomic_load_n(&posts, __ATOMIC_SEQ_CST) == 0 &&
              __atomic_load_n(&bulks, __ATOMIC_SEQ_CST) == 0,
          "a request got through an unverified TLS connection");
    printf("verify on by default: %s\n", res.errstr);

    /* The certificate as CA file: delivered. */
    st_conf_set(conf, "webhook_ca_file", cert);
    st_conf_set(conf, "opensearch_ca_file", cert);
    CHECK(publish_one(hook, conf, &res, &ping_ok) == OUTBOX_OK && res.err == OUTBOX_OK,
          "with CA file: %s", res.errstr);
    CHECK(ping_ok, "ping with CA file failed");
    CHECK(publish_one(os, conf, &res, &ping_ok) == OUTBOX_OK && res.err == OUTBOX_OK,
          "opensearch with CA file: %s", res.errstr);
    CHECK(ping_ok, "opensearch ping with CA file failed");
    outbox_conf_destroy(conf);

    /* The loud opt-out. */
    conf = outbox_conf_new();
    st_conf_set(conf, "webhook_insecure_skip_verify", "true");
    CHECK(publish_one(hook, conf, &res, &ping_ok) == OUTBOX_OK && res.err == OUTBOX_OK,
          "insecure: %s", res.errstr);
    outbox_conf_destroy(conf);
    CHECK(__atomic_load_n(&posts, __ATOMIC_SEQ_CST) == 2 &&
              __atomic_load_n(&bulks, __ATOMIC_SEQ_CST) == 1,
          "posts %d bulks %d", posts, bulks);
    printf("webhook_ca_file / opensearch_ca_file: delivered; webhook_insecure_skip_verify: "
           "delivered\n");

    st_server_stop(&srv);
    free(key_pem);
    free(cert_pem);
    unlink(key);
    unlink(cert);
    rmdir(dir);
    printf("PASS sink_tls\n");
    return 0;
}
