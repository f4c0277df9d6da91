/* The chaos harness. See chaos_lib.h. */
#define _GNU_SOURCE /* strverscmp */
#include "chaos_lib.h"

#include <errno.h>
#include <glob.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static chaos_t *g_C; /* for the clean-up when a check fails */

#define ADD(field) __atomic_add_fetch(&(field), 1, __ATOMIC_SEQ_CST)
#define GET(field) __atomic_load_n(&(field), __ATOMIC_SEQ_CST)

static int env_int(const char *name, int dflt)
{
    const char *v = getenv(name);
    return v && atoi(v) > 0 ? atoi(v) : dflt;
}

static void say(const chaos_t *C, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char line[1024];
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    double t = C->t_start ? (double)(tu_now_ms() - C->t_start) / 1000.0 : 0.0;
    printf("[chaos %s %7.1fs] %s\n", C->name, t, line);
    fflush(stdout);
}

/* Runs a shell command; returns its exit status. */
static int shell(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    return rc == -1 ? -1 : WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
}

/* "runuser -u USER -- " when we are root (PostgreSQL refuses root), else "". */
static const char *as_user(const chaos_t *C)
{
    static char prefix[64];
    if (geteuid() != 0)
        return "";
    snprintf(prefix, sizeof(prefix), "runuser -u %s -- ", C->user);
    return prefix;
}

/* ---- private servers ---- */

static int pg_start(chaos_t *C)
{
    return shell("%s'%s/pg_ctl' -D '%s/pg/data' -l '%s' -w -t 120 start -o '%s' >/dev/null",
                 as_user(C), C->pgbin, C->dir, C->pg_log, C->pg_opts);
}

static int pg_stop(chaos_t *C)
{
    return shell("%s'%s/pg_ctl' -D '%s/pg/data' -m immediate -w -t 60 stop >/dev/null 2>&1",
                 as_user(C), C->pgbin, C->dir);
}

static void redis_start(chaos_t *C)
{
    char port[16], dir[300], log[320];
    snprintf(port, sizeof(port), "%d", C->redis_port);
    snprintf(dir, sizeof(dir), "%s/redis", C->dir);
    snprintf(log, sizeof(log), "%s/redis/redis.log", C->dir);
    char *argv[] = {"redis-server",
                    "--port",
                    port,
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--dir",
                    dir,
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--logfile",
                    log,
                    NULL};
    C->redis_pid = tu_spawn(argv, NULL, "/dev/null");
    for (int i = 0; i < 2400; i++) {
        redisContext *r = redisConnect("127.0.0.1", C->redis_port);
        redisReply *x = r && !r->err ? redisCommand(r, "PING") : NULL;
        int ok = x && x->type == REDIS_REPLY_STATUS;
        if (x)
            freeReplyObject(x);
        if (r)
            redisFree(r);
        if (ok)
            return;
        CHECK(tu_wait(C->redis_pid, 0) == -1, "redis-server exited at start; see %s", log);
        tu_sleep_ms(25);
    }
    CHECK(0, "redis-server not answering after 60 s; see %s", log);
}

static void redis_stop(chaos_t *C)
{
    if (C->redis_pid <= 0)
        return;
    kill(C->redis_pid, SIGTERM); /* writes and syncs its append-only file */
    if (tu_wait(C->redis_pid, 30000) == -1) {
        kill(C->redis_pid, SIGKILL);
        tu_wait(C->redis_pid, 5000);
    }
    C->redis_pid = 0;
}

/* scripts/rabbitmq.sh SUB on this test's node (halt, restart, stop). */
static void rmq(chaos_t *C, const char *sub)
{
    int rc = shell("'%s/scripts/rabbitmq.sh' %s '%s' </dev/null >/dev/null 2>&1", OUTBOX_SOURCE_DIR,
                   sub, C->rmq_dir);
    if (!strcmp(sub, "stop"))
        C->rmq_dir[0] = '\0';
    else
        CHECK(rc == 0, "rabbitmq.sh %s failed (%d)", sub, rc);
}

/* A RabbitMQ node of our own (scripts/rabbitmq.sh, stopped when we exit
 * however we exit): sets rmq_dir and broker_port. */
static void rmq_start(chaos_t *C)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "RABBITMQ_OWNER_PID=%d '%s/scripts/rabbitmq.sh' start </dev/null",
             (int)getpid(), OUTBOX_SOURCE_DIR);
    FILE *p = popen(cmd, "r");
    CHECK(p, "popen rabbitmq.sh");
    char line[512];
    while (fgets(line, sizeof(line), p)) {
        char *v;
        if ((v = strstr(line, "RABBITMQ_DIR='"))) {
            v += 14;
            snprintf(C->rmq_dir, sizeof(C->rmq_dir), "%.*s", (int)strcspn(v, "'"), v);
        } else if ((v = strstr(line, "OUTBOX_TEST_AMQP_PORT='"))) {
            C->broker_port = atoi(v + 23);
        }
    }
    int rc = pclose(p);
    CHECK(rc == 0 && C->rmq_dir[0] && C->broker_port > 0, "rabbitmq.sh start failed (%d)", rc);
}

static void copy_pg_log(chaos_t *C)
{
    char dst[512];
    snprintf(dst, sizeof(dst), "%s/../tests/chaos-%s-pg.log", OUTBOX_BIN_DIR, C->name);
    shell("cp '%s' '%s' 2>/dev/null", C->pg_log, dst);
}

static void cleanup(void)
{
    chaos_t *C = g_C;
    if (!C)
        return;
    g_C = NULL;
    for (int i = 0; i < C->nprocs; i++)
        if (C->procs[i].pid > 0) {
            kill(C->procs[i].pid, SIGKILL);
            tu_wait(C->procs[i].pid, 5000);
            C->procs[i].pid = 0;
        }
    if (C->redis_pid > 0) {
        kill(C->redis_pid, SIGKILL);
        tu_wait(C->redis_pid, 5000);
    }
    if (C->rmq_dir[0])
        rmq(C, "stop");
    if (C->pg_port) {
        pg_stop(C);
        copy_pg_log(C);
    }
    if (C->dir[0])
        shell("rm -rf '%s'", C->dir);
    fprintf(stderr, "chaos %s: logs in %s/../tests/chaos-%s-*.log\n", C->name, OUTBOX_BIN_DIR,
            C->name);
}

