/* Several relays on one host, none told where to serve metrics.
 *
 * The default metrics address 127.0.0.1:9464 is taken first (this test
 * listens on it, or something else on the host already does). Three
 * outbox-relay daemons then start on one database without
 * OUTBOX_METRICS_ADDR: each logs metrics_port_moved and metrics_listening
 * with a port of its own, serves /metrics there, keeps running, and together
 * they drain a backlog into a Redis stream with per-key order held. Every
 * line each relay writes is a JSON object, including libmicrohttpd's own
 * messages (one relay runs at debug level, where they show as metrics_http).
 *
 * A relay whose OUTBOX_METRICS_ADDR is set to a taken port does not move:
 * it exits non-zero at start with a message naming the address. */
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "proc_common.h"

#define NRELAYS 3
#define NEVENTS 3000
#define NKEYS 40
#define DEFAULT_METRICS "127.0.0.1:9464"

/* A socket listening on 127.0.0.1:port (0: any free port), or -1 with errno
 * when the port is taken. *bound gets the port. */
static int listen_on(int port, int *bound)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); /* not inherited by the relays */
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(s >= 0, "socket: %s", strerror(errno));
    if (bind(s, (struct sockaddr *)&a, sizeof(a)) || listen(s, 4)) {
        int e = errno;
        close(s);
        errno = e;
        return -1;
    }
    socklen_t len = sizeof(a);
    getsockname(s, (struct sockaddr *)&a, &len);
    *bound = ntohs(a.sin_port);
    return s;
}

/* Spawns outbox-relay with DATABASE_URL, OUTBOX_SINK and extra "K=V"
 * entries, and no OUTBOX_METRICS_ADDR unless extra has one. */
static pid_t spawn(const char *conninfo, const char *sink, char *const extra[], const char *log)
{
    static char db[NRELAYS + 1][1200], sk[NRELAYS + 1][300];
    static int slot;
    int s = slot++ % (NRELAYS + 1);
    snprintf(db[s], sizeof(db[s]), "DATABASE_URL=%s", conninfo);
    snprintf(sk[s], sizeof(sk[s]), "OUTBOX_SINK=%s", sink);
    char *env[24];
    int n = 0;
    env[n++] = db[s];
    env[n++] = sk[s];
    for (int i = 0; extra && extra[i] && n < 23; i++)
        env[n++] = extra[i];
    env[n] = NULL;
    char *argv[] = {(char *)tu_bin("outbox-relay"), NULL};
    unlink(log);
    return tu_spawn(argv, env, log);
}

/* The string field of the first line of the log whose "event" is event;
 * 0 if there is none. */
static int log_field(const char *path, const char *event, const char *field, char *out, size_t size)
{
    FILE *fp = fopen(path, "r");
    if (!fp)
        return 0;
    char *line = NULL;
    size_t cap = 0;
    int found = 0;
    while (!found && getline(&line, &cap, fp) > 0) {
        json_t *o = json_loads(line, JSON_DISABLE_EOF_CHECK, NULL);
        const char *ev = json_string_value(json_object_get(o, "event"));
        const char *v = json_string_value(json_object_get(o, field));
        if (ev && !strcmp(ev, event) && v) {
            snprintf(out, size, "%s", v);
            found = 1;
        }
        json_decref(o);
    }
    free(line);
    fclose(fp);
    return found;
}

/* Waits until the relay pid logs metrics_listening; fails at once if it exits. */
static void wait_listening(pid_t pid, const char *log, int timeout_ms)
{
    long long end = tu_now_ms() + timeout_ms;
    while (log_count(log, "metrics_listening", NULL) == 0) {
        CHECK(proc_alive(pid), "the relay exited before serving metrics (see %s)", log);
        CHECK(tu_now_ms() < end, "no metrics_listening line after %d ms (see %s)", timeout_ms, log);
        tu_sleep_ms(20);
    }
}

/* Every line of the log is one JSON object with level, component and event;
 * returns how many lines there are. */
