#include "pizza_testlib.h"

#include <curl/curl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static void env_base(pz_t *p, char env[][1200], char **envp, int *k)
{
    snprintf(env[*k], 1200, "DATABASE_URL=%s", p->db), envp[*k] = env[*k], (*k)++;
    snprintf(env[*k], 1200, "REDIS_ADDR=%s", p->redis_addr), envp[*k] = env[*k], (*k)++;
    snprintf(env[*k], 1200, "PORT=%d", p->api_port), envp[*k] = env[*k], (*k)++;
    snprintf(env[*k], 1200, "OUTBOX_METRICS_ADDR=off"), envp[*k] = env[*k], (*k)++;
    snprintf(env[*k], 1200, "OUTBOX_HTTP_ADDR=127.0.0.1"), envp[*k] = env[*k], (*k)++;
    snprintf(env[*k], 1200, "OUTBOX_SINK="), envp[*k] = env[*k], (*k)++;
    snprintf(env[*k], 1200, "OUTBOX_LOG_FORMAT=text"), envp[*k] = env[*k], (*k)++;
}

static pid_t spawn(pz_t *p, const char *bin, const char *log, char *const extra[])
{
    static char env[40][1200];
    char *envp[48];
    int k = 0;
    env_base(p, env, envp, &k);
    for (int i = 0; extra && extra[i] && k < 38; i++)
        snprintf(env[k], sizeof(env[k]), "%s", extra[i]), envp[k] = env[k], k++;
    envp[k] = NULL;
    char *argv[] = {(char *)tu_bin(bin), NULL};
    return tu_spawn(argv, envp, log);
}

void pz_spawn_job(pz_t *p, char *const job_env[])
{
    p->job = spawn(p, "pizza-job", p->job_log, job_env);
    /* Started when it logs so; an early exit fails the test with its log. */
    for (int i = 0; i < 300; i++) {
        if (count_in_file(p->job_log, "Job started") > 0)
            return;
        CHECK(tu_wait(p->job, 0) == -1, "pizza-job exited early; see %s", p->job_log);
        tu_sleep_ms(50);
    }
    CHECK(0, "pizza-job did not start in 15 s; see %s", p->job_log);
}

void pz_start(pz_t *p, const char *name, char *const job_env[])
{
    memset(p, 0, sizeof(*p));
    snprintf(p->name, sizeof(p->name), "%s", name);
    snprintf(p->db, sizeof(p->db), "%s", tu_fresh_db(name));
    char h[64];
    int port;
    tu_redis_addr(h, sizeof(h), &port); /* skips without test servers */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    p->redis_port = tu_free_port();
    p->redis_pid = tu_redis_server_start(p->redis_port);
    snprintf(p->redis_addr, sizeof(p->redis_addr), "127.0.0.1:%d", p->redis_port);
    p->api_port = tu_free_port();
    snprintf(p->url, sizeof(p->url), "http://127.0.0.1:%d", p->api_port);
    const char *dir = OUTBOX_BIN_DIR "/../tests";
    snprintf(p->api_log, sizeof(p->api_log), "%s/%s-api.log", dir, name);
    snprintf(p->job_log, sizeof(p->job_log), "%s/%s-job.log", dir, name);
    snprintf(p->cons_log, sizeof(p->cons_log), "%s/%s-consumer.log", dir, name);
    unlink(p->api_log);
    unlink(p->job_log);
    unlink(p->cons_log);

    p->api = spawn(p, "pizza-api", p->api_log, NULL);
    char url[128];
    snprintf(url, sizeof(url), "%s/readyz", p->url);
    http_resp_t r;
    int ready = 0;
    for (int i = 0; i < 300 && !ready; i++) {
        ready = http_do("GET", url, NULL, NULL, NULL, 0, &r) == 200;
        if (!ready) {
            CHECK(tu_wait(p->api, 0) == -1, "pizza-api exited early; see %s", p->api_log);
            tu_sleep_ms(50);
        }
    }
    CHECK(ready, "pizza-api not ready after 15 s; see %s", p->api_log);
    p->consumer = spawn(p, "pizza-consumer", p->cons_log, NULL);
    for (int i = 0; i < 300 && !count_in_file(p->cons_log, "Consumer started"); i++) {
        CHECK(tu_wait(p->consumer, 0) == -1, "pizza-consumer exited early; see %s", p->cons_log);
        tu_sleep_ms(50);
    }
    CHECK(count_in_file(p->cons_log, "Consumer started"), "pizza-consumer did not start; see %s",
          p->cons_log);
    pz_spawn_job(p, job_env);
    p->conn = tu_connect(p->db);
}

