/* A fault-injecting TCP proxy for PostgreSQL's wire protocol, for tests: it
 * sits between a service and the server on loopback, forwards bytes both
 * ways, and, when armed, cuts both connections at the moment the client
 * sends a COMMIT (a simple-query 'Q' message whose text is COMMIT, or a
 * Parse of COMMIT in a pipeline), or a pipeline that opens with BEGIN (see
 * pgproxy_mode_t):
 *
 *   PGPROXY_CUT_BEFORE_COMMIT  COMMIT is not forwarded: the server sees the
 *                              client go away and rolls back.
 *   PGPROXY_CUT_AFTER_COMMIT   COMMIT is forwarded, the server's answer is
 *                              read and dropped: committed, reply lost. A
 *                              pipelined COMMIT: the pipeline is forwarded
 *                              up to its Sync, its answers dropped.
 *
 * Arming applies to the next COMMIT on any connection, once. pgproxy_set_down
 * simulates an outage instead: all connections cut, new ones refused. Connections
 * must not use TLS (the proxy reads the messages): give the client
 * sslmode=disable gssencmode=disable. */
#ifndef ORDERS_PGPROXY_H
#define ORDERS_PGPROXY_H

typedef enum {
    PGPROXY_PASS = 0,
    PGPROXY_CUT_BEFORE_COMMIT,
    PGPROXY_CUT_AFTER_COMMIT,
    /* A pipelined BEGIN (an extended-protocol Parse of "BEGIN", as libpq's
     * pipeline mode sends it): cut before forwarding it (the server sees
     * nothing of the pipeline), or after forwarding the pipeline up to its
     * Sync (the server runs it; its answers are lost). */
    PGPROXY_CUT_BEFORE_PIPELINED_BEGIN,
    PGPROXY_CUT_AFTER_PIPELINED_BEGIN,
    /* Not at a COMMIT: at once (within 100 ms), on the first connection
     * past its startup (of the application, with pgproxy_arm_for): the
     * server "dies while sending a long message". The client gets the
     * start of a NoticeResponse that announces 1 MB, then a reset (RST,
     * not FIN); the server side is closed. The client's next write fails
     * while its socket still holds unread bytes: libpq 15 then answers
     * "server closed the connection unexpectedly" with PQstatus() still
     * CONNECTION_OK, and in pipeline mode NULL for ever, no Sync. */
    PGPROXY_RESET_MID_MESSAGE
} pgproxy_mode_t;

typedef struct pgproxy_s pgproxy_t;

/** Listens on 127.0.0.1 (a free port) and forwards to host:port. Fails the test on error. */
pgproxy_t *pgproxy_start(const char *host, int port);
/** The same in front of the server conninfo names (its host and port;
 *  127.0.0.1:5432 when it names none). Skips the test (77) when the server
 *  is on a Unix socket: the proxy needs TCP. */
pgproxy_t *pgproxy_start_for(const char *conninfo);
int pgproxy_port(const pgproxy_t *p);
/** Cuts at the next COMMIT as mode says (PGPROXY_PASS disarms);
 *  PGPROXY_RESET_MID_MESSAGE: at once, see above. */
void pgproxy_arm(pgproxy_t *p, pgproxy_mode_t mode);
/** The same, but only on a connection whose application_name (from its
 *  startup message) starts with app_prefix ("" or NULL: any). */
void pgproxy_arm_for(pgproxy_t *p, pgproxy_mode_t mode, const char *app_prefix);
/** Cuts done so far. */
int pgproxy_cuts(const pgproxy_t *p);
/** After a PGPROXY_CUT_AFTER_COMMIT cut: 1 if the server answered the
 *  dropped COMMIT with CommandComplete "COMMIT", 0 if not, -1 if no answer. */
int pgproxy_last_commit_answer(const pgproxy_t *p);
/** down = 1: a database outage at the TCP boundary: every open connection
 *  is cut (within 100 ms) and new ones are accepted and closed at once,
 *  until down = 0. */
void pgproxy_set_down(pgproxy_t *p, int down);
/** Stops listening. Connections still open keep forwarding until closed. */
void pgproxy_stop(pgproxy_t *p);

#endif
