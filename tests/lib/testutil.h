/* Test helpers: assertions, fresh databases, Redis, child processes and
 * throwaway servers. Every test is a small C program; exit 0 = pass,
 * 77 = skipped (reason printed), anything else = fail. */
#ifndef OUTBOX_TESTUTIL_H
#define OUTBOX_TESTUTIL_H

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>

#define TU_SKIP 77

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/** Prints "SKIP: reason" and exits 77. */
void tu_skip(const char *reason) __attribute__((noreturn));

/** Creates an empty database named after the test (dropped first if it
 *  exists) and returns its conninfo (static storage). Skips without
 *  OUTBOX_TEST_PG. */
const char *tu_fresh_db(const char *test_name);
/** Connects or fails the test. */
PGconn *tu_connect(const char *conninfo);
/** Runs SQL or fails the test; returns the result (caller clears). */
PGresult *tu_exec(PGconn *c, const char *sql);
/** First column of first row as long long. */
long long tu_query_ll(PGconn *c, const char *sql);

/** OUTBOX_TEST_REDIS host and port; skips if unset. */
void tu_redis_addr(char *host, size_t host_size, int *port);
redisContext *tu_redis_connect(const char *host, int port);
/** A unique name for this run ("<prefix>-<pid>-<counter>"), e.g. for streams. */
const char *tu_unique(const char *prefix);

/** A free TCP port on 127.0.0.1. */
int tu_free_port(void);

/** Starts a throwaway redis-server on port (no persistence). Returns pid. */
pid_t tu_redis_server_start(int port);
/** SIGTERM and reap. */
void tu_stop(pid_t pid);

/** Spawns argv[0] with extra environment entries ("K=V", NULL-terminated),
 *  stdout/stderr appended to logfile (or inherited if NULL). With
 *  OUTBOX_TEST_WRAPPER set (make valgrind, scripts/test-launch.sh), an
 *  executable of this build runs under that command ("valgrind ...", split at
 *  spaces); the pid is still the program's. */
pid_t tu_spawn(char *const argv[], char *const extra_env[], const char *logfile);
/** Waits for pid up to tu_ms(timeout_ms); returns exit status (>=0), 128+sig
 *  if killed, or -1 on timeout. */
int tu_wait(pid_t pid, int timeout_ms);
/** A deadline of ms milliseconds stretched by OUTBOX_TEST_SLOWDOWN (a factor
 *  set by scripts/test-launch.sh in the instrumented builds: sanitizers and
 *  valgrind make every process several times slower). For bounds on how long
 *  a state may take to come, never for how soon it must. */
long tu_ms(long ms);
/** Path of an executable in build/bin (static storage). */
const char *tu_bin(const char *name);

/* ---- outbox helpers shared by the suites ---- */
#include "outbox/outbox.h"
/** tu_fresh_db + outbox_migrate; *out gets a connection to it. */
const char *tu_outbox_db(const char *test_name, PGconn **out);
/** outbox_conf_set or fail the test. */
void tu_conf_set(outbox_conf_t *conf, const char *name, const char *value);
/** outbox_relay_new + outbox_relay_start or fail (the conf is freed with the relay). */
outbox_relay_t *tu_relay_start(outbox_conf_t *conf);
/** Waits until the outbox table is empty; fails the test after tu_ms(timeout_ms). */
void tu_wait_drained(PGconn *c, int timeout_ms);

/** Sleeps ms milliseconds. */
void tu_sleep_ms(long ms);
long long tu_now_ms(void);

#endif