static void find_pgbin(chaos_t *C)
{
    glob_t g;
    C->pgbin[0] = '\0';
    if (glob("/usr/lib/postgresql/*/bin/initdb", 0, NULL, &g) == 0 && g.gl_pathc > 0) {
        /* the newest version: the last in version order */
        const char *best = g.gl_pathv[0];
        for (size_t i = 1; i < g.gl_pathc; i++)
            if (strverscmp(g.gl_pathv[i], best) > 0)
                best = g.gl_pathv[i];
        snprintf(C->pgbin, sizeof(C->pgbin), "%.*s", (int)(strrchr(best, '/') - best), best);
    }
    globfree(&g);
}

/* The test's own time limit: CTest's is generous (large runs), this one
 * fits the size asked for; on expiry the clean-up still runs (atexit). */
static void *watchdog(void *arg)
{
    chaos_t *C = arg;
    tu_sleep_ms((long)C->timeout_s * 1000);
    fprintf(stderr, "FAIL chaos %s: still running after OUTBOX_CHAOS_TIMEOUT=%d s\n", C->name,
            C->timeout_s);
    exit(1);
}

static void init(chaos_t *C, const char *name, int amqp);

void chaos_init(chaos_t *C, const char *name)
{
    init(C, name, 0);
}

void chaos_init_amqp(chaos_t *C, const char *name)
{
    init(C, name, 1);
}

static void init(chaos_t *C, const char *name, int amqp)
{
    memset(C, 0, sizeof(*C));
    pthread_mutex_init(&C->lock, NULL);
    snprintf(C->name, sizeof(C->name), "%s", name);
    C->events = env_int("OUTBOX_CHAOS_EVENTS", 3000);
    C->kills = env_int("OUTBOX_CHAOS_KILLS", 8);
    C->outages = env_int("OUTBOX_CHAOS_OUTAGES", 1 + (int)(C->events / 40000));
    C->clients = env_int("OUTBOX_CHAOS_CLIENTS", 8);
    C->pg_down_ms = env_int("OUTBOX_CHAOS_PG_DOWN_MS", 3000);
    C->broker_down_ms = env_int("OUTBOX_CHAOS_BROKER_DOWN_MS", 3000);
    C->seed = (unsigned)env_int("OUTBOX_CHAOS_SEED", (int)(tu_now_ms() % 1000000) + 1);
    C->timeout_s = env_int("OUTBOX_CHAOS_TIMEOUT", 600 + (int)(C->events * 60 / 1000));
    pthread_t wd;
    CHECK(pthread_create(&wd, NULL, watchdog, C) == 0, "pthread_create");
    pthread_detach(wd);
    srand(C->seed);
    signal(SIGPIPE, SIG_IGN);
    /* The suite's servers are not ours: no child may reach them by accident. */
    const char *inherited[] = {"DATABASE_URL", "REDIS_ADDR",  "OUTBOX_SINK",
                               "DB_HOST",      "DB_PORT",     "DB_NAME",
                               "DB_USER",      "DB_PASSWORD", "SEARCH_DATABASE_URL"};
    for (size_t i = 0; i < sizeof(inherited) / sizeof(inherited[0]); i++)
        unsetenv(inherited[i]);

    find_pgbin(C);
    if (!C->pgbin[0])
        tu_skip("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb)");
    if (!amqp && shell("command -v redis-server >/dev/null 2>&1") != 0)
        tu_skip("redis-server is not installed");
    if (amqp && access("/usr/lib/rabbitmq/bin/rabbitmq-server", X_OK) != 0)
        tu_skip("rabbitmq-server is not installed (apt-get install rabbitmq-server)");
    C->amqp = amqp;
    snprintf(C->user, sizeof(C->user), "postgres");
    struct passwd *pw = getpwnam(C->user);
    if (!pw) {
        snprintf(C->user, sizeof(C->user), "nobody");
        pw = getpwnam(C->user);
    }
    CHECK(pw || geteuid() != 0, "no unprivileged user to run PostgreSQL as");

    snprintf(C->dir, sizeof(C->dir), "/tmp/outbox-chaos-%s.XXXXXX", name);
    CHECK(mkdtemp(C->dir), "mkdtemp: %s", strerror(errno));
    g_C = C;
    atexit(cleanup);
    chmod(C->dir, 0755);
    char p[512];
    snprintf(p, sizeof(p), "%s/pg", C->dir);
    mkdir(p, 0755);
    if (geteuid() == 0)
        CHECK(chown(p, pw->pw_uid, pw->pw_gid) == 0, "chown %s: %s", p, strerror(errno));
    snprintf(p, sizeof(p), "%s/redis", C->dir);
    mkdir(p, 0755);
    snprintf(C->pg_log, sizeof(C->pg_log), "%s/pg/server.log", C->dir);

    C->t_start = tu_now_ms();
    CHECK(shell("%s'%s/initdb' -D '%s/pg/data' -U postgres --auth=trust -E UTF8 >'%s/initdb.log' "
                "2>&1",
                as_user(C), C->pgbin, C->dir, C->dir) == 0,
          "initdb failed; see %s/initdb.log", C->dir);
    C->pg_port = tu_free_port();
    /* fsync off (the machine does not crash here, processes do), but
     * synchronous_commit on: an immediate stop must not lose a commit the
     * server acknowledged. */
    snprintf(C->pg_opts, sizeof(C->pg_opts),
             "-p %d -k %s/pg -c listen_addresses=127.0.0.1 -c max_connections=300 "
             "-c shared_buffers=64MB -c fsync=off -c full_page_writes=off "
             "-c synchronous_commit=on",
             C->pg_port, C->dir);
    CHECK(pg_start(C) == 0, "PostgreSQL did not start; see %s", C->pg_log);
    if (amqp) {
        rmq_start(C);
    } else {
        C->redis_port = C->broker_port = tu_free_port();
        redis_start(C);
    }
    C->proxy = tcpproxy_start("127.0.0.1", C->broker_port);
    snprintf(C->broker_addr, sizeof(C->broker_addr), "127.0.0.1:%d", tcpproxy_port(C->proxy));
    curl_global_init(CURL_GLOBAL_DEFAULT);
    say(C,
        "events %ld, kills %d, outages %d, clients %d, seed %u (OUTBOX_CHAOS_SEED=%u repeats "
        "the choices); PostgreSQL :%d, %s :%d behind proxy %s",
        C->events, C->kills, C->outages, C->clients, C->seed, C->seed, C->pg_port,
        amqp ? "RabbitMQ" : "Redis", C->broker_port, C->broker_addr);
}

