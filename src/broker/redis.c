/* Redis connection set-up (hiredis): connect, AUTH, SELECT. See broker/redis.h. */
#include "broker/redis.h"

#include <pthread.h>
#include <stdio.h>
#include <sys/time.h>

#include "core/util.h"

/* Sends one command; 0 if Redis answered with anything but an error, -1
 * otherwise (errstr: "<what> at host:port failed: <reason>"). */
static int command(redisContext *c, const outbox__redis_url_t *u, const char *what, int argc,
                   const char **argv, char *errstr, size_t errstr_size)
{
    redisReply *rep = redisCommandArgv(c, argc, argv, NULL);
    int bad = !rep || rep->type == REDIS_REPLY_ERROR;
    if (bad)
        outbox__err(OUTBOX_ERR_BROKER, errstr, errstr_size, "Redis %s at %s:%d failed: %s", what,
                    u->host, u->port, rep && rep->str ? rep->str : c->errstr);
    if (rep)
        freeReplyObject(rep);
    return bad ? -1 : 0;
}

/* hiredis' default reply functions with createArray bounded; the defaults
 * are read once from a reader of their own (hiredis keeps them static). */
static redisReplyObjectFunctions guarded;
static void *(*default_create_array)(const redisReadTask *, int);
static pthread_once_t guarded_once = PTHREAD_ONCE_INIT;

static void *create_array(const redisReadTask *task, int elements)
{
    if (elements < 0 || elements > OUTBOX__REDIS_MAX_ELEMENTS)
        return NULL; /* the reader reports it as out of memory */
    return default_create_array(task, elements);
}

static void init_guarded(void)
{
    redisReader *r = redisReaderCreate();
    if (!r)
        return;
    guarded = *r->fn;
    default_create_array = r->fn->createArray;
    guarded.createArray = create_array;
    redisReaderFree(r);
}

void outbox__redis_guard_reader(redisReader *reader)
{
    pthread_once(&guarded_once, init_guarded);
    if (reader && reader->fn && default_create_array &&
        reader->fn->createArray == default_create_array)
        reader->fn = &guarded;
}

redisContext *outbox__redis_connect(const outbox__redis_url_t *u, int64_t timeout_ms, char *errstr,
                                    size_t errstr_size)
{
    struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)((timeout_ms % 1000) * 1000)};
    redisContext *c = timeout_ms > 0 ? redisConnectWithTimeout(u->host, u->port, tv)
                                     : redisConnect(u->host, u->port);
    if (!c || c->err) {
        outbox__err(OUTBOX_ERR_BROKER, errstr, errstr_size, "cannot connect to Redis at %s:%d: %s",
                    u->host, u->port, c ? c->errstr : "out of memory");
        if (c)
            redisFree(c);
        return NULL;
    }
    outbox__redis_guard_reader(c->reader);
    /* Keep the reply buffer between replies: by default hiredis frees it
     * whenever it is empty and over 16 KiB, so every batch-sized reply
     * (XREADGROUP of hundreds of entries) allocated it again. It stays at
     * the largest reply read on this connection. */
    c->reader->maxbuf = 0;
    if (timeout_ms > 0)
        redisSetTimeout(c, tv);
    if (u->password[0]) {
        const char *av[2] = {"AUTH", u->password};
        if (command(c, u, "AUTH", 2, av, errstr, errstr_size)) {
            redisFree(c);
            return NULL;
        }
    }
    if (u->db) {
        char db[16];
        snprintf(db, sizeof(db), "%d", u->db);
        const char *av[2] = {"SELECT", db};
        if (command(c, u, "SELECT", 2, av, errstr, errstr_size)) {
            redisFree(c);
            return NULL;
        }
    }
    return c;
}
