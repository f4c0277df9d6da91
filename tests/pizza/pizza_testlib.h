/* Helpers for the pizza pipeline tests: a fresh database, a private
 * redis-server and the three programs as separate processes, each with its
 * own log file under build/tests/. */
#ifndef PIZZA_TESTLIB_H
#define PIZZA_TESTLIB_H

#include <sys/types.h>

#include "orders_testlib.h"

typedef struct pz_s {
    char name[64];
    char db[1024];
    pid_t redis_pid, api, job, consumer;
    int redis_port, api_port;
    char redis_addr[64], url[64];
    char api_log[256], job_log[256], cons_log[256];
    PGconn *conn; /* the test's own connection to db */
} pz_t;

/** Fresh database pizza_<name>, a redis-server, then pizza-api (waits for
 *  /readyz), pizza-consumer and pizza-job with job_env ("K=V", NULL-ended). */
void pz_start(pz_t *p, const char *name, char *const job_env[]);
/** Starts (again) pizza-job, e.g. after a SIGKILL. */
void pz_spawn_job(pz_t *p, char *const job_env[]);
/** SIGTERM to *pid; fails the test unless it exits 0 within 20 s. */
void pz_stop(pz_t *p, pid_t *pid, const char *what, const char *log);
/** Stops everything still running (SIGKILL if needed) and the redis-server. */
void pz_teardown(pz_t *p);
/** POSTs n random valid orders at once; fails unless all get 201. ids[i]
 *  gets each order id. */
void pz_post_orders(pz_t *p, int n, char (*ids)[40]);
/** XLEN pizza-orders on the private Redis. */
long long pz_stream_len(pz_t *p);

#endif
