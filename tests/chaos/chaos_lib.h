/* The chaos harness: one system (its real executables from build/bin as
 * child processes) on a PostgreSQL and a Redis of its own, under load from
 * several HTTP client threads, while a fault thread breaks things:
 *
 *   - SIGKILLs a randomly chosen child (a service, a relay, a consumer) at a
 *     random moment and starts it again, OUTBOX_CHAOS_KILLS times;
 *   - stops PostgreSQL (pg_ctl stop -m immediate), holds it down, checks that
 *     the APIs answer 503 application/problem+json meanwhile, starts it again
 *     and checks that every API recovers by itself;
 *   - stops Redis (the broker; or RabbitMQ, chaos_init_amqp) and starts it
 *     again on the same port and data;
 *   - slows, partitions and cuts the network to Redis through a TCP proxy
 *     (tcpproxy.h) that every child reaches Redis through.
 *
 * Faults are spread over the load by progress (a fault planned at 40% of the
 * events waits until 40% of them are accepted, then a random moment more),
 * one at a time; those not yet done when the load ends run while the
 * backlog drains. The servers are private to the test (a temporary initdb on
 * a free port, as scripts/servers.sh does): restarting them cannot disturb
 * other tests running in parallel.
 *
 * Environment:
 *   OUTBOX_CHAOS_EVENTS    write requests to have accepted (default 3000); each
 *                          creates at least one event
 *   OUTBOX_CHAOS_KILLS     SIGKILLs (default 8)
 *   OUTBOX_CHAOS_OUTAGES   PostgreSQL outages, broker outages, and broker slow,
 *                          partition and cut periods during the load, each
 *                          (default 1 + events / 40000); plus, at the end,
 *                          relays and consumers frozen (SIGSTOP) for the last
 *                          15% of the load, then thawed and one more
 *                          PostgreSQL outage while they work through the
 *                          backlog
 *   OUTBOX_CHAOS_CLIENTS   client threads (default 8)
 *   OUTBOX_CHAOS_SEED      fixes the random choices (printed)
 *   OUTBOX_CHAOS_PG_DOWN_MS, OUTBOX_CHAOS_BROKER_DOWN_MS  outage lengths (3000)
 *   OUTBOX_CHAOS_TIMEOUT   seconds before the test gives up (default
 *                          600 + 60 ms per event; CTest allows 4 hours)
 *   OUTBOX_CHAOS_REPORT    a file: one JSON line per test is appended
 *
 * Every client request carries an Idempotency-Key; chaos_call retries an
 * answer that is lost (transport error), 5xx or 409 idempotency-key-in-flight
 * with the same key and body until it gets a 2xx or another 4xx. */
#ifndef CHAOS_LIB_H
#define CHAOS_LIB_H

#include <curl/curl.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <sys/types.h>

#include "orders_testlib.h"
#include "tcpproxy.h"

#define CHAOS_MAX_PROCS 12
#define CHAOS_MAX_ENV 24
#define CHAOS_MAX_METRICS 24

typedef struct chaos_proc_s {
    char name[32];  /* "api-1", "relay-2", ... */
    char kind[16];  /* statistics: "api", "relay", "consumer", "job" */
    char group[16]; /* HTTP group for chaos_call ("" when it serves no API) */
    char bin[64];
    char args[4][48];
    int nargs;
    char env[8][1200];
    int nenv;
    int port;           /* HTTP port, 0 when it serves no API */
    char ready_log[64]; /* without a port: a new occurrence in the log means started */
    int victim;         /* may be SIGKILLed */
    pid_t pid;
    char log[512];
    int kills;
} chaos_proc_t;

typedef struct chaos_s chaos_t;

/* One client thread. */
typedef struct chaos_client_s {
    chaos_t *C;
    int id;
    CURL *curl;
    unsigned rnd;
    int ambiguous; /* the last chaos_call had an attempt whose outcome was unknown */
    int attempts;  /* attempts of the last chaos_call */
} chaos_client_t;

/* One operation of the load, number i (0..ops-1); calls chaos_accepted
 * for each write accepted. */
typedef void (*chaos_op_fn)(chaos_client_t *cl, long i, void *ud);

struct chaos_s {
    char name[64];
    long events;
    int kills, outages, clients;
    unsigned seed;
    int pg_down_ms, broker_down_ms, timeout_s;
    /* servers */
    char dir[256], user[32], pgbin[256], pg_opts[512], pg_log[512];
    int pg_port, redis_port, broker_port, amqp;
    char rmq_dir[256]; /* the RabbitMQ node's directory (chaos_init_amqp) */
    pid_t redis_pid;
    tcpproxy_t *proxy;
    char broker_addr[64]; /* host:port of the proxy: what the children use */
    char env[CHAOS_MAX_ENV][1200];
    int nenv;
    chaos_proc_t procs[CHAOS_MAX_PROCS];
    int nprocs;
    char probe_path[8][128]; /* GETs probed on every API during a PostgreSQL outage */
    char probe_group[8][16];
    int nprobes;
    /* progress and statistics (atomics) */
    long ops, next, done, gate; /* operations; gate: the load waits before operation gate */
    long accepted;              /* writes accepted (chaos_accepted) */
    long requests, retries, transport_errors, replayed, in_flight_409, commit_unknown;
    long s2xx, s4xx, s500, s503, s503_problem, s5xx_other;
    long probe_503_problem, probe_other;
    int pg_outages, broker_outages, net_slow, net_stall, net_cut, kills_done, freezes;
    long long max_recovery_ms;
    int load_done, faults_done;
    long long t_start, t_run, t_load_end;
    char metric_name[CHAOS_MAX_METRICS][48];
    long long metric_value[CHAOS_MAX_METRICS];
    int nmetrics;
    pthread_mutex_t lock;
};

