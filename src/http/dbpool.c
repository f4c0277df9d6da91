/* PostgreSQL connection pool for request threads. See dbpool.h. */
#include "http/dbpool.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/util.h"
#include "store/pg/pg.h"

struct outbox_dbpool_s {
    pthread_mutex_t lock;
    pthread_cond_t freed;
    char *conninfo, *appname;
    int size;
    int opened; /* connections in existence (idle + borrowed) */
    int nidle;
    PGconn **idle;
    int closing;
};

outbox_dbpool_t *outbox__dbpool_new(const char *conninfo, int size, const char *appname)
{
    outbox_dbpool_t *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->size = size > 0 ? size : 1;
    p->conninfo = strdup(conninfo ? conninfo : "");
    p->appname = strdup(appname ? appname : "outbox");
    p->idle = calloc((size_t)p->size, sizeof(PGconn *));
    if (!p->conninfo || !p->appname || !p->idle) {
        free(p->conninfo);
        free(p->appname);
        free(p->idle);
        free(p);
        return NULL;
    }
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->freed, NULL);
    return p;
}

PGconn *outbox__dbpool_get(outbox_dbpool_t *p, int timeout_ms, char *errstr, size_t errstr_size)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&p->lock);
    for (;;) {
        if (p->nidle > 0) {
            PGconn *c = p->idle[--p->nidle];
            pthread_mutex_unlock(&p->lock);
            if (PQstatus(c) == CONNECTION_OK)
                return c;
            PQreset(c); /* a server restart broke it: try once to revive */
            if (PQstatus(c) == CONNECTION_OK)
                return c;
            PQfinish(c);
            pthread_mutex_lock(&p->lock);
            p->opened--;
            continue;
        }
        if (p->opened < p->size) {
            p->opened++;
            pthread_mutex_unlock(&p->lock);
            PGconn *c = outbox__pg_connect(p->conninfo, p->appname, errstr, errstr_size);
            if (c)
                return c;
            pthread_mutex_lock(&p->lock);
            p->opened--;
            pthread_cond_signal(&p->freed);
            pthread_mutex_unlock(&p->lock);
            return NULL;
        }
        if (pthread_cond_timedwait(&p->freed, &p->lock, &deadline) == ETIMEDOUT) {
            pthread_mutex_unlock(&p->lock);
            outbox__err(OUTBOX_ERR_TIMEOUT, errstr, errstr_size,
                        "no database connection free within %d ms (all %d in use)", timeout_ms,
                        p->size);
            return NULL;
        }
    }
}

void outbox__dbpool_put(outbox_dbpool_t *p, PGconn *conn)
{
    if (!conn)
        return;
    if (PQstatus(conn) == CONNECTION_OK && PQpipelineStatus(conn) == PQ_PIPELINE_OFF &&
        PQtransactionStatus(conn) != PQTRANS_IDLE)
        PQclear(PQexec(conn, "ROLLBACK"));
    int broken = PQstatus(conn) != CONNECTION_OK || PQpipelineStatus(conn) != PQ_PIPELINE_OFF ||
                 PQtransactionStatus(conn) != PQTRANS_IDLE;
    pthread_mutex_lock(&p->lock);
    if (broken || p->closing || p->nidle >= p->size) {
        p->opened--;
        pthread_mutex_unlock(&p->lock);
        PQfinish(conn);
        pthread_mutex_lock(&p->lock);
    } else {
        p->idle[p->nidle++] = conn;
    }
    pthread_cond_signal(&p->freed);
    pthread_mutex_unlock(&p->lock);
}

int outbox__dbpool_ready(void *pool, char *why, size_t why_size)
{
    outbox_dbpool_t *p = pool;
    char err[256];
    PGconn *c = outbox__dbpool_get(p, 2000, err, sizeof(err));
    if (!c) {
        snprintf(why, why_size, "database unreachable: %s", err);
        return -1;
    }
    PGresult *r = PQexec(c, "SELECT 1");
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        snprintf(why, why_size, "database unreachable: %s", PQerrorMessage(c));
    PQclear(r);
    outbox__dbpool_put(p, c);
    return ok ? 0 : -1;
}

void outbox__dbpool_destroy(outbox_dbpool_t *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->closing = 1;
    for (int i = 0; i < p->nidle; i++)
        PQfinish(p->idle[i]);
    p->opened -= p->nidle;
    p->nidle = 0;
    int borrowed = p->opened;
    pthread_mutex_unlock(&p->lock);
    if (borrowed > 0)
        return; /* leak the shell rather than free it under a borrower */
    pthread_cond_destroy(&p->freed);
    pthread_mutex_destroy(&p->lock);
    free(p->idle);
    free(p->conninfo);
    free(p->appname);
    free(p);
}
