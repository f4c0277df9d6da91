/* The chaos harness: the fault thread (kills, PostgreSQL and broker
 * outages, broker network faults, the freeze-then-crash phase). */
#include "chaos_int.h"

#include <signal.h>
#include <string.h>

typedef enum { F_KILL, F_PG, F_BROKER, F_SLOW, F_STALL, F_CUT, F_FREEZE, F_CATCHUP } fault_kind_t;

typedef struct fault_s {
    double at; /* fraction of the operations done before it starts */
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
    chaos__check_children(C);
    chaos__say(C, "SIGKILL %s (pid %d)", p->name, (int)p->pid);
    kill(p->pid, SIGKILL);
    tu_wait(p->pid, 10000);
    p->pid = 0;
    p->kills++;
    C->kills_done++;
    pthread_mutex_unlock(&C->lock);
    tu_sleep_ms(rand() % 1000); /* down for a while */
    pthread_mutex_lock(&C->lock);
    chaos__spawn(C, p);
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
            if (st == 503 && chaos__is_problem(&r))
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
    chaos__say(C, "PostgreSQL: immediate stop, down for %d ms", C->pg_down_ms);
    pthread_mutex_lock(&C->lock); /* no child restarts while the database is away */
    CHECK(chaos__pg_stop(C) == 0, "pg_ctl stop failed");
    long long t0 = tu_now_ms();
    int problems = 0, others = 0;
    while (tu_now_ms() - t0 < C->pg_down_ms) {
        probe_apis(C, &problems, &others);
        tu_sleep_ms(200);
    }
    CHECK(chaos__pg_start(C) == 0, "PostgreSQL did not start again; see %s", C->pg_log);
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
    chaos__say(
        C,
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
    chaos__say(C,
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
        chaos__say(C, "RabbitMQ: stop (halt), down for %d ms", C->broker_down_ms);
        chaos__rmq(C, "halt");
        tu_sleep_ms(C->broker_down_ms);
        chaos__rmq(C, "restart");
        chaos__say(C, "RabbitMQ back (same port, same data)");
    } else {
        chaos__say(C, "Redis: stop, down for %d ms", C->broker_down_ms);
        chaos__redis_stop(C);
        tu_sleep_ms(C->broker_down_ms);
        chaos__redis_start(C);
        chaos__say(C, "Redis back (same port, same append-only file)");
    }
    C->broker_outages++;
}

static void net_fault(chaos_t *C, fault_kind_t k)
{
    if (k == F_SLOW) {
        chaos__say(C, "broker network: +150 ms per chunk for 4 s");
        tcpproxy_set_delay(C->proxy, 150);
        tu_sleep_ms(4000);
        tcpproxy_set_delay(C->proxy, 0);
        C->net_slow++;
    } else if (k == F_STALL) {
        chaos__say(C, "broker network: partitioned (nothing moves, nothing closes) for 4 s");
        tcpproxy_set_stall(C->proxy, 1);
        tu_sleep_ms(4000);
        tcpproxy_set_stall(C->proxy, 0);
        C->net_stall++;
    } else {
        chaos__say(C, "broker network: every connection cut, new ones refused, for 3 s");
        tcpproxy_set_down(C->proxy, 1);
        tu_sleep_ms(3000);
        tcpproxy_set_down(C->proxy, 0);
        C->net_cut++;
    }
    chaos__say(C, "broker network healed");
}

void *chaos__fault_thread(void *arg)
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
        plan[k++] = (fault_t){slot * (i + 0.2 + 0.6 * frand()), F_BROKER};
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
        case F_BROKER:
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
    chaos__say(C, "every fault done");
    return NULL;
}
