/* The chaos harness: set-up, children, HTTP clients, the load, the report.
 * See chaos_lib.h; faults in chaos_faults.c, private servers in
 * chaos_servers.c, checks in chaos_check.c. */
#include "chaos_int.h"

#include <errno.h>
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

static int env_int(const char *name, int dflt)
{
    const char *v = getenv(name);
    return v && atoi(v) > 0 ? atoi(v) : dflt;
}

void chaos__say(const chaos_t *C, const char *fmt, ...)
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
int chaos__shell(const char *fmt, ...)
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
const char *chaos__as_user(const chaos_t *C)
{
    static char prefix[64];
    if (geteuid() != 0)
        return "";
    snprintf(prefix, sizeof(prefix), "runuser -u %s -- ", C->user);
    return prefix;
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
        chaos__rmq(C, "stop");
    if (C->pg_port) {
        chaos__pg_stop(C);
        chaos__copy_pg_log(C);
    }
    if (C->dir[0])
        chaos__shell("rm -rf '%s'", C->dir);
    fprintf(stderr, "chaos %s: logs in %s/../tests/chaos-%s-*.log\n", C->name, OUTBOX_BIN_DIR,
            C->name);
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

    chaos__find_pgbin(C);
    if (!C->pgbin[0])
        tu_skip("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb)");
    if (!amqp && chaos__shell("command -v redis-server >/dev/null 2>&1") != 0)
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
    CHECK(chaos__shell(
              "%s'%s/initdb' -D '%s/pg/data' -U postgres --auth=trust -E UTF8 >'%s/initdb.log' "
              "2>&1",
              chaos__as_user(C), C->pgbin, C->dir, C->dir) == 0,
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
    CHECK(chaos__pg_start(C) == 0, "PostgreSQL did not start; see %s", C->pg_log);
    if (amqp) {
        chaos__rmq_start(C);
    } else {
        C->redis_port = C->broker_port = tu_free_port();
        chaos__redis_start(C);
    }
    C->proxy = tcpproxy_start("127.0.0.1", C->broker_port);
    snprintf(C->broker_addr, sizeof(C->broker_addr), "127.0.0.1:%d", tcpproxy_port(C->proxy));
    curl_global_init(CURL_GLOBAL_DEFAULT);
    chaos__say(
        C,
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

void chaos__spawn(chaos_t *C, chaos_proc_t *p)
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
    chaos__spawn(C, p);
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
void chaos__check_children(chaos_t *C)
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

int chaos__is_problem(const http_resp_t *r)
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
            if (chaos__is_problem(out))
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
    CHECK(pthread_create(&ft, NULL, chaos__fault_thread, C) == 0, "pthread_create");
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
            chaos__say(C, "load done: %ld writes accepted in %.1f s", GET(C->accepted),
                       (double)(C->t_load_end - t0) / 1000.0);
        }
        if (GET(C->load_done) && GET(C->faults_done))
            break;
        if (pthread_mutex_trylock(&C->lock) == 0) {
            chaos__check_children(C);
            pthread_mutex_unlock(&C->lock);
        }
        if (tu_now_ms() - last >= 15000) {
            last = tu_now_ms();
            chaos__say(
                C,
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

/* ---- the end ---- */

/* What a process that outlived its SIGTERM is doing, for the log of a run
 * nobody can repeat: each thread's kernel wait, its stacks (gdb, when
 * installed), PostgreSQL's sessions and what they wait on, its last lines. */
static void diagnose(const chaos_t *C, const chaos_proc_t *p)
{
    fprintf(stderr, "---- %s (pid %d) still running; its threads:\n", p->name, (int)p->pid);
    fflush(stderr);
    chaos__shell("for t in /proc/%d/task/*; do printf '  %%s %%s wchan=%%s syscall=%%s\\n' "
                 "\"${t##*/}\" \"$(cat $t/comm)\" \"$(cat $t/wchan)\" "
                 "\"$(cut -d' ' -f1 $t/syscall)\"; done >&2 2>/dev/null",
                 (int)p->pid);
    if (chaos__shell("command -v gdb >/dev/null 2>&1") == 0)
        chaos__shell(
            "gdb -q -batch -p %d -ex 'thread apply all bt' 2>/dev/null | grep '^#\\|^Thread' "
            "| head -200 >&2",
            (int)p->pid);
    if (C->pg_port) {
        fprintf(stderr, "---- PostgreSQL's sessions:\n");
        fflush(stderr);
        chaos__shell("psql -X -q -h 127.0.0.1 -p %d -U postgres -d postgres -c \"SELECT pid, "
                     "application_name, state, wait_event_type, wait_event, now() - xact_start AS "
                     "xact_age, left(query, 100) AS query FROM pg_stat_activity WHERE backend_type "
                     "= 'client backend' ORDER BY application_name\" >&2",
                     C->pg_port);
    }
    fprintf(stderr, "---- the last lines of %s:\n", p->log);
    fflush(stderr);
    chaos__shell("tail -n 40 '%s' | cut -c1-400 >&2", p->log);
    fprintf(stderr, "----\n");
}

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
            diagnose(C, p);
            kill(p->pid, SIGKILL);
            tu_wait(p->pid, 5000);
        }
        p->pid = 0;
        CHECK(rc == 0, "%s did not stop cleanly on SIGTERM after the chaos (status %d); see %s",
              p->name, rc, p->log);
        /* Nor by leaving a thread behind at its shutdown timeout: after
         * the chaos every thread must still answer a stop. */
        CHECK(chaos__shell("grep -q '\"event\":\"shutdown_timeout\"' '%s'", p->log) != 0,
              "%s stopped at its shutdown timeout, a thread still busy after the chaos; see %s",
              p->name, p->log);
    }
    chaos__redis_stop(C);
    if (C->rmq_dir[0])
        chaos__rmq(C, "stop");
    tcpproxy_stop(C->proxy);
    C->proxy = NULL;
    chaos__pg_stop(C);
    chaos__copy_pg_log(C);
    C->pg_port = 0;
    chaos__shell("rm -rf '%s'", C->dir);
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
