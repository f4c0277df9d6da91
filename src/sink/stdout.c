/* stdout and file sinks: NDJSON, one CloudEvents document per line.
 *
 * stdout:          writes the batch's documents to standard output, flushed
 *                  before the batch is acknowledged.
 * file:PATH        appends to PATH (created 0644 if missing); file:///abs/path
 *                  works too. Each batch is written under an exclusive
 *                  flock(2) (workers and other relays append whole batches,
 *                  never interleaved lines) and fsync(2)ed before the batch is
 *                  acknowledged. A failed write is cut back to the length the
 *                  file had before the batch, so the file never holds a
 *                  partial line; the call then returns OUTBOX_ERR_BROKER and
 *                  the relay retries once ping() can open the file again.
 *
 * A local write has no broker to wait for: the deadline (sink->deadline_ms)
 * is only checked before the batch is written (none left: nothing written,
 * OUTBOX_ERR_TIMEOUT, not sent).
 *
 * Delivery is at least once: a crash between fsync and the acknowledgement
 * writes the batch again. Consumers de-duplicate by the CloudEvents id. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/util.h"
#include "sink/sink_common.h"
#include "sink/sink.h"

typedef struct stdout_sink_s {
    int to_stdout;
    char path[4096];
    int fd;            /* file: open descriptor (O_APPEND), or -1 */
    outbox__buf_t buf; /* the batch as NDJSON */
} stdout_sink_t;

static outbox_err_t open_file(stdout_sink_t *s, char *errstr, size_t errstr_size)
{
    if (s->fd >= 0)
        return OUTBOX_OK;
    s->fd = open(s->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (s->fd < 0)
        return outbox__err(OUTBOX_ERR_BROKER, errstr, errstr_size,
                           "cannot open %s for appending: %s", s->path, strerror(errno));
    return OUTBOX_OK;
}

static outbox_err_t stdout_open(outbox_sink_t *sink, char *errstr, size_t errstr_size)
{
    stdout_sink_t *s = calloc(1, sizeof(*s));
    if (!s)
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    s->fd = -1;
    const char *url = sink->url;
    if (outbox__url_scheme_is(url, "stdout")) {
        s->to_stdout = 1;
    } else {
        const char *p = url + 5; /* "file:" */
        if (!strncmp(p, "//", 2)) {
            p += 2;
            if (!strncasecmp(p, "localhost/", 10))
                p += 9;
            if (*p != '/') {
                free(s);
                return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                                   "file sink URL must be file:PATH or file:///absolute/path");
            }
        }
        if (!*p || strlen(p) >= sizeof(s->path)) {
            free(s);
            return outbox__err(
                OUTBOX_ERR_CONFIG, errstr, errstr_size,
                "file sink needs a path: file:PATH (e.g. file:/var/lib/outbox/events.ndjson)");
        }
        memcpy(s->path, p, strlen(p) + 1);
        /* Open now so a bad path fails at start-up, not at the first event. */
        outbox_err_t err = open_file(s, errstr, errstr_size);
        if (err) {
            free(s);
            return OUTBOX_ERR_CONFIG;
        }
    }
    sink->state = s;
    return OUTBOX_OK;
}

static void fail_all(outbox_pub_result_t *res, size_t n, const char *msg)
{
    for (size_t i = 0; i < n; i++) {
        res[i].err = OUTBOX_ERR_BROKER;
        res[i].retry_after_ms = 0;
        snprintf(res[i].errstr, sizeof(res[i].errstr), "%s", msg);
    }
}

/* Appends the whole buffer to the file under flock; fsyncs; on failure cuts
 * the file back to its length before this batch. */
