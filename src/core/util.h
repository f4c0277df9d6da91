/* Small helpers shared across liboutbox: error strings, time, durations. */
#ifndef OUTBOX_CORE_UTIL_H
#define OUTBOX_CORE_UTIL_H

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>

#include "outbox/outbox.h"

/** Formats into errstr (if not NULL) and returns err: `return outbox__err(...)`. */
outbox_err_t outbox__err(outbox_err_t err, char *errstr, size_t errstr_size, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/** Monotonic clock in milliseconds. */
int64_t outbox__now_ms(void);

/** Removes trailing newlines and spaces from s in place (server and library
 *  messages end with one); returns s. This function can't fail. */
char *outbox__rtrim(char *s);
/** Wall clock in microseconds since the epoch. */
int64_t outbox__wall_us(void);
/** Sleeps ms milliseconds; returns early once *stop (may be NULL) is
 *  non-zero (a flag other threads or a signal handler set). */
void outbox__sleep_ms(int64_t ms, _Atomic int *stop);

/** Parses "250ms", "1s", "5m", "24h", "7d" or a bare number of milliseconds.
 *  Returns 0 and sets *ms, or -1 on bad input. */
int outbox__parse_duration_ms(const char *s, int64_t *ms);

/** Exponential backoff with full jitter: a random value in
 *  [base*2^(attempt-1)/2, min(max, base*2^(attempt-1))]. attempt >= 1. */
int64_t outbox__backoff_ms(int attempt, int64_t base_ms, int64_t max_ms);

/** Installs handler for SIGINT and SIGTERM (no SA_RESTART) and ignores
 *  SIGPIPE: the shutdown set-up every daemon here shares. */
void outbox__on_stop_signals(void (*handler)(int));

/** 1 if url's scheme (the text before its first ':') is scheme, compared
 *  without regard to case ("Redis://h" is a "redis" URL); 0 otherwise or
 *  for a NULL url. */
int outbox__url_scheme_is(const char *url, const char *scheme);

/** Names the calling thread for top -H, ps -L and perf (Linux keeps 15
 *  bytes: longer names are cut). printf-style. */
void outbox__thread_name(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/** Joins thread t if it ends by deadline_ms (an outbox__now_ms() time;
 *  <= 0: waits for ever). 0: joined; -1: still running then, not joined. */
int outbox__join_by(pthread_t t, int64_t deadline_ms);

/** strdup that returns NULL for NULL. */
char *outbox__strdup0(const char *s);

/** Process-wide fault injection for tests (OUTBOX_FAULT_* variables): a
 *  deterministic-per-process pseudo random in [0,1). */
double outbox__rand01(void);

#endif