void chaos_db(chaos_t *C, const char *dbname, char *out, size_t out_size)
{
    char admin[256];
    snprintf(admin, sizeof(admin), "host=127.0.0.1 port=%d user=postgres dbname=postgres",
             C->pg_port);
    PGconn *c = tu_connect(admin);
    char sql[256];
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", dbname);
    PQclear(tu_exec(c, sql));
    PQfinish(c);
    snprintf(out, out_size, "host=127.0.0.1 port=%d user=postgres dbname=%s", C->pg_port, dbname);
}

void chaos_env(chaos_t *C, const char *kv)
{
    CHECK(C->nenv < CHAOS_MAX_ENV, "too many environment entries");
    snprintf(C->env[C->nenv++], sizeof(C->env[0]), "%s", kv);
}

/* ---- children ---- */

static void spawn(chaos_t *C, chaos_proc_t *p)
{
    char env[CHAOS_MAX_ENV + 10][1200];
    char *envp[CHAOS_MAX_ENV + 11];
    int k = 0;
    for (int i = 0; i < C->nenv; i++)
        snprintf(env[k], sizeof(env[k]), "%s", C->env[i]), envp[k] = env[k], k++;
    for (int i = 0; i < p->nenv; i++)
        snprintf(env[k], sizeof(env[k]), "%s", p->env[i]), envp[k] = env[k], k++;
    envp[k] = NULL;
    char *argv[6] = {(char *)tu_bin(p->bin)};
    for (int i = 0; i < p->nargs; i++)
        argv[1 + i] = p->args[i];
    argv[1 + p->nargs] = NULL;
    int before = p->port ? 0 : count_in_file(p->log, p->ready_log);
    p->pid = tu_spawn(argv, envp, p->log);
    long long end = tu_now_ms() + 120000;
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/readyz", p->port);
    for (;;) {
        int ready;
        if (p->port) {
            http_resp_t r;
            ready = http_do("GET", url, NULL, NULL, NULL, 0, &r) == 200;
        } else {
            ready = count_in_file(p->log, p->ready_log) > before;
        }
        if (ready)
            return;
        int st = tu_wait(p->pid, 0);
        CHECK(st == -1, "%s exited at start (status %d); see %s", p->name, st, p->log);
        CHECK(tu_now_ms() < end, "%s not ready after 120 s; see %s", p->name, p->log);
        tu_sleep_ms(50);
    }
}

chaos_proc_t *chaos_add(chaos_t *C, const char *name, const char *kind, const char *group,
                        const char *port_env, const char *bin, const char *const *args,
                        const char *const *env, const char *ready_log, int victim)
{
    CHECK(C->nprocs < CHAOS_MAX_PROCS, "too many processes");
    chaos_proc_t *p = &C->procs[C->nprocs++];
    memset(p, 0, sizeof(*p));
    snprintf(p->name, sizeof(p->name), "%s", name);
    snprintf(p->kind, sizeof(p->kind), "%s", kind);
    snprintf(p->group, sizeof(p->group), "%s", group ? group : "");
    snprintf(p->bin, sizeof(p->bin), "%s", bin);
    for (int i = 0; args && args[i]; i++) {
        CHECK(p->nargs < 4, "too many arguments");
        snprintf(p->args[p->nargs++], sizeof(p->args[0]), "%s", args[i]);
    }
    for (int i = 0; env && env[i]; i++) {
        CHECK(p->nenv < 7, "too many environment entries");
        snprintf(p->env[p->nenv++], sizeof(p->env[0]), "%s", env[i]);
    }
    if (p->group[0]) {
        p->port = tu_free_port();
        snprintf(p->env[p->nenv++], sizeof(p->env[0]), "%s=%d", port_env ? port_env : "PORT",
                 p->port);
    }
    snprintf(p->ready_log, sizeof(p->ready_log), "%s", ready_log ? ready_log : "");
    p->victim = victim;
    char log[sizeof(p->log)];
    snprintf(log, sizeof(log), "%s/../tests/chaos-%s-%s.log", OUTBOX_BIN_DIR, C->name, name);
    memcpy(p->log, log, sizeof(log));
    unlink(p->log);
    spawn(C, p);
    return p;
}

void chaos_probe(chaos_t *C, const char *group, const char *path)
{
    CHECK(C->nprobes < 8, "too many probes");
    snprintf(C->probe_group[C->nprobes], sizeof(C->probe_group[0]), "%s", group);
    snprintf(C->probe_path[C->nprobes++], sizeof(C->probe_path[0]), "%s", path);
}

/* A child that exited without being killed is a crash: fail with its log.
 * Called with C->lock held. */
static void check_children(chaos_t *C)
{
    for (int i = 0; i < C->nprocs; i++) {
        chaos_proc_t *p = &C->procs[i];
        if (p->pid <= 0)
            continue;
        int st = tu_wait(p->pid, 0);
        if (st != -1)
            p->pid = 0;
        CHECK(st == -1, "%s (%s) exited by itself with status %d: see %s", p->name, p->bin, st,
              p->log);
    }
}

