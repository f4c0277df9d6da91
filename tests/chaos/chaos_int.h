/* Internal to the chaos harness (chaos_*.c): what its files share, prefix
 * chaos__. Tests include chaos_lib.h only. */
#ifndef CHAOS_INT_H
#define CHAOS_INT_H

#include "chaos_lib.h"

#define ADD(field) __atomic_add_fetch(&(field), 1, __ATOMIC_SEQ_CST)
#define GET(field) __atomic_load_n(&(field), __ATOMIC_SEQ_CST)

/* chaos_lib.c */
/** A progress line: "[chaos NAME  seconds] text". */
void chaos__say(const chaos_t *C, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Runs a shell command (system); returns its exit status. */
int chaos__shell(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/** "runuser -u USER -- " when we are root (PostgreSQL refuses root), else "". */
const char *chaos__as_user(const chaos_t *C);
/** Starts p and waits until it is ready (fails the test after 120 s). */
void chaos__spawn(chaos_t *C, chaos_proc_t *p);
/** Fails the test if a child exited without being killed (a crash). Call
 *  with C->lock held. */
void chaos__check_children(chaos_t *C);
/** 1 when the answer's Content-Type is application/problem+json. */
int chaos__is_problem(const http_resp_t *r);

/* chaos_servers.c */
int chaos__pg_start(chaos_t *C);
/** pg_ctl stop -m immediate: a crash, as far as the clients can tell. */
int chaos__pg_stop(chaos_t *C);
/** Sets C->pgbin to the newest /usr/lib/postgresql/N/bin ("" if none). */
void chaos__find_pgbin(chaos_t *C);
void chaos__copy_pg_log(chaos_t *C);
/** redis-server on C->redis_port with its append-only file in C->dir. */
void chaos__redis_start(chaos_t *C);
/** SIGTERM: Redis syncs its append-only file and exits. */
void chaos__redis_stop(chaos_t *C);
/** Starts this test's RabbitMQ node: sets rmq_dir and broker_port. */
void chaos__rmq_start(chaos_t *C);
/** scripts/rabbitmq.sh SUB (halt, restart, stop) on this test's node. */
void chaos__rmq(chaos_t *C, const char *sub);

/* chaos_faults.c */
/** The fault thread (arg: the chaos_t): plans and runs every fault. */
void *chaos__fault_thread(void *arg);

#endif
