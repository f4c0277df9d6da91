/* Helpers for the users/transactions (ledger) tests: fresh users_db and
 * transaction_db per test, a private broker (redis-server, with or without
 * an append-only file, or a RabbitMQ node), the services as separate
 * processes that can be SIGKILLed and restarted, HTTP calls, and the
 * bookkeeping checks every test ends with. HTTP helpers come from
 * tests/orders/orders_testlib.c. */
#ifndef LEDGER_TESTLIB_H
#define LEDGER_TESTLIB_H

#include <jansson.h>
#include <libpq-fe.h>
#include <sys/types.h>

#include "orders_testlib.h"

typedef enum { LEDGER_REDIS = 0, LEDGER_REDIS_AOF, LEDGER_AMQP } ledger_broker_t;

/* One service process. */
typedef struct lproc_s {
    char name[32]; /* "users", "tx-api", "tx-relay", "tx-proc", ... */
    char bin[32];  /* users-service / transactions-service */
    char args[3][32];
    int nargs;
    int port;    /* HTTP port, 0 when it runs no API */
    int service; /* 0 users, 1 transactions */
    pid_t pid;
    char log[256];
    int restarts;
} lproc_t;

#define LEDGER_MAX_PROCS 8

typedef struct ledger_s {
    char name[64];
    ledger_broker_t broker;
    char users_db[1024], tx_db[1024];
    char sink[256];
    int redis_port;
    pid_t redis_pid;
    char redis_dir[256];
    lproc_t procs[LEDGER_MAX_PROCS];
    int nprocs;
    char users_url[64], tx_url[64];
    char extra_env[12][256];
    int nextra;
    PGconn *udb, *tdb; /* connections for checks */
} ledger_t;

/* Fresh databases t_<name>_users / t_<name>_tx and the broker (skips when
 * the servers are missing). Processes are added with ledger_add. */
void ledger_init(ledger_t *L, const char *name, ledger_broker_t broker);
/* Adds an environment entry "K=V" for every process started after. */
void ledger_env(ledger_t *L, const char *kv);
/* Adds and starts a process: service 0 (users-service) or 1
 * (transactions-service), with up to three flags (e.g. "--no-api"). With
 * api set it gets a port and is waited for on /readyz. */
lproc_t *ledger_add(ledger_t *L, const char *name, int service, int api, const char *a1,
                    const char *a2, const char *a3);
/* The usual set: "users" (API + relay) and "tx" (API, relay, consumers). */
void ledger_start_all_in_one(ledger_t *L);
void ledger_spawn(ledger_t *L, lproc_t *p);
/* SIGKILL (a crash) and reap. */
void ledger_kill(lproc_t *p);
/* SIGTERM; fails the test unless it exits 0 in time. */
void ledger_stop(lproc_t *p);
/* Stops every process cleanly and the broker. */
void ledger_teardown(ledger_t *L);

/* Stops / restarts the broker (Redis with AOF: SIGTERM, same port and dir;
 * RabbitMQ: halt / restart). */
void ledger_broker_stop(ledger_t *L);
void ledger_broker_restart(ledger_t *L);

/* POST /users; returns the HTTP status; id (37 bytes) gets data.id on 201. */
long ledger_create_user(ledger_t *L, const char *email, const char *password, char *id);
/* POST /api/v1/transactions; from/to may be NULL. Returns the status; id
 * gets transactionId on 202. */
long ledger_post_tx(ledger_t *L, long long amount, const char *from, const char *to, char *id);
/* GET the transaction's status ("" when not 200) and reason. */
void ledger_tx_status(ledger_t *L, const char *id, char *status, size_t ssize, char *reason,
                      size_t rsize);
/* Waits until the transaction's status is not PENDING; returns it (static). */
const char *ledger_wait_decided(ledger_t *L, const char *id, int timeout_ms);
/* GET the balance; -1 on 404. */
long long ledger_balance(ledger_t *L, const char *user);
/* Waits for the user's account to exist. */
void ledger_wait_account(ledger_t *L, const char *user, int timeout_ms);
/* Waits until no transaction is PENDING and every outbox row of both
 * services is processed; fails after timeout_ms. */
void ledger_wait_settled(ledger_t *L, int timeout_ms);
/* The books: every transaction decided once (one outcome event each),
 * ledger rows match the statuses (one DEBIT and one CREDIT per COMPLETED,
 * none per FAILED), debits = credits, each balance = its credits - debits,
 * the external account balances the users (sum of all = 0), no negative
 * user balance, the users' sum equals want_user_sum (if >= 0). */
void ledger_check_books(ledger_t *L, long long want_user_sum);

/* RabbitMQ (LEDGER_AMQP) raw helpers for fault tests: a durable queue with
 * x-max-length=maxlen and x-overflow=reject-publish bound to exchange with
 * "#" (publishes routed to it past maxlen are nacked), purge, delete. */
void ledger_amqp_limiter(const char *exchange, const char *queue, int maxlen);
void ledger_amqp_purge(const char *queue);
void ledger_amqp_delete(const char *queue);

#endif