/* ---- HTTP clients ---- */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    http_resp_t *r = ud;
    size_t n = size * nmemb, have = strlen(r->body), room = sizeof(r->body) - 1 - have;
    memcpy(r->body + have, ptr, n < room ? n : room);
    r->body[have + (n < room ? n : room)] = '\0';
    return n;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *ud)
{
    http_resp_t *r = ud;
    size_t n = size * nmemb;
    if (n >= 20 && !strncasecmp(ptr, "Idempotent-Replayed:", 20))
        r->replayed = 1;
    if (n >= 13 && !strncasecmp(ptr, "Content-Type:", 13)) {
        const char *v = ptr + 13;
        while (*v == ' ' && v < ptr + n)
            v++;
        size_t l = strcspn(v, "\r\n");
        if (v + l > ptr + n)
            l = (size_t)(ptr + n - v);
        snprintf(r->content_type, sizeof(r->content_type), "%.*s", (int)l, v);
    }
    return n;
}

static long attempt(CURL *h, const char *method, const char *url, const char *body, const char *key,
                    http_resp_t *out)
{
    memset(out, 0, sizeof(*out));
    curl_easy_reset(h); /* keeps the connection cache: keep-alive */
    struct curl_slist *hdrs = NULL;
    char kh[320];
    if (body)
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    if (key) {
        snprintf(kh, sizeof(kh), "Idempotency-Key: %s", key);
        hdrs = curl_slist_append(hdrs, kh);
    }
    hdrs = curl_slist_append(hdrs, "Expect:");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, out);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->status);
    else
        out->status = 0;
    curl_slist_free_all(hdrs);
    return out->status;
}

void chaos_client_init(chaos_t *C, chaos_client_t *cl, int id)
{
    memset(cl, 0, sizeof(*cl));
    cl->C = C;
    cl->id = id;
    cl->rnd = C->seed + (unsigned)id;
    cl->curl = curl_easy_init();
    CHECK(cl->curl, "curl_easy_init");
}

void chaos_client_term(chaos_client_t *cl)
{
    curl_easy_cleanup(cl->curl);
    cl->curl = NULL;
}

unsigned chaos_rand(chaos_client_t *cl, unsigned n)
{
    return n ? (unsigned)rand_r(&cl->rnd) % n : 0;
}

static int is_problem(const http_resp_t *r)
{
    return !strncasecmp(r->content_type, "application/problem+json", 24);
}

long chaos_call(chaos_client_t *cl, const char *group, const char *method, const char *path,
                const char *body, const char *key, http_resp_t *out)
{
    chaos_t *C = cl->C;
    int idx[CHAOS_MAX_PROCS], n = 0;
    for (int i = 0; i < C->nprocs; i++)
        if (!strcmp(C->procs[i].group, group))
            idx[n++] = i;
    CHECK(n > 0, "no API process in group %s", group);
    cl->ambiguous = 0;
    cl->attempts = 0;
    long long deadline = tu_now_ms() + 600000;
    int backoff = 50;
    for (;;) {
        char url[512];
        snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", C->procs[idx[chaos_rand(cl, n)]].port,
                 path);
        long st = attempt(cl->curl, method, url, body, key, out);
        cl->attempts++;
        ADD(C->requests);
        if (st == 0) {
            ADD(C->transport_errors);
            cl->ambiguous = 1;
        } else if (st >= 200 && st < 300) {
            ADD(C->s2xx);
            if (out->replayed)
                ADD(C->replayed);
            return st;
        } else if (st == 409 && strstr(out->body, "idempotency-key-in-flight")) {
            ADD(C->in_flight_409); /* the first attempt is still running: wait for it */
        } else if (st >= 400 && st < 500) {
            ADD(C->s4xx);
            return st;
        } else if (st == 503) {
            ADD(C->s503);
            if (is_problem(out))
                ADD(C->s503_problem);
            if (strstr(out->body, "commit-outcome-unknown")) {
                ADD(C->commit_unknown);
                cl->ambiguous = 1;
            }
        } else if (st == 500) {
            ADD(C->s500);
            cl->ambiguous = 1;
        } else {
            ADD(C->s5xx_other);
            cl->ambiguous = 1;
        }
        ADD(C->retries);
        CHECK(tu_now_ms() < deadline, "%s %s (key %s) not accepted after 10 minutes: last %ld %s",
              method, path, key ? key : "-", st, out->body);
        tu_sleep_ms(backoff / 2 + (long)chaos_rand(cl, (unsigned)backoff / 2 + 1));
        backoff = backoff * 2 > 1000 ? 1000 : backoff * 2;
    }
}

/* ---- faults ---- */

typedef enum { F_KILL, F_PG, F_REDIS, F_SLOW, F_STALL, F_CUT, F_FREEZE, F_CATCHUP } fault_kind_t;

typedef struct fault_s {
    double at; /* fraction of the events accepted before it */
    fault_kind_t kind;
} fault_t;

static int by_at(const void *a, const void *b)
{
    double x = ((const fault_t *)a)->at, y = ((const fault_t *)b)->at;
    return x < y ? -1 : x > y;
}

static double frand(void)
{
    return (double)rand() / ((double)RAND_MAX + 1.0);
}

