/* No relay transaction stays open longer than publish_timeout, whatever the
 * broker does (the outbox-relay daemon, its JSON log captured).
 *
 * A stand-in "Redis" in this test accepts connections on 127.0.0.1 and reads
 * what it is sent; it answers in one of two ways:
 *
 * Phase A, a broker that never answers: the engine hands the sink its
 *          deadline (batch start + 90% of publish_timeout), so each worker
 *          ends its own transaction in time: the longest transaction
 *          pg_stat_activity ever shows is within publish_timeout, the
 *          server's backstop never has to end a relay session (the workers'
 *          backend pids do not change, no db_down), the relay logs
 *          broker_down, and nothing is acknowledged or charged an attempt.
 * Phase B, a broker that answers every command, but 600 ms after the
 *          previous answer: a round of 8 events takes 4.8 s to confirm. The
 *          relay session's idle_in_transaction_session_timeout (=
 *          publish_timeout) ends the transaction from the server side if the
 *          engine does not: the longest transaction is still within
 *          publish_timeout (plus a small margin), and no event is
 *          acknowledged (their confirmations came too late to count).
 *
 * Then SIGTERM: the relay stops cleanly within shutdown_timeout. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <strings.h>
#include <sys/socket.h>

#include "proc_common.h"

#define PUBLISH_TIMEOUT_MS 2000
#define MARGIN_MS 300
#define NKEYS 8
#define NEVENTS 24
#define DRIP_MS 600
#define RUN_MS 10000

/* ---- the stand-in broker ---- */

enum { BLACKHOLE, DRIP };

#define MAX_CONNS 16

typedef struct conn_s {
    int fd;
    char *buf; /* bytes received, not yet parsed into commands */
    size_t len, cap;
    int owed;          /* commands received, not yet answered */
    long long next_at; /* DRIP: when the next answer goes out */
} conn_t;

typedef struct broker_s {
    int lfd, port, mode;
    _Atomic int stop; /* set by the test, read by the stand-in thread */
    int commands;     /* complete commands received (all connections) */
    int xadds;        /* of which XADD */
    int answers;      /* answers sent */
    conn_t conns[MAX_CONNS];
    pthread_t thread;
    pthread_mutex_t mu;
} broker_t;

/* Parses one RESP multibulk command at the start of c->buf; returns its
 * length in bytes, 0 if incomplete. *is_xadd tells whether it is XADD. */
static size_t parse_command(const conn_t *c, int *is_xadd)
{
    const char *p = c->buf, *end = c->buf + c->len;
    char *nl;
    if (p == end)
        return 0;
    CHECK(*p == '*', "stand-in broker: not a RESP array: %.20s", p);
    if (!(nl = memchr(p, '\n', (size_t)(end - p))))
        return 0;
    long n = strtol(p + 1, NULL, 10);
    p = nl + 1;
    *is_xadd = 0;
    for (long i = 0; i < n; i++) {
        if (p == end || !(nl = memchr(p, '\n', (size_t)(end - p))))
            return 0;
        CHECK(*p == '$', "stand-in broker: not a bulk string");
        long l = strtol(p + 1, NULL, 10);
        p = nl + 1;
        if (end - p < l + 2)
            return 0;
        if (i == 0 && l == 4 && !strncasecmp(p, "XADD", 4))
            *is_xadd = 1;
        p += l + 2;
    }
    return (size_t)(p - c->buf);
}

static void conn_close(conn_t *c)
{
    close(c->fd);
    free(c->buf);
    memset(c, 0, sizeof(*c));
    c->fd = -1;
}

static void conn_read(broker_t *b, conn_t *c)
{
    char tmp[65536];
    ssize_t n = read(c->fd, tmp, sizeof(tmp));
    if (n <= 0) {
        conn_close(c);
        return;
    }
    if (c->len + (size_t)n > c->cap) {
        c->cap = (c->len + (size_t)n) * 2;
        c->buf = realloc(c->buf, c->cap);
        CHECK(c->buf, "out of memory");
    }
    memcpy(c->buf + c->len, tmp, (size_t)n);
    c->len += (size_t)n;
    size_t used;
    int is_xadd;
    while ((used = parse_command(c, &is_xadd)) > 0) {
        memmove(c->buf, c->buf + used, c->len - used);
        c->len -= used;
        pthread_mutex_lock(&b->mu);
        b->commands++;
        b->xadds += is_xadd;
        pthread_mutex_unlock(&b->mu);
        if (b->mode == DRIP && c->owed++ == 0)
            c->next_at = tu_now_ms() + DRIP_MS;
    }
}

