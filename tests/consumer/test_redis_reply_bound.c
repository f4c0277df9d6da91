/* A Redis server (or something in its place) that answers with an array
 * declaring 300 million elements: 12 bytes, "*300000000\r\n". hiredis 0.14
 * allocates the declared count at once (2.4 GB) and then waits for the
 * elements. Every context outbox__redis_connect makes refuses such a reply
 * (outbox__redis_guard_reader):
 *  - a real Redis connection's reader fails on those bytes and still reads
 *    a normal reply on a fresh context;
 *  - a consumer talking to a fake server that says "+OK" to XGROUP CREATE and
 *    "*300000000" to what follows (XAUTOCLAIM, XREADGROUP) gets
 *    OUTBOX_ERR_BROKER at once (not after its read timeout), without its
 *    address space growing by gigabytes, and connects again on the next
 *    poll.
 * The fake server is a thread on a loopback socket. Needs OUTBOX_TEST_REDIS
 * for the first part (skipped without it). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "broker/redis.h"
#include "outbox/consumer.h"
#include "testutil.h"

static int g_listen;
static atomic_int g_conns, g_stop;

/* Reads one RESP command (an array of bulk strings) from fd into buf;
 * returns 1, or 0 when the peer closed or sent something else. */
static int read_command(int fd, char *buf, size_t size, size_t *have)
{
    for (;;) {
        /* complete? "*N\r\n" then N times "$len\r\n<len bytes>\r\n" */
        char *p = buf, *end = buf + *have;
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl && *p == '*') {
            long n = strtol(p + 1, NULL, 10);
            p = nl + 1;
            int ok = 1;
            for (long i = 0; i < n && ok; i++) {
                nl = p < end ? memchr(p, '\n', (size_t)(end - p)) : NULL;
                if (!nl || *p != '$') {
                    ok = 0;
                    break;
                }
                long len = strtol(p + 1, NULL, 10);
                p = nl + 1 + len + 2;
                if (p > end)
                    ok = 0;
            }
            if (ok) {
                size_t used = (size_t)(p - buf);
                memmove(buf, p, *have - used);
                *have -= used;
                return 1;
            }
        } else if (*have && *buf != '*') {
            return 0;
        }
        if (*have == size)
            return 0;
        ssize_t r = read(fd, buf + *have, size - *have);
        if (r <= 0)
            return 0;
        *have += (size_t)r;
    }
}

static void *fake_redis(void *arg)
{
    (void)arg;
    while (!atomic_load(&g_stop)) {
        int fd = accept(g_listen, NULL, NULL);
        if (fd < 0)
            continue;
        atomic_fetch_add(&g_conns, 1);
        char buf[8192];
        size_t have = 0;
        /* the first command (XGROUP CREATE) is fine; every later one gets
         * the array of 300 million; the connection stays open */
        for (int k = 0; read_command(fd, buf, sizeof(buf), &have); k++) {
            const char *reply = k == 0 ? "+OK\r\n" : "*300000000\r\n";
            if (write(fd, reply, strlen(reply)) < 0)
                break;
        }
        close(fd);
    }
    return NULL;
}

static long vm_peak_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof(line), f))
        if (!strncmp(line, "VmPeak:", 7))
            kb = strtol(line + 7, NULL, 10);
    if (f)
        fclose(f);
    return kb;
}

static outbox_err_t handler(const outbox_delivery_t *d, void *opaque)
{
    (void)d;
    (void)opaque;
    CHECK(0, "a handler was called: there is no message");
    return OUTBOX_OK;
}

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

int main(void)
{
    /* 1. a real Redis connection's reader */
    char host[128], err[512];
    int port;
    tu_redis_addr(host, sizeof(host), &port);
    outbox__redis_url_t u = {.port = port};
    snprintf(u.host, sizeof(u.host), "%s", host);
    redisContext *c = outbox__redis_connect(&u, 2000, err, sizeof(err));
    CHECK(c, "connect: %s", err);
    void *reply = NULL;
    CHECK(redisReaderFeed(c->reader, "*300000000\r\n", 12) == REDIS_OK, "feed");
    CHECK(redisReaderGetReply(c->reader, &reply) == REDIS_ERR && !reply,
          "the reader took an array of 300 million elements");
    redisFree(c);
    c = outbox__redis_connect(&u, 2000, err, sizeof(err));
    CHECK(c, "connect: %s", err);
    redisReply *rep = redisCommand(c, "ECHO %s", "still reads");
    CHECK(rep && rep->type == REDIS_REPLY_STRING && !strcmp(rep->str, "still reads"), "ECHO");
    freeReplyObject(rep);
    rep = redisCommand(c, "XRANGE %s - +", tu_unique("nothing"));
    CHECK(rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 0, "an empty array");
    freeReplyObject(rep);
    redisFree(c);

    /* 2. a consumer against the fake server */
    g_listen = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    CHECK(bind(g_listen, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(g_listen, 8) == 0 &&
              getsockname(g_listen, (struct sockaddr *)&a, &al) == 0,
          "listen");
    pthread_t th;
    CHECK(pthread_create(&th, NULL, fake_redis, NULL) == 0, "thread");
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", ntohs(a.sin_port));
    outbox_conf_t *conf = outbox_conf_new();
    const char *topics[1] = {"orders"};
    outbox_consumer_t *cons =
        outbox_consumer_new(url, "grp", "grp-1", topics, 1, conf, err, sizeof(err));
    CHECK(cons, "consumer_new: %s", err);
    outbox_conf_destroy(conf);
    long before = vm_peak_kb();
    for (int i = 0; i < 3; i++) {
        long long t0 = tu_now_ms();
        outbox_err_t rc = outbox_consumer_poll(cons, 100, handler, NULL);
        long long took = tu_now_ms() - t0;
        CHECK(rc == OUTBOX_ERR_BROKER, "poll %d: %s, want OUTBOX_ERR_BROKER", i,
              outbox_err_str(rc));
        /* without the bound: the read waits for 300 million elements until
         * the poll's timeout plus the connect timeout (5.1 s) */
        CHECK(took < 2000, "poll %d took %lld ms: the reply was read, not refused", i, took);
    }
    long after = vm_peak_kb();
    if (!SANITIZED)
        CHECK(after - before < 512 * 1024, "VmPeak grew by %ld MB reading 12 bytes",
              (after - before) / 1024);
    CHECK(atomic_load(&g_conns) >= 3, "%d connections for 3 polls: it did not connect again",
          atomic_load(&g_conns));
    outbox_consumer_destroy(cons);
    atomic_store(&g_stop, 1);
    shutdown(g_listen, SHUT_RDWR);
    close(g_listen);
    /* accept() may not return on a closed socket: let the thread go */
    pthread_detach(th);
    printf("PASS consumer_redis_reply_bound: \"*300000000\" refused by the reader of a real "
           "connection and by a consumer (3 polls, each OUTBOX_ERR_BROKER at once, "
           "reconnecting; VmPeak +%ld kB)\n",
           after - before);
    return 0;
}