static void kill_one(chaos_t *C, int nth)
{
    int victims[CHAOS_MAX_PROCS], n = 0;
    char kinds[CHAOS_MAX_PROCS][16];
    int nkinds = 0;
    for (int i = 0; i < C->nprocs; i++) {
        if (!C->procs[i].victim)
            continue;
        victims[n++] = i;
        int seen = 0;
        for (int k = 0; k < nkinds; k++)
            seen |= !strcmp(kinds[k], C->procs[i].kind);
        if (!seen)
            snprintf(kinds[nkinds++], sizeof(kinds[0]), "%s", C->procs[i].kind);
    }
    CHECK(n > 0, "no process to kill");
    chaos_proc_t *p;
    if (nth < nkinds) { /* the first kills visit every kind once */
        int of[CHAOS_MAX_PROCS], m = 0;
        for (int i = 0; i < n; i++)
            if (!strcmp(C->procs[victims[i]].kind, kinds[nth]))
                of[m++] = victims[i];
        p = &C->procs[of[rand() % m]];
    } else {
        p = &C->procs[victims[rand() % n]];
    }
    pthread_mutex_lock(&C->lock);
    check_children(C);
    say(C, "SIGKILL %s (pid %d)", p->name, (int)p->pid);
    kill(p->pid, SIGKILL);
    tu_wait(p->pid, 10000);
    p->pid = 0;
    p->kills++;
    C->kills_done++;
    pthread_mutex_unlock(&C->lock);
    tu_sleep_ms(rand() % 1000); /* down for a while */
    pthread_mutex_lock(&C->lock);
    spawn(C, p);
    pthread_mutex_unlock(&C->lock);
}

/* GET every API's /readyz and probe paths once; counts 503 problem+json.
 * Returns how many answers were 2xx/4xx (served normally). */
static int probe_apis(chaos_t *C, int *problems, int *others)
{
    int fine = 0;
    for (int i = 0; i < C->nprocs; i++) {
        chaos_proc_t *p = &C->procs[i];
        if (!p->port || p->pid <= 0)
            continue;
        for (int j = -1; j < C->nprobes; j++) {
            if (j >= 0 && strcmp(C->probe_group[j], p->group))
                continue;
            char url[256];
            snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", p->port,
                     j < 0 ? "/readyz" : C->probe_path[j]);
            http_resp_t r;
            long st = http_do("GET", url, NULL, NULL, NULL, 0, &r);
            if (st == 503 && is_problem(&r))
                (*problems)++;
            else if (st >= 200 && st < 500)
                fine++;
            else
                (*others)++;
        }
    }
    return fine;
}

/* The number of answers one probe_apis round gets from healthy APIs. */
static int api_count(const chaos_t *C)
{
    int n = 0;
    for (int i = 0; i < C->nprocs; i++) {
        if (!C->procs[i].port)
            continue;
        n++;
        for (int j = 0; j < C->nprobes; j++)
            n += !strcmp(C->probe_group[j], C->procs[i].group);
    }
    return n;
}

static void pg_outage(chaos_t *C)
{
    say(C, "PostgreSQL: immediate stop, down for %d ms", C->pg_down_ms);
    pthread_mutex_lock(&C->lock); /* no child restarts while the database is away */
    CHECK(pg_stop(C) == 0, "pg_ctl stop failed");
    long long t0 = tu_now_ms();
    int problems = 0, others = 0;
    while (tu_now_ms() - t0 < C->pg_down_ms) {
        probe_apis(C, &problems, &others);
        tu_sleep_ms(200);
    }
    CHECK(pg_start(C) == 0, "PostgreSQL did not start again; see %s", C->pg_log);
    long long up = tu_now_ms();
    pthread_mutex_unlock(&C->lock);
    __atomic_add_fetch(&C->probe_503_problem, problems, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&C->probe_other, others, __ATOMIC_SEQ_CST);
    CHECK(problems > 0,
          "no API answered 503 application/problem+json while PostgreSQL was down (%d other "
          "answers)",
          others);
    /* Recovery by themselves: no restart, every API serves again. */
    int want = api_count(C);
    for (;;) {
        int p2 = 0, o2 = 0;
        pthread_mutex_lock(&C->lock);
        int fine = probe_apis(C, &p2, &o2);
        pthread_mutex_unlock(&C->lock);
        if (fine >= want)
            break;
        CHECK(tu_now_ms() - up < 120000,
              "the APIs did not recover within 120 s of PostgreSQL's restart (%d of %d probes "
              "served)",
              fine, want);
        tu_sleep_ms(100);
    }
    long long rec = tu_now_ms() - up;
    if (rec > C->max_recovery_ms)
        C->max_recovery_ms = rec;
    C->pg_outages++;
    say(C,
        "PostgreSQL back; %d answers 503 problem+json while down, APIs served again after %lld ms",
        problems, rec);
}

/* SIGSTOP (on) or SIGCONT every child that serves no API. */
static void freeze(chaos_t *C, int on)
{
    pthread_mutex_lock(&C->lock);
    for (int i = 0; i < C->nprocs; i++)
        if (!C->procs[i].port && C->procs[i].pid > 0)
            kill(C->procs[i].pid, on ? SIGSTOP : SIGCONT);
    pthread_mutex_unlock(&C->lock);
    say(C,
        on ? "relays and consumers frozen (SIGSTOP) while the load goes on (%ld of %ld "
             "operations done)"
           : "relays and consumers thawed (SIGCONT): a backlog to work through (%ld of %ld "
             "operations done)",
        GET(C->done), C->ops);
    if (on)
        C->freezes++;
}

static void broker_outage(chaos_t *C)
{
    if (C->amqp) {
        say(C, "RabbitMQ: stop (halt), down for %d ms", C->broker_down_ms);
        rmq(C, "halt");
        tu_sleep_ms(C->broker_down_ms);
        rmq(C, "restart");
        say(C, "RabbitMQ back (same port, same data)");
    } else {
        say(C, "Redis: stop, down for %d ms", C->broker_down_ms);
        redis_stop(C);
        tu_sleep_ms(C->broker_down_ms);
        redis_start(C);
        say(C, "Redis back (same port, same append-only file)");
    }
    C->broker_outages++;
}

static void net_fault(chaos_t *C, fault_kind_t k)
{
    if (k == F_SLOW) {
        say(C, "broker network: +150 ms per chunk for 4 s");
        tcpproxy_set_delay(C->proxy, 150);
        tu_sleep_ms(4000);
        tcpproxy_set_delay(C->proxy, 0);
        C->net_slow++;
    } else if (k == F_STALL) {
        say(C, "broker network: partitioned (nothing moves, nothing closes) for 4 s");
        tcpproxy_set_stall(C->proxy, 1);
        tu_sleep_ms(4000);
        tcpproxy_set_stall(C->proxy, 0);
        C->net_stall++;
    } else {
        say(C, "broker network: every connection cut, new ones refused, for 3 s");
        tcpproxy_set_down(C->proxy, 1);
        tu_sleep_ms(3000);
        tcpproxy_set_down(C->proxy, 0);
        C->net_cut++;
    }
    say(C, "broker network healed");
}

