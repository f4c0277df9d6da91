/* The chaos harness: the test's private servers (PostgreSQL through
 * initdb/pg_ctl, redis-server, a RabbitMQ node through scripts/rabbitmq.sh). */
#define _GNU_SOURCE /* strverscmp */
#include "chaos_int.h"

#include <glob.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

int chaos__pg_start(chaos_t *C)
{
    return chaos__shell("%s'%s/pg_ctl' -D '%s/pg/data' -l '%s' -w -t 120 start -o '%s' >/dev/null",
                        chaos__as_user(C), C->pgbin, C->dir, C->pg_log, C->pg_opts);
}

int chaos__pg_stop(chaos_t *C)
{
    return chaos__shell("%s'%s/pg_ctl' -D '%s/pg/data' -m immediate -w -t 60 stop >/dev/null 2>&1",
                        chaos__as_user(C), C->pgbin, C->dir);
}

void chaos__redis_start(chaos_t *C)
{
    char port[16], dir[300], log[320];
    snprintf(port, sizeof(port), "%d", C->redis_port);
    snprintf(dir, sizeof(dir), "%s/redis", C->dir);
    snprintf(log, sizeof(log), "%s/redis/redis.log", C->dir);
    char *argv[] = {"redis-server",
                    "--port",
                    port,
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--dir",
                    dir,
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--logfile",
                    log,
                    NULL};
    C->redis_pid = tu_spawn(argv, NULL, "/dev/null");
    for (int i = 0; i < 2400; i++) {
        redisContext *r = redisConnect("127.0.0.1", C->redis_port);
        redisReply *x = r && !r->err ? redisCommand(r, "PING") : NULL;
        int ok = x && x->type == REDIS_REPLY_STATUS;
        if (x)
            freeReplyObject(x);
        if (r)
            redisFree(r);
        if (ok)
            return;
        CHECK(tu_wait(C->redis_pid, 0) == -1, "redis-server exited at start; see %s", log);
        tu_sleep_ms(25);
    }
    CHECK(0, "redis-server not answering after 60 s; see %s", log);
}

void chaos__redis_stop(chaos_t *C)
{
    if (C->redis_pid <= 0)
        return;
    kill(C->redis_pid, SIGTERM); /* writes and syncs its append-only file */
    if (tu_wait(C->redis_pid, 30000) == -1) {
        kill(C->redis_pid, SIGKILL);
        tu_wait(C->redis_pid, 5000);
    }
    C->redis_pid = 0;
}

/* scripts/rabbitmq.sh SUB on this test's node (halt, restart, stop). */
void chaos__rmq(chaos_t *C, const char *sub)
{
    int rc = chaos__shell("'%s/scripts/rabbitmq.sh' %s '%s' </dev/null >/dev/null 2>&1",
                          OUTBOX_SOURCE_DIR, sub, C->rmq_dir);
    if (!strcmp(sub, "stop"))
        C->rmq_dir[0] = '\0';
    else
        CHECK(rc == 0, "rabbitmq.sh %s failed (%d)", sub, rc);
}

/* A RabbitMQ node of our own (scripts/rabbitmq.sh, stopped when we exit
 * however we exit): sets rmq_dir and broker_port. */
void chaos__rmq_start(chaos_t *C)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "RABBITMQ_OWNER_PID=%d '%s/scripts/rabbitmq.sh' start </dev/null",
             (int)getpid(), OUTBOX_SOURCE_DIR);
    FILE *p = popen(cmd, "r");
    CHECK(p, "popen rabbitmq.sh");
    char line[512];
    while (fgets(line, sizeof(line), p)) {
        char *v;
        if ((v = strstr(line, "RABBITMQ_DIR='"))) {
            v += 14;
            snprintf(C->rmq_dir, sizeof(C->rmq_dir), "%.*s", (int)strcspn(v, "'"), v);
        } else if ((v = strstr(line, "OUTBOX_TEST_AMQP_PORT='"))) {
            C->broker_port = atoi(v + 23);
        }
    }
    int rc = pclose(p);
    CHECK(rc == 0 && C->rmq_dir[0] && C->broker_port > 0, "rabbitmq.sh start failed (%d)", rc);
}

void chaos__copy_pg_log(chaos_t *C)
{
    char dst[512];
    snprintf(dst, sizeof(dst), "%s/../tests/chaos-%s-pg.log", OUTBOX_BIN_DIR, C->name);
    chaos__shell("cp '%s' '%s' 2>/dev/null", C->pg_log, dst);
}

void chaos__find_pgbin(chaos_t *C)
{
    glob_t g;
    C->pgbin[0] = '\0';
    if (glob("/usr/lib/postgresql/*/bin/initdb", 0, NULL, &g) == 0 && g.gl_pathc > 0) {
        /* the newest version: the last in version order */
        const char *best = g.gl_pathv[0];
        for (size_t i = 1; i < g.gl_pathc; i++)
            if (strverscmp(g.gl_pathv[i], best) > 0)
                best = g.gl_pathv[i];
        snprintf(C->pgbin, sizeof(C->pgbin), "%.*s", (int)(strrchr(best, '/') - best), best);
    }
    globfree(&g);
}
