/* Helpers for the order-system tests: a private orders-service (fresh
 * database, its own redis-server, free ports) and HTTP through libcurl. */
#ifndef ORDERS_TESTLIB_H
#define ORDERS_TESTLIB_H

#include <libpq-fe.h>
#include <stddef.h>
#include <sys/types.h>

#include "outbox/outbox.h"
#include "testutil.h"

typedef struct svc_s {
    pid_t pid, redis_pid;
    int port, redis_port;
    char url[64];
    char redis_addr[64];
    char log[256];
    char db[1024];
} svc_t;

/** Fresh database t_<name>, a private redis-server, then orders-service with
 *  extra_env ("K=V", NULL-terminated, may be NULL); waits for /readyz. */
void svc_start(svc_t *s, const char *name, char *const extra_env[]);
/** Starts (again) only the service process, e.g. after svc_kill. */
void svc_spawn(svc_t *s, char *const extra_env[]);
/** SIGTERM; checks a clean exit 0. Leaves Redis running. */
void svc_stop(svc_t *s);
/** SIGTERM; waits up to timeout_ms for the exit (then SIGKILL). Returns
 *  tu_wait's status (-1: still running at the deadline); checks nothing. */
int svc_term(svc_t *s, int timeout_ms);
/** Stops the service (if running) and the redis-server. */
void svc_teardown(svc_t *s);

typedef struct http_resp_s {
    long status; /* 0 on transport error */
    char body[8192];
    char content_type[128];
    int replayed; /* Idempotent-Replayed: true */
} http_resp_t;

/** One request. ctype/key/body may be NULL. Returns status. */
long http_do(const char *method, const char *url, const char *ctype, const char *key,
             const char *body, size_t body_len, http_resp_t *out);
/** n POSTs to url at once (curl multi); bodies[i] and keys[i] (NULL: none). */
void http_post_many(const char *url, int n, const char *const *bodies, const char *const *keys,
                    http_resp_t *out);

/** Sends the len raw bytes of req (a whole HTTP/1.1 request, which should say
 *  "Connection: close") to 127.0.0.1:port over a plain socket, for requests
 *  curl will not send (a NUL byte inside a header value), and reads the answer
 *  until the server closes. Returns status (0 on transport error). */
long http_raw(int port, const char *req, size_t len, http_resp_t *out);

/** Polls sql (one bigint) until it equals want or timeout_ms passes; returns the last value. */
long long wait_ll(PGconn *c, const char *sql, long long want, int timeout_ms);
/** Occurrences of needle in the file at path. */
int count_in_file(const char *path, const char *needle);
/** Lines of path that another write tore: an email line ("[EMAIL] ...")
 *  or a JSON log line ({"ts": ... }) that does not take its whole line. */
int torn_lines(const char *path);
/** Polls count_in_file until it reaches want or timeout_ms; returns the count. */
int wait_count(const char *path, const char *needle, int want, int timeout_ms);
/** Copies the string member name of a JSON object text into out ("" if absent). */
void json_member(const char *json, const char *name, char *out, size_t out_size);

#endif