static void *fault_thread(void *arg)
{
    chaos_t *C = arg;
    /* At the end: every relay and consumer frozen (SIGSTOP) for the last
     * 15% of the load, then, once the load is over, thawed and PostgreSQL
     * stopped while they work through the backlog with no API commits
     * around (an API's commit would flush the WAL of theirs). */
    int n = C->kills + 5 * C->outages + 2;
    fault_t *plan = calloc((size_t)n, sizeof(*plan));
    CHECK(plan, "oom");
    int k = 0;
    for (int i = 0; i < C->kills; i++)
        plan[k++] = (fault_t){0.02 + 0.9 * frand(), F_KILL};
    for (int i = 0; i < C->outages; i++) {
        double slot = 1.0 / C->outages;
        plan[k++] = (fault_t){slot * (i + 0.2 + 0.6 * frand()), F_PG};
        plan[k++] = (fault_t){slot * (i + 0.2 + 0.6 * frand()), F_REDIS};
        plan[k++] = (fault_t){0.05 + 0.9 * frand(), F_SLOW};
        plan[k++] = (fault_t){0.05 + 0.9 * frand(), F_STALL};
        plan[k++] = (fault_t){0.05 + 0.9 * frand(), F_CUT};
    }
    plan[k++] = (fault_t){0.85, F_FREEZE};
    plan[k++] = (fault_t){1.0, F_CATCHUP};
    qsort(plan, (size_t)n, sizeof(*plan), by_at);
    /* The load may run only a little ahead of the next fault (the gate), so
     * that every fault lands while requests flow, however fast they go. */
    long margin = C->ops / 100 + C->clients + 2;
    __atomic_store_n(&C->gate, (long)(plan[0].at * (double)C->ops) + margin, __ATOMIC_SEQ_CST);
    int kills = 0;
    for (int i = 0; i < n; i++) {
        while (!GET(C->load_done) && GET(C->done) < (long)(plan[i].at * (double)C->ops))
            tu_sleep_ms(20);
        tu_sleep_ms(rand() % 400); /* a random moment */
        long next = i + 1 < n ? (long)(plan[i + 1].at * (double)C->ops) + margin : C->ops;
        __atomic_store_n(&C->gate, next, __ATOMIC_SEQ_CST);
        switch (plan[i].kind) {
        case F_KILL:
            kill_one(C, kills++);
            break;
        case F_PG:
            pg_outage(C);
            break;
        case F_REDIS:
            broker_outage(C);
            break;
        case F_FREEZE:
            freeze(C, 1);
            break;
        case F_CATCHUP:
            while (!GET(C->load_done))
                tu_sleep_ms(20);
            freeze(C, 0);
            tu_sleep_ms(50 + rand() % 300);
            pg_outage(C);
            break;
        default:
            net_fault(C, plan[i].kind);
        }
    }
    free(plan);
    __atomic_store_n(&C->gate, C->ops, __ATOMIC_SEQ_CST);
    __atomic_store_n(&C->faults_done, 1, __ATOMIC_SEQ_CST);
    say(C, "every fault done");
    return NULL;
}

/* ---- load ---- */

typedef struct load_s {
    chaos_client_t cl;
    chaos_op_fn op;
    void *ud;
    pthread_t t;
    int finished; /* atomic */
} load_t;