void pz_stop(pz_t *p, pid_t *pid, const char *what, const char *log)
{
    (void)p;
    if (*pid <= 0)
        return;
    kill(*pid, SIGTERM);
    int rc = tu_wait(*pid, 20000);
    if (rc == -1) {
        kill(*pid, SIGKILL);
        tu_wait(*pid, 5000);
    }
    *pid = 0;
    CHECK(rc == 0, "%s did not stop cleanly on SIGTERM (status %d); see %s", what, rc, log);
}

void pz_teardown(pz_t *p)
{
    pid_t *pids[3] = {&p->job, &p->consumer, &p->api};
    for (int i = 0; i < 3; i++)
        if (*pids[i] > 0) {
            kill(*pids[i], SIGKILL);
            tu_wait(*pids[i], 5000);
            *pids[i] = 0;
        }
    tu_stop(p->redis_pid);
    p->redis_pid = 0;
    PQfinish(p->conn);
    p->conn = NULL;
}

void pz_post_orders(pz_t *p, int n, char (*ids)[40])
{
    static const char *const flavors[] = {"Margherita", "Pepperoni", "Hawaiian", "Funghi"};
    static const char *const sizes[] = {"Small", "Medium", "Large", "Extra Large"};
    char **bodies = calloc((size_t)n, sizeof(char *));
    http_resp_t *out = calloc((size_t)n, sizeof(http_resp_t));
    CHECK(bodies && out, "oom");
    for (int i = 0; i < n; i++) {
        bodies[i] = malloc(256);
        CHECK(bodies[i], "oom");
        snprintf(bodies[i], 256,
                 "{\"flavor\":\"%s\",\"size\":\"%s\",\"quantity\":%d,\"price\":%d.%02d,"
                 "\"address\":\"%d Main St\",\"user_name\":\"user-%d\"}",
                 flavors[i % 4], sizes[(i / 4) % 4], 1 + i % 3, 9 + i % 20, (i * 7) % 100, i + 1,
                 i);
    }
    char url[128];
    snprintf(url, sizeof(url), "%s/pizza", p->url);
    /* In chunks: the API's pool, not the test, should be the limit. */
    for (int off = 0; off < n; off += 50) {
        int m = n - off < 50 ? n - off : 50;
        http_post_many(url, m, (const char *const *)bodies + off, NULL, out + off);
    }
    for (int i = 0; i < n; i++) {
        CHECK(out[i].status == 201, "order %d: status %ld: %s", i, out[i].status, out[i].body);
        json_member(out[i].body, "order_id", ids[i], 40);
        CHECK(outbox_uuid_valid(ids[i]), "order %d: no order_id in %s", i, out[i].body);
        free(bodies[i]);
    }
    free(bodies);
    free(out);
}

long long pz_stream_len(pz_t *p)
{
    redisContext *rc = tu_redis_connect("127.0.0.1", p->redis_port);
    redisReply *x = redisCommand(rc, "XLEN pizza-orders");
    CHECK(x && x->type == REDIS_REPLY_INTEGER, "XLEN pizza-orders");
    long long n = x->integer;
    freeReplyObject(x);
    redisFree(rc);
    return n;
}
