#include "cars_testlib.h"

#include <curl/curl.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int vin_value(char ch)
{
    static const char *letters = "ABCDEFGHJKLMNPRSTUVWXYZ";
    static const int values[] = {1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4,
                                 5, 7, 9, 2, 3, 4, 5, 6, 7, 8, 9};
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    const char *p = strchr(letters, ch);
    return p ? values[p - letters] : 0;
}

void cars_vin(const char *prefix, int serial, char out[18])
{
    static const int weights[17] = {8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2};
    /* prefix (8) + check digit + model year 'A' + plant 'B' + serial (6) */
    snprintf(out, 18, "%.8s0AB%06d", prefix, serial % 1000000);
    int sum = 0;
    for (int i = 0; i < 17; i++)
        sum += vin_value(out[i]) * weights[i];
    out[8] = sum % 11 == 10 ? 'X' : (char)('0' + sum % 11);
}

const char *cars_body(const char *vin, const char *make, const char *model, int year,
                      long long price)
{
    static char b[512];
    snprintf(b, sizeof(b),
             "{\"vin\":\"%s\",\"make\":\"%s\",\"model\":\"%s\",\"year\":%d,\"price\":%lld}", vin,
             make, model, year, price);
    return b;
}

long cars_register(const cars_svc_t *s, const char *body, char id[37], http_resp_t *r)
{
    char url[128];
    snprintf(url, sizeof(url), "%s/cars", s->url);
    long st = http_do("POST", url, "application/json", NULL, body, strlen(body), r);
    if (id)
        json_member(r->body, "id", id, 37);
    return st;
}

long long cars_search_total(const cars_svc_t *s, const char *q, http_resp_t *r)
{
    char *enc = curl_easy_escape(NULL, q, 0);
    char url[512];
    snprintf(url, sizeof(url), "%s/cars/search?q=%s&limit=5", s->url, enc);
    curl_free(enc);
    if (http_do("GET", url, NULL, NULL, NULL, 0, r) != 200)
        return -1;
    json_t *o = json_loads(r->body, 0, NULL);
    long long n = json_is_integer(json_object_get(o, "total"))
                      ? (long long)json_integer_value(json_object_get(o, "total"))
                      : -1;
    json_decref(o);
    return n;
}

long long cars_wait_total(const cars_svc_t *s, const char *q, long long want, int timeout_ms)
{
    long long end = tu_now_ms() + timeout_ms, n;
    http_resp_t r;
    for (;;) {
        n = cars_search_total(s, q, &r);
        if (n == want || tu_now_ms() >= end)
            return n;
        tu_sleep_ms(50);
    }
}

/* The processes of the running test: a failed CHECK exits at once, and
 * must not leave a cars-service or redis-server behind (a leftover relay
 * would join the next run's database). */
static pid_t g_children[2];

static void kill_children(void)
{
    for (int i = 0; i < 2; i++)
        if (g_children[i] > 0) {
            kill(g_children[i], SIGKILL);
            tu_wait(g_children[i], 5000);
        }
}

static void spawn(cars_svc_t *s, char *const extra_env[])
{
    static char env[32][1200];
    char *envp[40];
    int k = 0;
    snprintf(env[k], sizeof(env[k]), "DATABASE_URL=%s", s->db), envp[k] = env[k], k++;
    snprintf(env[k], sizeof(env[k]), "SEARCH_DATABASE_URL=%s", s->search_db), envp[k] = env[k], k++;
    snprintf(env[k], sizeof(env[k]), "REDIS_ADDR=%s", s->redis_addr), envp[k] = env[k], k++;
    snprintf(env[k], sizeof(env[k]), "PORT=%d", s->port), envp[k] = env[k], k++;
    snprintf(env[k], sizeof(env[k]), "OUTBOX_METRICS_ADDR=off"), envp[k] = env[k], k++;
    snprintf(env[k], sizeof(env[k]), "OUTBOX_HTTP_ADDR=127.0.0.1"), envp[k] = env[k], k++;
    snprintf(env[k], sizeof(env[k]), "OUTBOX_SINK="), envp[k] = env[k], k++;
    for (int i = 0; extra_env && extra_env[i] && k < 30; i++)
        snprintf(env[k], sizeof(env[k]), "%s", extra_env[i]), envp[k] = env[k], k++;
    envp[k] = NULL;
    char *argv[] = {(char *)tu_bin("cars-service"), NULL};
    s->pid = tu_spawn(argv, envp, s->log);
    g_children[0] = s->pid;
    char url[128];
    snprintf(url, sizeof(url), "%s/readyz", s->url);
    http_resp_t r;
    for (int i = 0; i < 300; i++) {
        if (http_do("GET", url, NULL, NULL, NULL, 0, &r) == 200)
            return;
        CHECK(tu_wait(s->pid, 0) == -1, "cars-service exited early; see %s", s->log);
        tu_sleep_ms(50);
    }
    CHECK(0, "cars-service not ready after 15 s; see %s", s->log);
}

void cars_start(cars_svc_t *s, const char *name, char *const extra_env[])
{
    memset(s, 0, sizeof(*s));
    char sname[128];
    snprintf(sname, sizeof(sname), "%s_search", name);
    snprintf(s->search_db, sizeof(s->search_db), "%s", tu_fresh_db(sname));
    snprintf(s->db, sizeof(s->db), "%s", tu_fresh_db(name));
    char h[64];
    int p;
    tu_redis_addr(h, sizeof(h), &p); /* skips without test servers */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    s->redis_port = tu_free_port();
    s->redis_pid = tu_redis_server_start(s->redis_port);
    g_children[1] = s->redis_pid;
    atexit(kill_children);
    snprintf(s->redis_addr, sizeof(s->redis_addr), "127.0.0.1:%d", s->redis_port);
    s->port = tu_free_port();
    snprintf(s->url, sizeof(s->url), "http://127.0.0.1:%d", s->port);
    snprintf(s->log, sizeof(s->log), "%s/cars-%s.log", OUTBOX_BIN_DIR "/../tests", name);
    unlink(s->log);
    spawn(s, extra_env);
}

void cars_teardown(cars_svc_t *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        int rc = tu_wait(s->pid, 20000);
        if (rc == -1) {
            kill(s->pid, SIGKILL);
            tu_wait(s->pid, 5000);
        }
        s->pid = 0;
        g_children[0] = 0;
        CHECK(rc == 0, "cars-service did not stop cleanly on SIGTERM (status %d); see %s", rc,
              s->log);
    }
    tu_stop(s->redis_pid);
    s->redis_pid = 0;
    g_children[1] = 0;
}