static void *load_thread(void *arg)
{
    load_t *L = arg;
    chaos_t *C = L->cl.C;
    long i;
    while ((i = __atomic_fetch_add(&C->next, 1, __ATOMIC_SEQ_CST)) < C->ops) {
        while (i >= GET(C->gate))
            tu_sleep_ms(10);
        L->op(&L->cl, i, L->ud);
        ADD(C->done);
    }
    chaos_client_term(&L->cl);
    __atomic_store_n(&L->finished, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

void chaos_accepted(chaos_t *C)
{
    ADD(C->accepted);
}

void chaos_run(chaos_t *C, long ops, chaos_op_fn op, void *ud)
{
    C->ops = ops > 0 ? ops : 1;
    long long t0 = C->t_run = tu_now_ms();
    C->gate = 0; /* set by the fault thread */
    pthread_t ft;
    CHECK(pthread_create(&ft, NULL, fault_thread, C) == 0, "pthread_create");
    load_t *L = calloc((size_t)C->clients, sizeof(*L));
    CHECK(L, "oom");
    for (int i = 0; i < C->clients; i++) {
        chaos_client_init(C, &L[i].cl, i);
        L[i].op = op;
        L[i].ud = ud;
        CHECK(pthread_create(&L[i].t, NULL, load_thread, &L[i]) == 0, "pthread_create");
    }
    long long last = tu_now_ms();
    for (;;) {
        int finished = 0;
        for (int i = 0; i < C->clients; i++)
            finished += __atomic_load_n(&L[i].finished, __ATOMIC_SEQ_CST);
        if (finished == C->clients && !GET(C->load_done)) {
            C->t_load_end = tu_now_ms();
            __atomic_store_n(&C->load_done, 1, __ATOMIC_SEQ_CST);
            say(C, "load done: %ld writes accepted in %.1f s", GET(C->accepted),
                (double)(C->t_load_end - t0) / 1000.0);
        }
        if (GET(C->load_done) && GET(C->faults_done))
            break;
        if (pthread_mutex_trylock(&C->lock) == 0) {
            check_children(C);
            pthread_mutex_unlock(&C->lock);
        }
        if (tu_now_ms() - last >= 15000) {
            last = tu_now_ms();
            say(C,
                "%ld/%ld writes accepted, %ld requests, %ld retries, %d kills, %d pg / %d broker "
                "outages, broker slow/stall/cut %d/%d/%d",
                GET(C->accepted), C->events, GET(C->requests), GET(C->retries), C->kills_done,
                C->pg_outages, C->broker_outages, C->net_slow, C->net_stall, C->net_cut);
        }
        tu_sleep_ms(100);
    }
    for (int i = 0; i < C->clients; i++)
        pthread_join(L[i].t, NULL);
    pthread_join(ft, NULL);
    free(L);
}

void chaos_metric(chaos_t *C, const char *name, long long value)
{
    for (int i = 0; i < C->nmetrics; i++)
        if (!strcmp(C->metric_name[i], name)) {
            C->metric_value[i] = value;
            return;
        }
    CHECK(C->nmetrics < CHAOS_MAX_METRICS, "too many metrics");
    snprintf(C->metric_name[C->nmetrics], sizeof(C->metric_name[0]), "%s", name);
    C->metric_value[C->nmetrics++] = value;
}

void chaos_wait_ll(chaos_t *C, PGconn **c, const char *conninfo, const char *sql, long long want,
                   int timeout_ms, const char *what)
{
    long long t0 = tu_now_ms(), last = t0, v = -1;
    for (;;) {
        if (!*c || PQstatus(*c) != CONNECTION_OK) {
            PQfinish(*c);
            *c = PQconnectdb(conninfo);
        }
        PGresult *r = PQexec(*c, sql);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0)
            v = atoll(PQgetvalue(r, 0, 0));
        PQclear(r);
        if (v == want)
            return;
        CHECK(tu_now_ms() - t0 < timeout_ms, "%s: %lld after %d ms, want %lld (%s)", what, v,
              timeout_ms, want, sql);
        if (tu_now_ms() - last >= 30000) {
            last = tu_now_ms();
            say(C, "waiting: %s: %lld, want %lld", what, v, want);
        }
        pthread_mutex_lock(&C->lock);
        check_children(C);
        pthread_mutex_unlock(&C->lock);
        tu_sleep_ms(200);
    }
}

int chaos_drain_ms(const chaos_t *C)
{
    return 180000 + (int)(C->events * 6);
}

/* ---- id sets ---- */

void chaos_ids_add(chaos_ids_t *s, const char *id)
{
    if (s->n == s->cap) {
        long cap = s->cap ? s->cap * 2 : 1024;
        void *v = realloc(s->v, (size_t)cap * sizeof(*s->v));
        CHECK(v, "oom");
        s->v = v;
        s->cap = cap;
    }
    snprintf(s->v[s->n++], sizeof(s->v[0]), "%s", id);
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

long chaos_ids_sort(chaos_ids_t *s, int dedupe)
{
    if (s->n)
        qsort(s->v, (size_t)s->n, sizeof(s->v[0]), cmp_id);
    long dups = 0, w = 0;
    for (long i = 0; i < s->n; i++) {
        if (i > 0 && !strcmp(s->v[i], s->v[i - 1])) {
            dups++;
            if (dedupe)
                continue;
        }
        if (w != i)
            memcpy(s->v[w], s->v[i], sizeof(s->v[0]));
        w++;
    }
    s->n = w;
    return dups;
}

static long lower_bound(const chaos_ids_t *s, const char *id)
{
    long lo = 0, hi = s->n;
    while (lo < hi) {
        long mid = (lo + hi) / 2;
        if (strcmp(s->v[mid], id) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int chaos_ids_has(const chaos_ids_t *s, const char *id)
{
    long i = lower_bound(s, id);
    return i < s->n && !strcmp(s->v[i], id);
}

long chaos_ids_count(const chaos_ids_t *s, const char *id)
{
    long n = 0;
    for (long i = lower_bound(s, id); i < s->n && !strcmp(s->v[i], id); i++)
        n++;
    return n;
}

void chaos_ids_free(chaos_ids_t *s)
{
    free(s->v);
    memset(s, 0, sizeof(*s));
}

long chaos_stream_scan(chaos_t *C, const char *stream,
                       void (*fn)(const char *id, const char *type, const char *event, void *ud),
                       void *ud)
{
    CHECK(!C->amqp, "chaos_stream_scan reads Redis streams only");
    redisContext *r = tu_redis_connect("127.0.0.1", C->redis_port);
    char start[64] = "-";
    long n = 0;
    for (;;) {
        redisReply *x = redisCommand(r, "XRANGE %s %s + COUNT 1000", stream, start);
        CHECK(x && x->type == REDIS_REPLY_ARRAY, "XRANGE %s: %s", stream,
              x && x->str ? x->str : r->errstr);
        if (x->elements == 0) {
            freeReplyObject(x);
            break;
        }
        for (size_t i = 0; i < x->elements; i++) {
            redisReply *e = x->element[i], *f = e->element[1];
            const char *id = "", *type = "", *event = "";
            for (size_t j = 0; j + 1 < f->elements; j += 2) {
                const char *name = f->element[j]->str;
                if (!strcmp(name, "id"))
                    id = f->element[j + 1]->str;
                else if (!strcmp(name, "type"))
                    type = f->element[j + 1]->str;
                else if (!strcmp(name, "event"))
                    event = f->element[j + 1]->str;
            }
            fn(id, type, event, ud);
            n++;
            snprintf(start, sizeof(start), "(%s", e->element[0]->str);
        }
        freeReplyObject(x);
    }
    redisFree(r);
    return n;
}

void chaos_log_ids(chaos_t *C, const char *kind, const char *needle, chaos_ids_t *ids)
{
    size_t nl = strlen(needle);
    for (int i = 0; i < C->nprocs; i++) {
        if (kind && strcmp(C->procs[i].kind, kind))
            continue;
        FILE *f = fopen(C->procs[i].log, "r");
        if (!f)
            continue;
        char *line = NULL;
        size_t cap = 0;
        while (getline(&line, &cap, f) > 0) {
            for (const char *p = line; (p = strstr(p, needle)); p += nl) {
                const char *w = p + nl;
                size_t len = strspn(w, "0123456789abcdefABCDEF-");
                char id[64];
                snprintf(id, sizeof(id), "%.*s", (int)(len < 63 ? len : 63), w);
                if (len)
                    chaos_ids_add(ids, id);
            }
        }
        free(line);
        fclose(f);
    }
}

/* ---- the end ---- */

void chaos_finish(chaos_t *C)
{
    long long t_end = tu_now_ms();
    for (int i = C->nprocs - 1; i >= 0; i--) {
        chaos_proc_t *p = &C->procs[i];
        if (p->pid <= 0)
            continue;
        kill(p->pid, SIGTERM);
        int rc = tu_wait(p->pid, 60000);
        if (rc == -1) {
            kill(p->pid, SIGKILL);
            tu_wait(p->pid, 5000);
        }
        p->pid = 0;
        CHECK(rc == 0, "%s did not stop cleanly on SIGTERM after the chaos (status %d); see %s",
              p->name, rc, p->log);
    }
    redis_stop(C);
    if (C->rmq_dir[0])
        rmq(C, "stop");
    tcpproxy_stop(C->proxy);
    C->proxy = NULL;
    pg_stop(C);
    copy_pg_log(C);
    C->pg_port = 0;
    shell("rm -rf '%s'", C->dir);
    C->dir[0] = '\0';
    g_C = NULL;

    /* kills per kind */
    char kinds[CHAOS_MAX_PROCS][16];
    int kk[CHAOS_MAX_PROCS] = {0}, nk = 0;
    for (int i = 0; i < C->nprocs; i++) {
        int j = 0;
        while (j < nk && strcmp(kinds[j], C->procs[i].kind))
            j++;
        if (j == nk)
            snprintf(kinds[nk++], sizeof(kinds[0]), "%s", C->procs[i].kind);
        kk[j] += C->procs[i].kills;
    }
    char kills[256] = "", metrics[1024] = "";
    size_t off = 0;
    for (int j = 0; j < nk; j++)
        if (kk[j])
            off += (size_t)snprintf(kills + off, sizeof(kills) - off, "%s%s %d", off ? ", " : "",
                                    kinds[j], kk[j]);
    off = 0;
    for (int i = 0; i < C->nmetrics && off < sizeof(metrics); i++)
        off += (size_t)snprintf(metrics + off, sizeof(metrics) - off, " %s=%lld", C->metric_name[i],
                                C->metric_value[i]);
    double load_s = (double)(C->t_load_end - C->t_run) / 1000.0,
           after_s = (double)(t_end - C->t_load_end) / 1000.0,
           total_s = (double)(t_end - C->t_start) / 1000.0;
    printf("CHAOS %s: %ld events accepted (%ld requests, %ld retries, %ld replayed), %d kills "
           "(%s), %d PostgreSQL outages (503 problem+json: %ld probes, %ld clients; APIs back "
           "within %lld ms), %d broker outages, broker slow/stall/cut %d/%d/%d, %d freezes, "
           "load %.1f s, drain and checks %.1f s, total %.1f s, lost 0, seed %u;%s\n",
           C->name, C->accepted, C->requests, C->retries, C->replayed, C->kills_done, kills,
           C->pg_outages, C->probe_503_problem, C->s503_problem, C->max_recovery_ms,
           C->broker_outages, C->net_slow, C->net_stall, C->net_cut, C->freezes, load_s, after_s,
           total_s, C->seed, metrics);
    fflush(stdout);

    const char *report = getenv("OUTBOX_CHAOS_REPORT");
    if (!report || !*report)
        return;
    json_t *o = json_object(), *kj = json_object(), *mj = json_object();
    for (int j = 0; j < nk; j++)
        json_object_set_new(kj, kinds[j], json_integer(kk[j]));
    for (int i = 0; i < C->nmetrics; i++)
        json_object_set_new(mj, C->metric_name[i], json_integer(C->metric_value[i]));
    json_object_set_new(o, "test", json_string(C->name));
    json_object_set_new(o, "broker", json_string(C->amqp ? "amqp" : "redis"));
    json_object_set_new(o, "events", json_integer(C->accepted));
    json_object_set_new(o, "requests", json_integer(C->requests));
    json_object_set_new(o, "retries", json_integer(C->retries));
    json_object_set_new(o, "replayed", json_integer(C->replayed));
    json_object_set_new(o, "transport_errors", json_integer(C->transport_errors));
    json_object_set_new(o, "commit_outcome_unknown", json_integer(C->commit_unknown));
    json_object_set_new(o, "http_503_problem_clients", json_integer(C->s503_problem));
    json_object_set_new(o, "http_503_problem_probes", json_integer(C->probe_503_problem));
    json_object_set_new(o, "kills", json_integer(C->kills_done));
    json_object_set_new(o, "kills_by_kind", kj);
    json_object_set_new(o, "pg_outages", json_integer(C->pg_outages));
    json_object_set_new(o, "pg_recovery_ms_max", json_integer(C->max_recovery_ms));
    json_object_set_new(o, "broker_outages", json_integer(C->broker_outages));
    json_object_set_new(o, "broker_slow", json_integer(C->net_slow));
    json_object_set_new(o, "broker_partition", json_integer(C->net_stall));
    json_object_set_new(o, "broker_cut", json_integer(C->net_cut));
    json_object_set_new(o, "freezes", json_integer(C->freezes));
    json_object_set_new(o, "load_ms", json_integer(C->t_load_end - C->t_run));
    json_object_set_new(o, "drain_and_checks_ms", json_integer(t_end - C->t_load_end));
    json_object_set_new(o, "total_ms", json_integer(t_end - C->t_start));
    json_object_set_new(o, "lost", json_integer(0));
    json_object_set_new(o, "seed", json_integer(C->seed));
    json_object_set_new(o, "checks", mj);
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    FILE *f = fopen(report, "a");
    if (f && line)
        fprintf(f, "%s\n", line);
    if (f)
        fclose(f);
    free(line);
}