/** Reads the environment, starts a private PostgreSQL (synchronous_commit on,
 *  so that a killed server keeps every acknowledged commit) and a private
 *  redis-server (append-only file, fsync always, so that a restarted broker
 *  keeps what it acknowledged), and the proxy in front of Redis. Skips
 *  (exit 77) when initdb or redis-server is missing. */
void chaos_init(chaos_t *C, const char *name);
/** The same with a RabbitMQ node (scripts/rabbitmq.sh, 10-45 s to start) as
 *  the broker instead of Redis: the broker outages halt and restart it; the
 *  proxy sits in front of its AMQP port (amqp://guest:guest@broker_addr/).
 *  Skips when rabbitmq-server is missing. */
void chaos_init_amqp(chaos_t *C, const char *name);
/** Creates database dbname on the private server; out gets its conninfo. */
void chaos_db(chaos_t *C, const char *dbname, char *out, size_t out_size);
/** An environment entry "K=V" for every child started after. */
void chaos_env(chaos_t *C, const char *kv);
/** Adds and starts a child: bin from build/bin with args (NULL-ended, may be
 *  NULL) and env (NULL-ended, may be NULL). With group set it gets a free
 *  port in the variable port_env and is ready when GET /readyz answers 200;
 *  otherwise it is ready when ready_log appears once more in its log. */
chaos_proc_t *chaos_add(chaos_t *C, const char *name, const char *kind, const char *group,
                        const char *port_env, const char *bin, const char *const *args,
                        const char *const *env, const char *ready_log, int victim);
/** A GET path (e.g. a lookup of a missing id) probed on the group's APIs
 *  during PostgreSQL outages besides /readyz. */
void chaos_probe(chaos_t *C, const char *group, const char *path);

/** Runs the load (clients threads, op for i = 0..ops-1) and the faults;
 *  returns when every operation and every fault is done. Faults are
 *  planned by the operations done; an operation may send several writes. */
void chaos_run(chaos_t *C, long ops, chaos_op_fn op, void *ud);
/** Counts one accepted write (the "events" of the summary). */
void chaos_accepted(chaos_t *C);

/** One request to an API of group, with retries as above; returns the
 *  final status (2xx or a 4xx other than 409 idempotency-key-in-flight).
 *  key may be NULL (no header). Fails the test after 10 minutes of retries. */
long chaos_call(chaos_client_t *cl, const char *group, const char *method, const char *path,
                const char *body, const char *key, http_resp_t *out);
/** A client for requests outside chaos_run (set-up before the load). */
void chaos_client_init(chaos_t *C, chaos_client_t *cl, int id);
void chaos_client_term(chaos_client_t *cl);
/** A random number in [0, n) for this client. */
unsigned chaos_rand(chaos_client_t *cl, unsigned n);

/** A named number for the summary line and the JSON report. */
void chaos_metric(chaos_t *C, const char *name, long long value);
/** Waits until sql (one bigint) equals want; fails the test with what after
 *  timeout_ms. Reconnects when the connection broke. */
void chaos_wait_ll(chaos_t *C, PGconn **c, const char *conninfo, const char *sql, long long want,
                   int timeout_ms, const char *what);
/** Drain timeout for this size: 180 s + 6 ms per event. */
int chaos_drain_ms(const chaos_t *C);

/* A set of ids (strings up to 63 bytes). */
typedef struct chaos_ids_s {
    char (*v)[64];
    long n, cap;
} chaos_ids_t;
void chaos_ids_add(chaos_ids_t *s, const char *id);
/** Sorts; returns the number of entries that repeat an earlier one, and
 *  removes them when dedupe is set. */
long chaos_ids_sort(chaos_ids_t *s, int dedupe);
/** 1 when id is in the sorted set. */
int chaos_ids_has(const chaos_ids_t *s, const char *id);
/** Occurrences of id in the sorted set (not deduplicated). */
long chaos_ids_count(const chaos_ids_t *s, const char *id);
void chaos_ids_free(chaos_ids_t *s);

/** Every entry of the Redis stream (read directly, not through the proxy):
 *  fn gets the fields id, type and event (the CloudEvents document).
 *  Returns the number of entries. */
long chaos_stream_scan(chaos_t *C, const char *stream,
                       void (*fn)(const char *id, const char *type, const char *event, void *ud),
                       void *ud);
/** For each line of the logs of the children of kind (NULL: all) that
 *  contains needle: the word that follows it goes into ids. */
void chaos_log_ids(chaos_t *C, const char *kind, const char *needle, chaos_ids_t *ids);

/** SIGTERM every child (each must exit 0), stops the servers, prints the
 *  summary line and appends the JSON report (called once every check has
 *  passed: nothing lost, nothing twice). */
void chaos_finish(chaos_t *C);

#endif