static outbox_err_t append_file(stdout_sink_t *s, char *errstr, size_t errstr_size)
{
    outbox_err_t err = open_file(s, errstr, errstr_size);
    if (err)
        return err;
    while (flock(s->fd, LOCK_EX) < 0) {
        if (errno != EINTR)
            return outbox__err(OUTBOX_ERR_BROKER, errstr, errstr_size, "flock %s: %s", s->path,
                               strerror(errno));
    }
    struct stat st;
    off_t before = fstat(s->fd, &st) == 0 ? st.st_size : -1;
    size_t off = 0;
    while (off < s->buf.len && !err) {
        ssize_t w = write(s->fd, s->buf.p + off, s->buf.len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            err = outbox__err(OUTBOX_ERR_BROKER, errstr, errstr_size, "write to %s failed: %s",
                              s->path, w < 0 ? strerror(errno) : "wrote nothing");
        else
            off += (size_t)w;
    }
    if (!err && fsync(s->fd) < 0)
        err = outbox__err(OUTBOX_ERR_BROKER, errstr, errstr_size, "fsync %s failed: %s", s->path,
                          strerror(errno));
    if (err) {
        if (before >= 0 && ftruncate(s->fd, before) == 0)
            (void)fsync(s->fd);
        flock(s->fd, LOCK_UN);
        close(s->fd); /* reopened by the next publish or ping */
        s->fd = -1;
        return err;
    }
    flock(s->fd, LOCK_UN);
    return OUTBOX_OK;
}

static outbox_err_t write_stdout(stdout_sink_t *s, char *errstr, size_t errstr_size)
{
    flockfile(stdout);
    size_t w = fwrite(s->buf.p, 1, s->buf.len, stdout);
    int rc = fflush(stdout);
    int e = errno;
    funlockfile(stdout);
    if (w != s->buf.len || rc)
        return outbox__err(OUTBOX_ERR_BROKER, errstr, errstr_size,
                           "write to standard output failed: %s", strerror(e));
    /* Durable when stdout is a regular file; pipes and terminals can't fsync. */
    if (fsync(fileno(stdout)) < 0 && errno != EINVAL && errno != EROFS && errno != ENOTSUP)
        return outbox__err(OUTBOX_ERR_BROKER, errstr, errstr_size,
                           "fsync standard output failed: %s", strerror(errno));
    return OUTBOX_OK;
}

static outbox_err_t stdout_publish(outbox_sink_t *sink, outbox_msg_t *msgs, size_t n,
                                   outbox_pub_result_t *res)
{
    stdout_sink_t *s = sink->state;
    if (!n)
        return OUTBOX_OK;
    if (outbox__sink_deadline(sink) <= outbox__now_ms()) {
        outbox__sink_out_of_time(res, n);
        return OUTBOX_OK;
    }
    outbox__buf_reset(&s->buf);
    for (size_t i = 0; i < n; i++) {
        /* The envelope is compact JSON: no raw newline can split a line. */
        outbox__buf_add(&s->buf, msgs[i].envelope, msgs[i].envelope_len);
        outbox__buf_add(&s->buf, "\n", 1);
    }
    if (s->buf.broken) {
        fail_all(res, n, "out of memory building the NDJSON batch");
        return OUTBOX_OK;
    }
    char err[256];
    outbox_err_t rc =
        s->to_stdout ? write_stdout(s, err, sizeof(err)) : append_file(s, err, sizeof(err));
    if (rc) {
        fail_all(res, n, err);
        return OUTBOX_ERR_BROKER;
    }
    for (size_t i = 0; i < n; i++) {
        res[i].err = OUTBOX_OK;
        res[i].retry_after_ms = 0;
        res[i].errstr[0] = '\0';
    }
    return OUTBOX_OK;
}

static outbox_err_t stdout_ping(outbox_sink_t *sink, char *errstr, size_t errstr_size)
{
    stdout_sink_t *s = sink->state;
    if (s->to_stdout)
        return OUTBOX_OK;
    return open_file(s, errstr, errstr_size);
}

static void stdout_close(outbox_sink_t *sink)
{
    stdout_sink_t *s = sink->state;
    if (!s)
        return;
    if (s->fd >= 0)
        close(s->fd);
    outbox__buf_free(&s->buf);
    free(s);
    sink->state = NULL;
}

static const char *const stdout_schemes[] = {"stdout", "file", NULL};

const outbox_sink_ops_t outbox__sink_stdout_ops = {
    .name = "stdout",
    .schemes = stdout_schemes,
    .open = stdout_open,
    .publish = stdout_publish,
    .ping = stdout_ping,
    .close = stdout_close,
};
