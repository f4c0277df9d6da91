/* core/log.c: every line is one whole JSON object (or one text line) on
 * stderr, whatever the values hold: quotes, backslashes, control bytes, NUL
 * never reaches it (C strings), text that is not UTF-8, a NULL value, a
 * value longer than a pipe takes at once; and lines of threads logging at
 * the same time never mix. Stderr is redirected to a file and read back. */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "testutil.h"

static char path[64];
static int saved_stderr;

static void capture(void)
{
    snprintf(path, sizeof(path), "/tmp/outbox-test-log-XXXXXX");
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    saved_stderr = dup(STDERR_FILENO);
    CHECK(dup2(fd, STDERR_FILENO) >= 0, "dup2");
    close(fd);
}

/* Restores stderr and returns what was logged (caller frees). */
static char *release(size_t *len)
{
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL, "fopen %s", path);
    char *buf = NULL;
    size_t cap = 0, n = 0, r;
    do {
        if (n + 65536 > cap) {
            cap = (n + 65536) * 2;
            buf = realloc(buf, cap + 1);
            CHECK(buf != NULL, "out of memory");
        }
        r = fread(buf + n, 1, cap - n, f);
        n += r;
    } while (r > 0);
    fclose(f);
    unlink(path);
    buf[n] = '\0';
    *len = n;
    return buf;
}

static json_t *parse_line(const char *line, size_t n)
{
    json_error_t e;
    json_t *o = json_loadb(line, n, 0, &e);
    CHECK(json_is_object(o), "not a JSON object: %s (%.*s)", e.text, (int)(n > 200 ? 200 : n),
          line);
    return o;
}

static const char *member(json_t *o, const char *name)
{
    json_t *v = json_object_get(o, name);
    CHECK(json_is_string(v), "member %s missing or not a string", name);
    return json_string_value(v);
}

#define NTHREADS 4
#define PER_THREAD 2000

static void *logger(void *arg)
{
    char who[16], big[5000];
    snprintf(who, sizeof(who), "t%d", (int)(intptr_t)arg);
    memset(big, 'a' + (int)(intptr_t)arg, sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    for (int i = 0; i < PER_THREAD; i++)
        outbox__log(OUTBOX_LOG_INFO, "test", "line", who, "big", i % 100 == 0 ? big : "x", NULL);
    return NULL;
}

int main(void)
{
    outbox__log_setup("debug", "json");
    capture();
    outbox__log(OUTBOX_LOG_WARN, "comp", "ev", "say \"hi\"\\ now\n\ttab\x01 caf\xc3\xa9 /", "k1",
                "v1", "k2", NULL, "bad",
                "a\xff"
                "b\xc3",
                "quote\"key", "x", NULL);
    outbox__logf(OUTBOX_LOG_ERROR, "comp", "fmt", "n=%d", 42);
    outbox__log(OUTBOX_LOG_DEBUG, "comp", "nomsg", NULL, NULL);
    char *huge = malloc(70000);
    CHECK(huge != NULL, "out of memory");
    memset(huge, 'z', 69999);
    huge[69999] = '\0';
    outbox__log(OUTBOX_LOG_INFO, "comp", "huge", "big value", "v", huge, NULL);
    size_t len;
    char *out = release(&len);
    char *lines[8];
    int n = 0;
    for (char *p = out; *p && n < 8;) {
        char *nl = strchr(p, '\n');
        CHECK(nl != NULL, "a line without its newline");
        *nl = '\0';
        lines[n++] = p;
        p = nl + 1;
    }
    CHECK(n == 4, "%d lines, want 4", n);

    json_t *o = parse_line(lines[0], strlen(lines[0]));
    const char *keys[] = {"ts", "level", "component", "event",     "msg",
                          "k1", "k2",    "bad",       "quote\"key"};
    size_t i = 0;
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        CHECK(i < 9 && !strcmp(key, keys[i]), "member %zu is %s, want %s", i, key,
              i < 9 ? keys[i] : "(none)");
        i++;
    }
    CHECK(i == 9, "%zu members, want 9", i);
    CHECK(!strcmp(member(o, "level"), "warn"), "level");
    CHECK(!strcmp(member(o, "msg"), "say \"hi\"\\ now\n\ttab\x01 caf\xc3\xa9 /"), "msg: %s",
          member(o, "msg"));
    CHECK(json_is_null(json_object_get(o, "k2")), "a NULL value is null");
    CHECK(!strcmp(member(o, "bad"), "a\xef\xbf\xbd"
                                    "b\xef\xbf\xbd"),
          "ill-formed UTF-8 becomes U+FFFD: %s", member(o, "bad"));
    CHECK(strstr(lines[0], "\\u0001") && strstr(lines[0], "caf\xc3\xa9 /"),
          "escaped as jansson does: %s", lines[0]);
    json_decref(o);

    o = parse_line(lines[1], strlen(lines[1]));
    CHECK(!strcmp(member(o, "msg"), "n=42") && !strcmp(member(o, "level"), "error"), "logf");
    json_decref(o);
    o = parse_line(lines[2], strlen(lines[2]));
    CHECK(!json_object_get(o, "msg") && !strcmp(member(o, "level"), "debug"), "no msg member");
    json_decref(o);
    o = parse_line(lines[3], strlen(lines[3]));
    CHECK(strlen(member(o, "v")) == 69999, "a long value is logged whole");
    json_decref(o);
    free(out);
    free(huge);

    /* Threads at once: every line whole. */
    capture();
    pthread_t t[NTHREADS];
    for (int k = 0; k < NTHREADS; k++)
        CHECK(pthread_create(&t[k], NULL, logger, (void *)(intptr_t)k) == 0, "pthread_create");
    for (int k = 0; k < NTHREADS; k++)
        pthread_join(t[k], NULL);
    out = release(&len);
    int count[NTHREADS] = {0};
    for (char *p = out; *p;) {
        char *nl = strchr(p, '\n');
        CHECK(nl != NULL, "a line without its newline");
        o = parse_line(p, (size_t)(nl - p));
        int k = atoi(member(o, "msg") + 1);
        CHECK(k >= 0 && k < NTHREADS, "msg %s", member(o, "msg"));
        const char *big = member(o, "big");
        CHECK(!strcmp(big, "x") ||
                  (strlen(big) == 4999 && big[0] == 'a' + k && big[4998] == 'a' + k),
              "a line of thread %d holds another's bytes", k);
        count[k]++;
        json_decref(o);
        p = nl + 1;
    }
    for (int k = 0; k < NTHREADS; k++)
        CHECK(count[k] == PER_THREAD, "thread %d: %d lines, want %d", k, count[k], PER_THREAD);
    free(out);

    /* Text format: one line each, values with spaces quoted. */
    outbox__log_setup("info", "text");
    capture();
    outbox__log(OUTBOX_LOG_INFO, "comp", "ev", "hello", "k", "two words", NULL);
    outbox__log(OUTBOX_LOG_DEBUG, "comp", "hidden", "below the threshold", NULL);
    out = release(&len);
    CHECK(len > 0 && out[len - 1] == '\n' && strchr(out, '\n') == out + len - 1,
          "one text line: %s", out);
    CHECK(strstr(out, "hello") && strstr(out, "k=\"two words\""), "text line: %s", out);
    free(out);
    printf("ok\n");
    return 0;
}