static void *broker_main(void *arg)
{
    broker_t *b = arg;
    while (!b->stop) {
        struct pollfd fds[MAX_CONNS + 1];
        int idx[MAX_CONNS + 1], n = 0, wait = 20;
        fds[n] = (struct pollfd){.fd = b->lfd, .events = POLLIN};
        idx[n++] = -1;
        long long now = tu_now_ms();
        for (int i = 0; i < MAX_CONNS; i++) {
            conn_t *c = &b->conns[i];
            if (c->fd < 0)
                continue;
            if (c->owed && c->next_at <= now) {     /* DRIP: one answer, then wait again */
                (void)!write(c->fd, "+1-0\r\n", 6); /* a closed peer is no error here */
                pthread_mutex_lock(&b->mu);
                b->answers++;
                pthread_mutex_unlock(&b->mu);
                if (--c->owed)
                    c->next_at = now + DRIP_MS;
            }
            fds[n] = (struct pollfd){.fd = c->fd, .events = POLLIN};
            idx[n++] = i;
        }
        poll(fds, (nfds_t)n, wait);
        for (int k = 0; k < n; k++) {
            if (!(fds[k].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            if (idx[k] < 0) {
                int fd = accept(b->lfd, NULL, NULL);
                if (fd < 0)
                    continue;
                int slot = -1;
                for (int i = 0; i < MAX_CONNS && slot < 0; i++)
                    if (b->conns[i].fd < 0)
                        slot = i;
                if (slot < 0) {
                    close(fd);
                    continue;
                }
                b->conns[slot].fd = fd;
            } else {
                conn_read(b, &b->conns[idx[k]]);
            }
        }
    }
    for (int i = 0; i < MAX_CONNS; i++)
        if (b->conns[i].fd >= 0)
            conn_close(&b->conns[i]);
    return NULL;
}

static void broker_start(broker_t *b, int mode)
{
    memset(b, 0, sizeof(*b));
    b->mode = mode;
    for (int i = 0; i < MAX_CONNS; i++)
        b->conns[i].fd = -1;
    pthread_mutex_init(&b->mu, NULL);
    b->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(b->lfd >= 0 && bind(b->lfd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
              listen(b->lfd, 16) == 0,
          "stand-in broker: %s", strerror(errno));
    socklen_t len = sizeof(a);
    getsockname(b->lfd, (struct sockaddr *)&a, &len);
    b->port = ntohs(a.sin_port);
    CHECK(pthread_create(&b->thread, NULL, broker_main, b) == 0, "pthread_create");
}

static void broker_stop(broker_t *b)
{
    b->stop = 1;
    pthread_join(b->thread, NULL);
    close(b->lfd);
    pthread_mutex_destroy(&b->mu);
}

static int broker_get(broker_t *b, const int *field)
{
    pthread_mutex_lock(&b->mu);
    int v = *field;
    pthread_mutex_unlock(&b->mu);
    return v;
}

/* ---- transactions of the relay's sessions (this test's database: other tests
 * may run relays at the same time), seen from pg_stat_activity ---- */

typedef struct watch_s {
    long long longest_ms; /* the oldest open transaction ever seen */
    int samples, seen;    /* samples taken; samples that showed a relay transaction */
    int pids[8], npids;   /* backend pids of the worker sessions, as first seen */
    int pid_changes;      /* worker sessions that appeared after the first sample */
} watch_t;

static void watch_sample(PGconn *c, watch_t *w)
{
    PGresult *r = tu_exec(
        c, "SELECT pid, application_name LIKE '% worker-%',"
           " CASE WHEN state IN ('idle in transaction', 'active') AND xact_start IS NOT NULL"
           "  THEN (extract(epoch FROM clock_timestamp() - xact_start) * 1000)::bigint END"
           " FROM pg_stat_activity"
           " WHERE datname = current_database() AND application_name LIKE 'outbox-relay%'");
    int any = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        if (!PQgetisnull(r, i, 2)) {
            long long ms = atoll(PQgetvalue(r, i, 2));
            any = 1;
            if (ms > w->longest_ms)
                w->longest_ms = ms;
        }
        if (PQgetvalue(r, i, 1)[0] != 't')
            continue;
        int pid = atoi(PQgetvalue(r, i, 0)), known = 0;
        for (int k = 0; k < w->npids; k++)
            known |= w->pids[k] == pid;
        if (known)
            continue;
        if (w->samples && w->npids) /* a worker's session was replaced */
            w->pid_changes++;
        if (w->npids < 8)
            w->pids[w->npids++] = pid;
    }
    w->seen += any;
    w->samples++;
    PQclear(r);
}

/* Samples every 20 ms until run_ms have passed. */
static void watch_for(PGconn *c, watch_t *w, int run_ms)
{
    long long end = tu_now_ms() + run_ms;
    while (tu_now_ms() < end) {
        watch_sample(c, w);
        tu_sleep_ms(20);
    }
}

/* Waits until both worker sessions are registered (pg_stat_activity). */
static void wait_workers(PGconn *c, int n, int timeout_ms)
{
    long long end = tu_now_ms() + timeout_ms, got = 0;
    while ((got = tu_query_ll(c, "SELECT count(*) FROM pg_stat_activity"
                                 " WHERE datname = current_database()"
                                 "  AND application_name LIKE 'outbox-relay % worker-%'")) < n) {
        CHECK(tu_now_ms() < end, "%lld of %d relay worker sessions after %d ms", got, n,
              timeout_ms);
        tu_sleep_ms(20);
    }
}

/* Every event still pending, never charged an attempt, none dead-lettered. */
static void check_untouched(PGconn *c, const char *phase)
{
    long long pending = tu_query_ll(c, "SELECT count(*) FROM outbox WHERE status = 'pending'");
    long long charged =
        tu_query_ll(c, "SELECT count(*) FROM outbox WHERE attempts > 0 OR last_error IS NOT NULL");
    long long dead = tu_query_ll(c, "SELECT count(*) FROM outbox_dead_letter");
    CHECK(pending == NEVENTS, "%s: %lld of %d events still pending: some were acknowledged", phase,
          pending, NEVENTS);
    CHECK(charged == 0, "%s: %lld events charged an attempt for a broker that did not answer",
          phase, charged);
    CHECK(dead == 0, "%s: %lld events dead-lettered", phase, dead);
}

static void stop_relay(pid_t relay, const char *log)
{
    kill(relay, SIGTERM);
    int st = tu_wait(relay, 15000);
    CHECK(st == 0, "relay exit status %d after SIGTERM (want 0 within shutdown_timeout, see %s)",
          st, log);
    CHECK(log_count(log, "stopped", NULL) == 1, "no \"stopped\" line: not a clean stop (see %s)",
          log);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* the relay may close a connection the stand-in writes to */
    PGconn *c;
    const char *ci = setup_db("tx_bound", &c);
    enqueue_many(c, tu_unique("txb"), NEVENTS, NKEYS, 4, NULL);
    char sink[64];

    /* ---- Phase A: a broker that never answers ---- */
    broker_t bh;
    broker_start(&bh, BLACKHOLE);
    snprintf(sink, sizeof(sink), "redis://127.0.0.1:%d", bh.port);
    char *extra_a[] = {"OUTBOX_PUBLISH_TIMEOUT=2s",  "OUTBOX_WORKERS=2",
                       "OUTBOX_POLL_INTERVAL=50ms",  "OUTBOX_BACKOFF_BASE=50ms",
                       "OUTBOX_BROKER_PROBE_MAX=1s", "OUTBOX_SHUTDOWN_TIMEOUT=10s",
                       "OUTBOX_LOG_LEVEL=info",      NULL};
    const char *log_a = "tx_bound.blackhole.log";
    unlink(log_a);
    pid_t relay = spawn_relay(ci, sink, extra_a, log_a);
    wait_workers(c, 2, 15000);
    watch_t wa = {0};
    watch_for(c, &wa, RUN_MS);
    CHECK(proc_alive(relay), "the relay exited while the broker did not answer (see %s)", log_a);
    stop_relay(relay, log_a);
    int xadds = broker_get(&bh, &bh.xadds);
    broker_stop(&bh);

    CHECK(xadds > 0, "phase A: the relay never sent an XADD to the stand-in broker (see %s)",
          log_a);
    CHECK(wa.seen > 0, "phase A: no relay transaction seen in %d samples", wa.samples);
    CHECK(log_count(log_a, "broker_down", NULL) >= 1, "phase A: no broker_down logged (see %s)",
          log_a);
    CHECK(wa.longest_ms <= PUBLISH_TIMEOUT_MS,
          "phase A: a relay transaction stayed open %lld ms (publish_timeout %d ms): the engine"
          " did not end it by its own deadline",
          wa.longest_ms, PUBLISH_TIMEOUT_MS);
    CHECK(wa.pid_changes == 0 && log_count(log_a, "db_down", NULL) == 0,
          "phase A: %d worker sessions replaced (db_down logged %d times): the server had to end"
          " a relay transaction the engine should have ended (see %s)",
          wa.pid_changes, log_count(log_a, "db_down", NULL), log_a);
    check_untouched(c, "phase A");
    printf("phase A (broker never answers): %d XADDs sent, longest relay transaction %lld ms"
           " (publish_timeout %d ms, %d samples), broker_down logged, nothing acknowledged or"
           " charged\n",
           xadds, wa.longest_ms, PUBLISH_TIMEOUT_MS, wa.samples);

    /* ---- Phase B: a broker that answers, 600 ms apart ---- */
    broker_t drip;
    broker_start(&drip, DRIP);
    snprintf(sink, sizeof(sink), "redis://127.0.0.1:%d", drip.port);
    /* One worker, so one round holds one event of each of the 8 keys. */
    char *extra_b[] = {"OUTBOX_PUBLISH_TIMEOUT=2s",  "OUTBOX_WORKERS=1",
                       "OUTBOX_POLL_INTERVAL=50ms",  "OUTBOX_BACKOFF_BASE=50ms",
                       "OUTBOX_BROKER_PROBE_MAX=1s", "OUTBOX_SHUTDOWN_TIMEOUT=10s",
                       "OUTBOX_LOG_LEVEL=info",      NULL};
    const char *log_b = "tx_bound.drip.log";
    unlink(log_b);
    relay = spawn_relay(ci, sink, extra_b, log_b);
    wait_workers(c, 1, 15000);
    watch_t wb = {0};
    watch_for(c, &wb, RUN_MS);
    CHECK(proc_alive(relay), "the relay exited while the broker answered slowly (see %s)", log_b);
    stop_relay(relay, log_b);
    xadds = broker_get(&drip, &drip.xadds);
    int answers = broker_get(&drip, &drip.answers);
    broker_stop(&drip);

    CHECK(xadds >= NKEYS, "phase B: %d XADDs sent (want a round of %d)", xadds, NKEYS);
    CHECK(wb.seen > 0, "phase B: no relay transaction seen in %d samples", wb.samples);
    CHECK(wb.longest_ms <= PUBLISH_TIMEOUT_MS + MARGIN_MS,
          "phase B: a relay transaction stayed open %lld ms (publish_timeout %d ms + %d ms)",
          wb.longest_ms, PUBLISH_TIMEOUT_MS, MARGIN_MS);
    check_untouched(c, "phase B");
    printf("phase B (broker answers 600 ms apart): %d XADDs, %d answers, longest relay"
           " transaction %lld ms (publish_timeout %d ms), nothing acknowledged; the transaction"
           " was ended by %s\n",
           xadds, answers, wb.longest_ms, PUBLISH_TIMEOUT_MS,
           log_count(log_b, "db_down", NULL) ? "the server (idle_in_transaction_session_timeout)"
                                             : "the engine");
    PQfinish(c);
    printf("PASS tx_bound\n");
    return 0;
}
