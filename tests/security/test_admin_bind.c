/* security_admin_bind: the admin and metrics listener (metrics_addr:
 * /metrics, /healthz, /readyz, the dashboard and its actions) binds to
 * 127.0.0.1 unless configured otherwise, in outbox-relay and in every
 * service process that runs a relay (orders-service, users-service,
 * transactions-service, cars-service, pizza-job).
 *
 * Each program is started with OUTBOX_METRICS_ADDR unset; its listening
 * sockets are read from /proc/net/tcp (matched to the process through
 * /proc/PID/fd). Every listener other than the service API's port must be
 * bound to 127.0.0.1, and there must be one (the admin server). Then each
 * is started with OUTBOX_METRICS_ADDR=127.0.0.3:PORT and must listen there,
 * and outbox-relay with 0.0.0.0:PORT (and an admin token) must listen on
 * all addresses: configuring the address changes it. The API listener is
 * the service's public port (http_addr, default 0.0.0.0): it is bound to
 * 127.0.0.1 here only to keep the test off the network. */
#include <arpa/inet.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

typedef struct listener_s {
    unsigned addr; /* host order */
    int port;
} listener_t;

/* The TCP listeners of pid (IPv4). Returns how many (at most max). */
static int listeners(pid_t pid, listener_t *out, int max)
{
    char dir[64];
    snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
    unsigned long inodes[512];
    int ni = 0;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)) && ni < 512) {
        char p[400], link[128];
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        ssize_t n = readlink(p, link, sizeof(link) - 1);
        if (n <= 0)
            continue;
        link[n] = '\0';
        unsigned long ino;
        if (sscanf(link, "socket:[%lu]", &ino) == 1)
            inodes[ni++] = ino;
    }
    closedir(d);
    FILE *f = fopen("/proc/net/tcp", "r");
    CHECK(f, "/proc/net/tcp");
    char line[512];
    int n = 0;
    CHECK(fgets(line, sizeof(line), f), "/proc/net/tcp header");
    while (fgets(line, sizeof(line), f) && n < max) {
        unsigned la, lp, ra, rp, st;
        unsigned long ino;
        if (sscanf(line, " %*d: %8X:%4X %8X:%4X %2X %*s %*s %*s %*d %*d %lu", &la, &lp, &ra, &rp,
                   &st, &ino) != 6 ||
            st != 0x0A)
            continue;
        for (int i = 0; i < ni; i++)
            if (inodes[i] == ino) {
                /* /proc prints the network-order address as a native integer */
                out[n].addr = ntohl(la);
                out[n].port = (int)lp;
                n++;
            }
    }
    fclose(f);
    return n;
}

static const char *ip(unsigned a)
{
    static char buf[4][20];
    static int k;
    char *b = buf[k++ % 4];
    snprintf(b, 20, "%u.%u.%u.%u", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255);
    return b;
}

typedef struct prog_s {
    const char *bin;
    const char *port_env; /* the API's port variable, or NULL (no API) */
    int listeners;        /* how many to wait for */
} prog_t;

static const prog_t progs[] = {
    {"outbox-relay", NULL, 1},
    {"orders-service", "PORT", 2},
    {"users-service", "SERVER_PORT", 2},
    {"transactions-service", "SERVER_PORT", 2},
    {"cars-service", "PORT", 2},
    {"pizza-job", NULL, 2}, /* its steps endpoint (127.0.0.1) and the admin server */
};

/* Starts prog with metrics_addr (NULL: unset), waits for its listeners,
 * fills them in; returns the count and the API port in *api. */
