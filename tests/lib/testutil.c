#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

void tu_skip(const char *reason)
{
    printf("SKIP: %s\n", reason);
    fflush(stdout);
    exit(TU_SKIP);
}

const char *tu_fresh_db(const char *test_name)
{
    static char conninfo[1024];
    const char *admin = getenv("OUTBOX_TEST_PG");
    if (!admin || !*admin)
        tu_skip("OUTBOX_TEST_PG is not set: run through 'make test' (scripts/test.sh starts "
                "PostgreSQL)");
    char db[128];
    snprintf(db, sizeof(db), "t_%s", test_name);
    for (char *p = db; *p; p++)
        if (*p == '-')
            *p = '_';
    PGconn *c = tu_connect(admin);
    char sql[512];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", db);
    PQclear(tu_exec(c, sql));
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", db);
    PQclear(tu_exec(c, sql));
    PQfinish(c);
    snprintf(conninfo, sizeof(conninfo), "%s dbname=%s", admin, db);
    return conninfo;
}

PGconn *tu_connect(const char *conninfo)
{
    PGconn *c = PQconnectdb(conninfo);
    CHECK(PQstatus(c) == CONNECTION_OK, "connect: %s", PQerrorMessage(c));
    return c;
}

PGresult *tu_exec(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    CHECK(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(c));
    return r;
}

long long tu_query_ll(PGconn *c, const char *sql)
{
    PGresult *r = tu_exec(c, sql);
    CHECK(PQntuples(r) > 0, "%s returned no rows", sql);
    long long v = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

void tu_redis_addr(char *host, size_t host_size, int *port)
{
    const char *a = getenv("OUTBOX_TEST_REDIS");
    if (!a || !*a)
        tu_skip(
            "OUTBOX_TEST_REDIS is not set: run through 'make test' (scripts/test.sh starts Redis)");
    const char *colon = strrchr(a, ':');
    CHECK(colon, "OUTBOX_TEST_REDIS must be host:port, got %s", a);
    snprintf(host, host_size, "%.*s", (int)(colon - a), a);
    *port = atoi(colon + 1);
}

redisContext *tu_redis_connect(const char *host, int port)
{
    redisContext *r = redisConnect(host, port);
    CHECK(r && !r->err, "redis connect %s:%d: %s", host, port, r ? r->errstr : "oom");
    return r;
}

const char *tu_unique(const char *prefix)
{
    static char buf[8][128];
    static int n;
    char *b = buf[n % 8];
    snprintf(b, sizeof(buf[0]), "%s-%d-%d", prefix, (int)getpid(), n);
    n++;
    return b;
}

int tu_free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(s, (struct sockaddr *)&a, sizeof(a)) == 0, "bind: %s", strerror(errno));
    socklen_t len = sizeof(a);
    getsockname(s, (struct sockaddr *)&a, &len);
    close(s);
    return ntohs(a.sin_port);
}

pid_t tu_spawn(char *const argv[], char *const extra_env[], const char *logfile)
{
    pid_t pid = fork();
    CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        for (int i = 0; extra_env && extra_env[i]; i++)
            putenv(extra_env[i]);
        if (logfile) {
            int fd = open(logfile, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
                close(fd);
            }
        }
        setpgid(0, 0);
        const char *wrap = getenv("OUTBOX_TEST_WRAPPER");
        if (wrap && *wrap &&
            strncmp(argv[0], OUTBOX_BUILD_DIR "/", strlen(OUTBOX_BUILD_DIR) + 1) == 0) {
            /* The wrapper's words, then argv; never freed (exec or _exit). */
            size_t n = 0;
            while (argv[n])
                n++;
            char **wargv = calloc(n + 64, sizeof(char *));
            char *words = strdup(wrap);
            size_t k = 0;
            for (char *save = NULL, *w = strtok_r(words, " ", &save); w && k < 63;
                 w = strtok_r(NULL, " ", &save))
                wargv[k++] = w;
            for (size_t i = 0; i <= n; i++)
                wargv[k + i] = argv[i];
            execvp(wargv[0], wargv);
            fprintf(stderr, "exec %s %s: %s\n", wargv[0], argv[0], strerror(errno));
            _exit(127);
        }
        execvp(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return pid;
}

long tu_ms(long ms)
{
    static long factor;
    if (!factor) {
        const char *f = getenv("OUTBOX_TEST_SLOWDOWN");
        factor = f && atol(f) > 1 ? atol(f) : 1;
    }
    return ms * factor;
}

int tu_wait(pid_t pid, int timeout_ms)
{
    long long end = tu_now_ms() + tu_ms(timeout_ms);
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (r < 0)
            return -2;
        if (tu_now_ms() >= end)
            return -1;
        tu_sleep_ms(10);
    }
}

void tu_stop(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    if (tu_wait(pid, 10000) == -1) {
        kill(pid, SIGKILL);
        tu_wait(pid, 5000);
    }
}

pid_t tu_redis_server_start(int port)
{
    char portbuf[16];
    snprintf(portbuf, sizeof(portbuf), "%d", port);
    char *argv[] = {"redis-server", "--port", portbuf, "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no",     "--dir", "/tmp",   "--logfile", "",       NULL};
    pid_t pid = tu_spawn(argv, NULL, "/dev/null");
    for (int i = 0; i < 200; i++) {
        redisContext *r = redisConnect("127.0.0.1", port);
        if (r && !r->err) {
            redisFree(r);
            return pid;
        }
        if (r)
            redisFree(r);
        tu_sleep_ms(25);
    }
    CHECK(0, "redis-server did not start on port %d", port);
    return -1;
}

const char *tu_bin(const char *name)
{
    static char buf[4][1024];
    static int n;
    char *b = buf[n++ % 4];
    snprintf(b, sizeof(buf[0]), "%s/%s", OUTBOX_BIN_DIR, name);
    return b;
}

void tu_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
}

long long tu_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *tu_outbox_db(const char *test_name, PGconn **out)
{
    const char *ci = tu_fresh_db(test_name);
    PGconn *c = tu_connect(ci);
    char err[512];
    int applied = 0;
    CHECK(outbox_migrate(c, &applied, err, sizeof(err)) == OUTBOX_OK, "migrate: %s", err);
    CHECK(applied >= 1, "no migration applied on a fresh database");
    *out = c;
    return ci;
}

void tu_conf_set(outbox_conf_t *conf, const char *name, const char *value)
{
    char err[512];
    CHECK(outbox_conf_set(conf, name, value, err, sizeof(err)) == OUTBOX_OK, "%s=%s: %s", name,
          value, err);
}

outbox_relay_t *tu_relay_start(outbox_conf_t *conf)
{
    char err[512];
    outbox_relay_t *r = outbox_relay_new(conf, err, sizeof(err));
    CHECK(r, "relay_new: %s", err);
    CHECK(outbox_relay_start(r, err, sizeof(err)) == OUTBOX_OK, "relay_start: %s", err);
    return r;
}

void tu_wait_drained(PGconn *c, int timeout_ms)
{
    long long end = tu_now_ms() + tu_ms(timeout_ms), left = -1;
    while (tu_now_ms() < end) {
        left = tu_query_ll(c, "SELECT count(*) FROM outbox");
        if (left == 0)
            return;
        tu_sleep_ms(50);
    }
    CHECK(0, "outbox not drained after %ld ms: %lld events left", tu_ms(timeout_ms), left);
}
