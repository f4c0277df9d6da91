/* stdout: and file: sinks.
 *
 * file:PATH through the relay (3 workers): the file holds exactly the
 * enqueued events, one valid CloudEvents document per line, per-key in
 * commit order. stdout: called directly with standard output redirected
 * to a file. A path that cannot be opened is refused when the sink opens. */
#include <fcntl.h>
#include <jansson.h>
#include <unistd.h>

#include "core/message.h"
#include "sink/sink.h"
#include "sink_test.h"

#define N 300
#define NKEYS 12

static char ids[N][OUTBOX_UUID_STRLEN + 1];
static char keys[N][16];

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    CHECK(f, "open %s", path);
    st_buf_t b = {0};
    char chunk[65536];
    size_t n;
    st_buf_add(&b, "", 0);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        st_buf_add(&b, chunk, n);
    fclose(f);
    *len = b.len;
    return b.p;
}

static int index_of(const char *id)
{
    for (int i = 0; i < N; i++)
        if (!strcmp(ids[i], id))
            return i;
    return -1;
}

int main(void)
{
    char err[512];
    char dir[] = "/tmp/outbox-sink-file-XXXXXX";
    CHECK(mkdtemp(dir), "mkdtemp");

    /* ---- stdout: ---- */
    {
        char out[600];
        snprintf(out, sizeof(out), "%s/stdout.ndjson", dir);
        fflush(stdout);
        int saved = dup(1), fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        CHECK(saved >= 0 && fd >= 0, "redirect stdout");
        dup2(fd, 1);
        close(fd);
        outbox_conf_t *conf = outbox_conf_new();
        outbox_sink_t *s = outbox__sink_new("stdout:", conf, "test", err, sizeof(err));
        CHECK(s, "stdout sink: %s", err);
        outbox_msg_t m[3];
        outbox_pub_result_t res[3];
        memset(res, 0, sizeof(res));
        const char *payloads[3] = {"{\"a\":1}", "{\n \"multi\": \"line\\nvalue\"\n}", "[1, 2]"};
        for (int i = 0; i < 3; i++) {
            m[i] = (outbox_msg_t){.seq = i + 1,
                                  .topic = "t",
                                  .type = "T",
                                  .key = "k",
                                  .payload = payloads[i],
                                  .time = "2026-11-22T00:00:00Z"};
            outbox_uuid_v7(m[i].id);
            m[i].envelope = outbox__envelope_build(&m[i], &m[i].envelope_len, err, sizeof(err));
            CHECK(m[i].envelope, "envelope: %s", err);
        }
        outbox_err_t rc = s->ops->publish(s, m, 3, res);
        CHECK(s->ops->ping(s, err, sizeof(err)) == OUTBOX_OK, "ping: %s", err);
        outbox__sink_destroy(s);
        outbox_conf_destroy(conf);
        fflush(stdout);
        dup2(saved, 1);
        close(saved);
        CHECK(rc == OUTBOX_OK && res[0].err == OUTBOX_OK && res[2].err == OUTBOX_OK,
              "stdout publish: %s", res[0].errstr);
        size_t len;
        char *text = slurp(out, &len);
        int lines = 0;
        for (char *line = text, *nl; (nl = strchr(line, '\n')); line = nl + 1, lines++) {
            outbox_envelope_t env;
            CHECK(lines < 3, "more than 3 lines on stdout");
            CHECK(outbox_envelope_parse(line, (size_t)(nl - line), &env, err, sizeof(err)) ==
                      OUTBOX_OK,
                  "stdout line %d: %s", lines, err);
            CHECK(!strcmp(env.id, m[lines].id), "stdout line %d has id %s", lines, env.id);
            outbox_envelope_term(&env);
        }
        CHECK(lines == 3 && text[len - 1] == '\n', "stdout: %d lines", lines);
        free(text);
        for (int i = 0; i < 3; i++)
            free(m[i].envelope);
        printf("stdout: 3 events -> 3 NDJSON lines\n");
    }

    /* ---- bad paths are refused at open ---- */
    {
        outbox_conf_t *conf = outbox_conf_new();
        CHECK(!outbox__sink_new("file:/nonexistent-dir-for-outbox/x.ndjson", conf, "t", err,
                                sizeof(err)),
              "an unopenable path was accepted");
        CHECK(strstr(err, "nonexistent-dir-for-outbox"), "error names the path: %s", err);
        CHECK(!outbox__sink_new("file:", conf, "t", err, sizeof(err)),
              "file: without a path was accepted");
        outbox_conf_destroy(conf);
    }

    /* ---- file: through the relay ---- */
    PGconn *c;
    const char *ci = st_setup_db("sink_file", &c);
    char path[600], url[700];
    snprintf(path, sizeof(path), "%s/events.ndjson", dir);
    snprintf(url, sizeof(url), "file://%s", path); /* file:///abs/path form */
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof(keys[i]), "key-%d", i % NKEYS);
        char payload[128];
        snprintf(payload, sizeof(payload), "{\"i\": %d,\n \"text\": \"line\\nbreak\"}", i);
        st_enqueue(c, "files", "FileEvent", keys[i], payload, NULL, ids[i]);
    }
    outbox_conf_t *conf = st_relay_conf(ci, url);
    st_conf_set(conf, "workers", "3");
    long long t0 = tu_now_ms();
    outbox_relay_t *r = st_relay_start(conf);
    st_wait_drained(c, 30000);
    long long took = tu_now_ms() - t0;
    outbox_relay_destroy(r);

    size_t len;
    char *text = slurp(path, &len);
    CHECK(len > 0 && text[len - 1] == '\n', "file does not end with a newline");
    static int seen[N], last_for_key[NKEYS];
    for (int k = 0; k < NKEYS; k++)
        last_for_key[k] = -1;
    int lines = 0;
    for (char *line = text, *nl; (nl = strchr(line, '\n')); line = nl + 1, lines++) {
        outbox_envelope_t env;
        CHECK(outbox_envelope_parse(line, (size_t)(nl - line), &env, err, sizeof(err)) == OUTBOX_OK,
              "line %d is not a CloudEvents document: %s", lines + 1, err);
        int i = index_of(env.id);
        CHECK(i >= 0, "line %d: unknown id %s", lines + 1, env.id);
        CHECK(!seen[i]++, "event %d written twice", i);
        CHECK(env.subject && !strcmp(env.subject, keys[i]), "line %d: subject", lines + 1);
        json_t *d = json_loads(env.data, 0, NULL);
        CHECK(json_integer_value(json_object_get(d, "i")) == i, "line %d: data %s", lines + 1,
              env.data);
        json_decref(d);
        int k = i % NKEYS;
        CHECK(i > last_for_key[k], "key %s: event %d written after event %d", keys[i], i,
              last_for_key[k]);
        last_for_key[k] = i;
        outbox_envelope_term(&env);
    }
    CHECK(lines == N, "%d lines, want exactly %d", lines, N);
    free(text);
    printf("file: %d events -> exactly %d lines, valid CloudEvents, per-key order kept (3 workers, "
           "%lld ms)\n",
           N, lines, took);

    unlink(path);
    char out[600];
    snprintf(out, sizeof(out), "%s/stdout.ndjson", dir);
    unlink(out);
    rmdir(dir);
    PQfinish(c);
    printf("PASS sink_file\n");
    return 0;
}