static int run(const prog_t *p, const char *metrics, const char *db, listener_t *ls, int max,
               int *api, pid_t *pidp)
{
    static char env[8][1200];
    char *envp[9];
    int k = 0;
    *api = p->port_env ? tu_free_port() : -1;
    snprintf(env[k], sizeof(env[k]), "DATABASE_URL=%s", db), envp[k] = env[k], k++;
    snprintf(env[k], sizeof(env[k]), "REDIS_ADDR=%s", getenv("OUTBOX_TEST_REDIS")),
        envp[k] = env[k], k++;
    snprintf(env[k], sizeof(env[k]), "OUTBOX_HTTP_ADDR=127.0.0.1"), envp[k] = env[k], k++;
    if (p->port_env)
        snprintf(env[k], sizeof(env[k]), "%s=%d", p->port_env, *api), envp[k] = env[k], k++;
    if (metrics)
        snprintf(env[k], sizeof(env[k]), "OUTBOX_METRICS_ADDR=%s", metrics), envp[k] = env[k], k++;
    if (metrics && !strncmp(metrics, "0.0.0.0", 7))
        snprintf(env[k], sizeof(env[k]), "OUTBOX_ADMIN_TOKEN=bind-test-token"), envp[k] = env[k],
                                                                                k++;
    envp[k] = NULL;
    char log[300];
    snprintf(log, sizeof(log), "%s/../tests/security-bind-%s.log", OUTBOX_BIN_DIR, p->bin);
    char *argv[] = {(char *)tu_bin(p->bin), NULL};
    pid_t pid = tu_spawn(argv, envp, log);
    *pidp = pid;
    int n = 0;
    for (int i = 0; i < 300; i++) {
        n = listeners(pid, ls, max);
        if (n >= p->listeners)
            break;
        CHECK(tu_wait(pid, 0) == -1, "%s exited early; see %s", p->bin, log);
        tu_sleep_ms(50);
    }
    CHECK(n >= p->listeners, "%s: %d listener(s) after 15 s, want %d; see %s", p->bin, n,
          p->listeners, log);
    return n;
}

static void stop(pid_t pid)
{
    kill(pid, SIGTERM);
    if (tu_wait(pid, 20000) == -1) {
        kill(pid, SIGKILL);
        tu_wait(pid, 5000);
    }
}

int main(void)
{
    if (!getenv("OUTBOX_TEST_PG") || !getenv("OUTBOX_TEST_REDIS"))
        tu_skip("OUTBOX_TEST_PG / OUTBOX_TEST_REDIS are not set: run through scripts/test.sh");
    unsetenv("OUTBOX_METRICS_ADDR");
    unsetenv("OUTBOX_ADMIN_TOKEN");
    for (size_t i = 0; i < sizeof(progs) / sizeof(progs[0]); i++) {
        const prog_t *p = &progs[i];
        char name[64], db[1024];
        snprintf(name, sizeof(name), "bind_%s", p->bin);
        for (char *c = name; *c; c++)
            if (*c == '-')
                *c = '_';
        snprintf(db, sizeof(db), "%s", tu_fresh_db(name));
        listener_t ls[16];
        int api;
        pid_t pid;

        /* defaults: the admin server on 127.0.0.1 */
        int n = run(p, NULL, db, ls, 16, &api, &pid);
        int admin = 0;
        for (int j = 0; j < n; j++) {
            if (ls[j].port == api)
                continue;
            CHECK(ls[j].addr == 0x7f000001, "%s with defaults listens on %s:%d, not 127.0.0.1",
                  p->bin, ip(ls[j].addr), ls[j].port);
            admin++;
            printf("%-22s default   listens on %s:%d\n", p->bin, ip(ls[j].addr), ls[j].port);
        }
        CHECK(admin >= 1, "%s: no admin listener found", p->bin);
        stop(pid);

        /* configured: another loopback address (and, for the relay, all addresses) */
        const char *hosts[] = {"127.0.0.3", "0.0.0.0"};
        unsigned want[] = {0x7f000003, 0};
        for (int h = 0; h < (p->port_env || !strcmp(p->bin, "pizza-job") ? 1 : 2); h++) {
            int port = tu_free_port();
            char addr[64];
            snprintf(addr, sizeof(addr), "%s:%d", hosts[h], port);
            n = run(p, addr, db, ls, 16, &api, &pid);
            int found = 0;
            for (int j = 0; j < n; j++)
                if (ls[j].port == port) {
                    CHECK(ls[j].addr == want[h], "%s with OUTBOX_METRICS_ADDR=%s listens on %s",
                          p->bin, addr, ip(ls[j].addr));
                    found = 1;
                }
            CHECK(found, "%s with OUTBOX_METRICS_ADDR=%s: no listener on port %d", p->bin, addr,
                  port);
            printf("%-22s configured listens on %s\n", p->bin, addr);
            stop(pid);
        }
    }
    printf("PASS security_admin_bind\n");
    return 0;
}