static int check_all_json(const char *path)
{
    FILE *fp = fopen(path, "r");
    CHECK(fp, "cannot open %s", path);
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, fp)) > 0) {
        lineno++;
        json_error_t je;
        json_t *o = json_loadb(line, (size_t)len, 0, &je);
        CHECK(json_is_object(o), "%s line %d is not a JSON object (%s): %s", path, lineno, je.text,
              line);
        CHECK(json_is_string(json_object_get(o, "level")) &&
                  json_is_string(json_object_get(o, "component")) &&
                  json_is_string(json_object_get(o, "event")),
              "%s line %d lacks level, component or event: %s", path, lineno, line);
        json_decref(o);
    }
    free(line);
    fclose(fp);
    return lineno;
}

/* GET /metrics from addr ("host:port"); fails the test unless it is a 200
 * with the relay's own series. */
static void check_metrics(const char *addr)
{
    const char *colon = strrchr(addr, ':');
    CHECK(colon && !strncmp(addr, "127.0.0.1:", 10), "unexpected metrics address %s", addr);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {5, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    CHECK(connect(s, (struct sockaddr *)&a, sizeof(a)) == 0, "connect %s: %s", addr,
          strerror(errno));
    const char *req = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    CHECK(write(s, req, strlen(req)) == (ssize_t)strlen(req), "write to %s", addr);
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    CHECK(buf, "out of memory");
    ssize_t n;
    while ((n = read(s, buf + len, cap - len - 1)) > 0) {
        len += (size_t)n;
        if (len + 1 == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            CHECK(buf, "out of memory");
        }
    }
    buf[len] = '\0';
    close(s);
    CHECK(!strncmp(buf, "HTTP/1.", 7) && !strncmp(buf + 8, " 200", 4), "GET %s/metrics: %.80s",
          addr, buf);
    CHECK(strstr(buf, "outbox_worker_lanes{worker=\"worker-1\"}") &&
              strstr(buf, "outbox_database_up"),
          "GET %s/metrics: not the relay's metrics: %.200s", addr, buf);
    free(buf);
}

int main(void)
{
    PGconn *c;
    const char *ci = setup_db("multi_relay", &c);
    char host[128], sink[256];
    int port;
    tu_redis_addr(host, sizeof(host), &port);
    redisContext *rc = tu_redis_connect(host, port);
    const char *stream = tu_unique("multi-relay");
    snprintf(sink, sizeof(sink), "redis://%s:%d", host, port);
    char(*ids)[OUTBOX_UUID_STRLEN + 1] = calloc(NEVENTS, sizeof(*ids));
    CHECK(ids, "out of memory");
    enqueue_many(c, stream, NEVENTS, NKEYS, 50, ids);

    /* The default port is taken, whoever holds it. */
    unsetenv("OUTBOX_METRICS_ADDR");
    int held_port = 0, held = listen_on(9464, &held_port);
    CHECK(held >= 0 || errno == EADDRINUSE, "cannot listen on 9464: %s", strerror(errno));
    printf("%s\n", held >= 0 ? "holding 127.0.0.1:9464"
                             : "127.0.0.1:9464 is already taken by another process");

    pid_t relays[NRELAYS];
    char logs[NRELAYS][64], addrs[NRELAYS][64];
    char *info[] = {"OUTBOX_WORKERS=2", "OUTBOX_BATCH_SIZE=50", "OUTBOX_POLL_INTERVAL=50ms",
                    "OUTBOX_LOG_LEVEL=info", NULL};
    char *debug[] = {"OUTBOX_WORKERS=2", "OUTBOX_BATCH_SIZE=50", "OUTBOX_POLL_INTERVAL=50ms",
                     "OUTBOX_LOG_LEVEL=debug", NULL};
    for (int i = 0; i < NRELAYS; i++) {
        snprintf(logs[i], sizeof(logs[i]), "multi_relay.%d.log", i + 1);
        relays[i] = spawn(ci, sink, i == NRELAYS - 1 ? debug : info, logs[i]);
    }
    for (int i = 0; i < NRELAYS; i++) {
        wait_listening(relays[i], logs[i], 30000);
        CHECK(log_field(logs[i], "metrics_listening", "addr", addrs[i], sizeof(addrs[i])),
              "metrics_listening without addr (see %s)", logs[i]);
        char wanted[64] = "", moved_to[64] = "";
        CHECK(log_field(logs[i], "metrics_port_moved", "wanted", wanted, sizeof(wanted)) &&
                  log_field(logs[i], "metrics_port_moved", "addr", moved_to, sizeof(moved_to)),
              "relay %d: no metrics_port_moved with wanted and addr (see %s)", i + 1, logs[i]);
        CHECK(!strcmp(wanted, DEFAULT_METRICS) && !strcmp(moved_to, addrs[i]),
              "relay %d: moved from %s to %s, listening on %s", i + 1, wanted, moved_to, addrs[i]);
        CHECK(strcmp(addrs[i], DEFAULT_METRICS), "relay %d listens on the taken default %s", i + 1,
              addrs[i]);
        for (int j = 0; j < i; j++)
            CHECK(strcmp(addrs[i], addrs[j]), "relays %d and %d both report %s", j + 1, i + 1,
                  addrs[i]);
    }
    for (int i = 0; i < NRELAYS; i++) {
        CHECK(proc_alive(relays[i]), "relay %d exited (see %s)", i + 1, logs[i]);
        check_metrics(addrs[i]);
    }
    printf("metrics: %s, %s, %s\n", addrs[0], addrs[1], addrs[2]);

    wait_drained(c, 120000);
    for (int i = 0; i < NRELAYS; i++)
        CHECK(proc_alive(relays[i]), "relay %d exited while draining (see %s)", i + 1, logs[i]);
    int published[NRELAYS];
    for (int i = 0; i < NRELAYS; i++) {
        kill(relays[i], SIGTERM);
        CHECK(tu_wait(relays[i], 15000) == 0, "relay %d did not stop cleanly (see %s)", i + 1,
              logs[i]);
        published[i] = log_count(logs[i], "batch_published", NULL);
    }

    long ngot = 0, dups = 0;
    entry_t *got = read_stream(rc, stream, &ngot);
    long distinct = check_all_present(ids, NEVENTS, got, ngot, &dups);
    check_key_order(got, ngot, NKEYS);
    printf("drained %d events: %ld entries, %ld distinct, %ld duplicates; batches per relay:"
           " %d, %d, %d\n",
           NEVENTS, ngot, distinct, dups, published[0], published[1], published[2]);

    /* Every line is JSON; the move to the next free port is one of them. */
    for (int i = 0; i < NRELAYS; i++)
        check_all_json(logs[i]);
    CHECK(log_count(logs[NRELAYS - 1], "metrics_port_moved", NULL) >= 1,
          "no metrics_port_moved line: the third relay did not say its port moved (see %s)",
          logs[NRELAYS - 1]);

    /* An address set explicitly is used as given: taken means exit. */
    int taken_port = 0, taken = listen_on(0, &taken_port);
    CHECK(taken >= 0, "listen: %s", strerror(errno));
    char explicit_addr[64], want_msg[96];
    snprintf(explicit_addr, sizeof(explicit_addr), "OUTBOX_METRICS_ADDR=127.0.0.1:%d", taken_port);
    snprintf(want_msg, sizeof(want_msg), "cannot listen on metrics_addr 127.0.0.1:%d", taken_port);
    char *expl[] = {explicit_addr, "OUTBOX_LOG_LEVEL=info", NULL};
    const char *log_x = "multi_relay.explicit.log";
    pid_t x = spawn(ci, sink, expl, log_x);
    int st = tu_wait(x, 30000);
    CHECK(st > 0,
          "relay with a taken explicit OUTBOX_METRICS_ADDR: exit status %d (want non-zero"
          " exit, see %s)",
          st, log_x);
    char msg[512] = "";
    CHECK(log_field(log_x, "start_failed", "msg", msg, sizeof(msg)) && strstr(msg, want_msg),
          "no start_failed line naming the address (want \"%s\", got \"%s\"; see %s)", want_msg,
          msg, log_x);
    CHECK(log_count(log_x, "metrics_listening", NULL) == 0 &&
              log_count(log_x, "metrics_port_moved", NULL) == 0,
          "the explicit address moved to another port (see %s)", log_x);
    check_all_json(log_x);
    printf("explicit taken address: exit %d, \"%s\"\n", st, msg);

    close(taken);
    if (held >= 0)
        close(held);
    free(got);
    free(ids);
    redisFree(rc);
    PQfinish(c);
    printf("PASS multi_relay\n");
    return 0;
}
