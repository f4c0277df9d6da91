/* A PostgreSQL server that dies in the middle of a long message must not
 * leave a pipeline waiting for ever.
 *
 * Found by chaos_orders (a PostgreSQL restart under load): an inventory
 * consumer thread spun in outbox__pg_pipeline from the restart on, and the
 * service never stopped on SIGTERM. libpq 15 reports a write that failed
 * while the socket still held unread bytes as "server closed the connection
 * unexpectedly" with PQstatus() still CONNECTION_OK, and in pipeline mode
 * then returns NULL for ever: the Sync's result never comes.
 *
 * pgproxy (PGPROXY_RESET_MID_MESSAGE) makes that happen at the TCP boundary
 * in front of the real server: the client's idle connection gets the start
 * of a 1 MB message, then a reset. For pipelines of 1 to 3 statements
 * (outbox_kit_db_pipeline, the services' entry point) the call must return
 * -1 within seconds and leave the connection CONNECTION_BAD, so that the
 * caller reconnects as after any lost connection; a new connection through
 * the proxy works. Without the bound on the results loop the call never
 * returns and the test fails at its deadline. */
#define _GNU_SOURCE /* pthread_timedjoin_np */
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "kit/kit.h"
#include "pgproxy.h"
#include "testutil.h"

typedef struct {
    PGconn *conn;
    int n, rc;
    PGresult *res[3];
} call_t;

static void *run_pipeline(void *arg)
{
    call_t *c = arg;
    static const char *const sqls[3] = {"SELECT $1::int + 1", "SELECT $1::int + 2",
                                        "SELECT $1::int + 3"};
    static const char *const one[1] = {"40"};
    const char *const *params[3] = {one, one, one};
    const int nparams[3] = {1, 1, 1};
    c->rc = outbox_kit_db_pipeline(c->conn, c->n, NULL, sqls, nparams, params, c->res);
    return NULL;
}

/* Runs the pipeline on another thread; fails the test if it has not
 * returned after timeout_ms. */
static void call_within(call_t *c, int timeout_ms, const char *what)
{
    pthread_t t;
    CHECK(pthread_create(&t, NULL, run_pipeline, c) == 0, "pthread_create");
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    CHECK(pthread_timedjoin_np(t, NULL, &until) == 0,
          "%s: outbox_kit_db_pipeline did not return within %d ms (waiting for a Sync that "
          "never comes)",
          what, timeout_ms);
}

static void clear(call_t *c)
{
    for (int i = 0; i < 3; i++) {
        PQclear(c->res[i]);
        c->res[i] = NULL;
    }
}

int main(void)
{
    const char *db = tu_fresh_db("pg_desync");
    pgproxy_t *px = pgproxy_start_for(db);
    char proxied[1200];
    snprintf(proxied, sizeof(proxied),
             "%s host=127.0.0.1 port=%d sslmode=disable gssencmode=disable", db, pgproxy_port(px));

    for (int n = 1; n <= 3; n++) {
        char app[32], err[512];
        snprintf(app, sizeof(app), "desync-%d", n);
        PGconn *conn = outbox_kit_db_connect(proxied, app, err, sizeof(err));
        CHECK(conn, "connect through the proxy: %s", err);

        /* Through the proxy, untouched: every statement answered. */
        call_t c = {conn, n, 0, {NULL}};
        call_within(&c, 10000, "before the reset");
        CHECK(c.rc == 0, "%d statements: the pipeline failed before any fault: %s", n,
              PQerrorMessage(conn));
        for (int i = 0; i < n; i++)
            CHECK(PQresultStatus(c.res[i]) == PGRES_TUPLES_OK &&
                      atoi(PQgetvalue(c.res[i], 0, 0)) == 41 + i,
                  "%d statements: result %d wrong", n, i);
        clear(&c);

        /* The server dies mid-message while the session is idle. */
        pgproxy_arm_for(px, PGPROXY_RESET_MID_MESSAGE, app);
        long long end = tu_now_ms() + 5000;
        while (pgproxy_cuts(px) < n && tu_now_ms() < end)
            tu_sleep_ms(10);
        CHECK(pgproxy_cuts(px) == n, "%d statements: the proxy did not reset the connection", n);

        call_within(&c, 10000, "after the reset");
        CHECK(c.rc == -1, "%d statements: the pipeline on a reset connection returned %d", n, c.rc);
        CHECK(PQstatus(conn) == CONNECTION_BAD,
              "%d statements: the connection still says OK after its server went away: the "
              "caller would keep using it",
              n);
        clear(&c);
        PQfinish(conn);

        /* The caller's reconnect works. */
        conn = outbox_kit_db_connect(proxied, app, err, sizeof(err));
        CHECK(conn, "reconnect through the proxy: %s", err);
        call_t again = {conn, n, 0, {NULL}};
        call_within(&again, 10000, "after reconnecting");
        CHECK(again.rc == 0, "%d statements: the pipeline failed after reconnecting", n);
        clear(&again);
        PQfinish(conn);
    }
    pgproxy_stop(px);
    printf("pg_desync: pipelines of 1-3 statements end (-1, connection bad) when the server "
           "resets mid-message\n");
    return 0;
}
