#include "orders_testlib.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    http_resp_t *r = ud;
    size_t n = size * nmemb, have = strlen(r->body);
    size_t room = sizeof(r->body) - 1 - have;
    memcpy(r->body + have, p, n < room ? n : room);
    r->body[have + (n < room ? n : room)] = '\0';
    return n;
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *ud)
{
    http_resp_t *r = ud;
    size_t n = size * nmemb;
    if (n >= 20 && !strncasecmp(p, "Idempotent-Replayed:", 20))
        r->replayed = 1;
    if (n >= 13 && !strncasecmp(p, "Content-Type:", 13)) {
        const char *v = p + 13;
        while (*v == ' ')
            v++;
        size_t l = strcspn(v, "\r\n");
        snprintf(r->content_type, sizeof(r->content_type), "%.*s", (int)l, v);
    }
    return n;
}

static CURL *prepare(const char *method, const char *url, const char *ctype, const char *key,
                     const char *body, size_t body_len, http_resp_t *out, struct curl_slist **hdrs)
{
    memset(out, 0, sizeof(*out));
    CURL *e = curl_easy_init();
    CHECK(e, "curl_easy_init");
    *hdrs = NULL;
    char h[1024];
    if (ctype) {
        snprintf(h, sizeof(h), "Content-Type: %s", ctype);
        *hdrs = curl_slist_append(*hdrs, h);
    } else if (body) {
        *hdrs = curl_slist_append(*hdrs, "Content-Type:"); /* none at all */
    }
    if (key) {
        snprintf(h, sizeof(h), "Idempotency-Key: %s", key);
        if (!*key)
            snprintf(h, sizeof(h), "Idempotency-Key;"); /* curl: empty value */
        *hdrs = curl_slist_append(*hdrs, h);
    }
    *hdrs = curl_slist_append(*hdrs, "Expect:");
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)body_len);
    } else if (!strcmp(method, "POST")) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, 0L);
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, *hdrs);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, out);
    /* A bound for a stuck request, not a speed: generous, and stretched in
     * the instrumented builds. 50 users created at once by
     * ledger_conservation each hash a password (Argon2id, 64 MiB): on a
     * loaded 2-core machine the last answers after a minute and more. */
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, tu_ms(180000));
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PRIVATE, out);
    return e;
}

long http_do(const char *method, const char *url, const char *ctype, const char *key,
             const char *body, size_t body_len, http_resp_t *out)
{
    struct curl_slist *hdrs;
    CURL *e = prepare(method, url, ctype, key, body, body_len, out, &hdrs);
    if (curl_easy_perform(e) == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &out->status);
    curl_easy_cleanup(e);
    curl_slist_free_all(hdrs);
    return out->status;
}

long http_raw(int port, const char *req, size_t len, http_resp_t *out)
{
    memset(out, 0, sizeof(*out));
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0, "socket");
    struct timeval tv = {30, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    CHECK(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect to 127.0.0.1:%d", port);
    for (size_t off = 0; off < len;) {
        ssize_t n = send(fd, req + off, len - off, MSG_NOSIGNAL);
        CHECK(n > 0, "send");
        off += (size_t)n;
    }
    static char buf[65536];
    size_t have = 0;
    ssize_t n;
    while (have < sizeof(buf) - 1 && (n = recv(fd, buf + have, sizeof(buf) - 1 - have, 0)) > 0)
        have += (size_t)n;
    buf[have] = '\0';
    close(fd);
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
        return 0;
    out->status = status;
    const char *hend = strstr(buf, "\r\n\r\n");
    if (!hend)
        return out->status;
    for (const char *p = strstr(buf, "\r\n"); p && p < hend; p = strstr(p + 2, "\r\n")) {
        const char *h = p + 2;
        if (!strncasecmp(h, "Content-Type:", 13)) {
            const char *v = h + 13;
            while (*v == ' ')
                v++;
            snprintf(out->content_type, sizeof(out->content_type), "%.*s", (int)strcspn(v, "\r\n"),
                     v);
        } else if (!strncasecmp(h, "Idempotent-Replayed:", 20)) {
            out->replayed = 1;
        }
    }
    snprintf(out->body, sizeof(out->body), "%s", hend + 4);
    return out->status;
}

void http_post_many(const char *url, int n, const char *const *bodies, const char *const *keys,
                    http_resp_t *out)
{
    CURLM *m = curl_multi_init();
    CURL **es = calloc((size_t)n, sizeof(CURL *));
    struct curl_slist **hs = calloc((size_t)n, sizeof(*hs));
    CHECK(m && es && hs, "oom");
    curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)n);
    for (int i = 0; i < n; i++) {
        es[i] = prepare("POST", url, "application/json", keys ? keys[i] : NULL, bodies[i],
                        strlen(bodies[i]), &out[i], &hs[i]);
        curl_multi_add_handle(m, es[i]);
    }
    int running = 1;
    while (running) {
        curl_multi_perform(m, &running);
        if (running)
            curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m, &left)))
        if (msg->msg == CURLMSG_DONE && msg->data.result == CURLE_OK) {
            http_resp_t *r;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &r->status);
        }
    for (int i = 0; i < n; i++) {
        curl_multi_remove_handle(m, es[i]);
        curl_easy_cleanup(es[i]);
        curl_slist_free_all(hs[i]);
    }
    curl_multi_cleanup(m);
    free(es);
    free(hs);
}

/* What the harness started and has not stopped yet: a CHECK that fails
 * exits the test, and without this the orders-service and redis-server it
 * spawned would live on (parent 1), retrying a database that is gone. */
#define KIDS_MAX 16
static pid_t g_kids[KIDS_MAX];

static void kids_kill(void)
{
    for (int i = 0; i < KIDS_MAX; i++)
        if (g_kids[i] > 0)
            kill(g_kids[i], SIGKILL);
}

static void kid_add(pid_t pid)
{
    static int registered;
    if (!registered && atexit(kids_kill) == 0)
        registered = 1;
    for (int i = 0; i < KIDS_MAX && pid > 0; i++)
        if (g_kids[i] <= 0) {
            g_kids[i] = pid;
            return;
        }
}

static void kid_del(pid_t pid)
{
    for (int i = 0; i < KIDS_MAX && pid > 0; i++)
        if (g_kids[i] == pid)
            g_kids[i] = 0;
}

void svc_spawn(svc_t *s, char *const extra_env[])
{
    static char env[32][1200];
    char *envp[40];
    int k = 0;
    snprintf(env[k], sizeof(env[k]), "DATABASE_URL=%s", s->db), envp[k] = env[k], k++;
    snprintf(env[k], sizeof(env[k]), "REDIS_ADDR=%s", s->redis_addr), envp[k] = env[k], k++;
    snprintf(env[k], sizeof(env[k]), "PORT=%d", s->port), envp[k] = env[k], k++;
    snprintf(env[k], sizeof(env[k]), "OUTBOX_METRICS_ADDR=off"), envp[k] = env[k], k++;
    snprintf(env[k], sizeof(env[k]), "OUTBOX_HTTP_ADDR=127.0.0.1"), envp[k] = env[k], k++;
    snprintf(env[k], sizeof(env[k]), "OUTBOX_SINK="), envp[k] = env[k], k++;
    for (int i = 0; extra_env && extra_env[i] && k < 30; i++)
        snprintf(env[k], sizeof(env[k]), "%s", extra_env[i]), envp[k] = env[k], k++;
    envp[k] = NULL;
    char *argv[] = {(char *)tu_bin("orders-service"), NULL};
    s->pid = tu_spawn(argv, envp, s->log);
    kid_add(s->pid);
    char url[128];
    snprintf(url, sizeof(url), "%s/readyz", s->url);
    http_resp_t r;
    for (int i = 0; i < 300; i++) {
        if (http_do("GET", url, NULL, NULL, NULL, 0, &r) == 200)
            return;
        CHECK(tu_wait(s->pid, 0) == -1, "orders-service exited early; see %s", s->log);
        tu_sleep_ms(50);
    }
    CHECK(0, "orders-service not ready after 15 s; see %s", s->log);
}

void svc_start(svc_t *s, const char *name, char *const extra_env[])
{
    memset(s, 0, sizeof(*s));
    snprintf(s->db, sizeof(s->db), "%s", tu_fresh_db(name));
    char h[64];
    int p;
    tu_redis_addr(h, sizeof(h), &p); /* skips without test servers */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    s->redis_port = tu_free_port();
    s->redis_pid = tu_redis_server_start(s->redis_port);
    kid_add(s->redis_pid);
    snprintf(s->redis_addr, sizeof(s->redis_addr), "127.0.0.1:%d", s->redis_port);
    s->port = tu_free_port();
    snprintf(s->url, sizeof(s->url), "http://127.0.0.1:%d", s->port);
    snprintf(s->log, sizeof(s->log), "%s/orders-%s.log", OUTBOX_BIN_DIR "/../tests", name);
    unlink(s->log);
    svc_spawn(s, extra_env);
}

int svc_term(svc_t *s, int timeout_ms)
{
    if (s->pid <= 0)
        return 0;
    kill(s->pid, SIGTERM);
    int rc = tu_wait(s->pid, timeout_ms);
    if (rc == -1) {
        kill(s->pid, SIGKILL);
        tu_wait(s->pid, 5000);
    }
    kid_del(s->pid);
    s->pid = 0;
    return rc;
}

void svc_stop(svc_t *s)
{
    if (s->pid <= 0)
        return;
    int rc = svc_term(s, 20000);
    CHECK(rc == 0, "orders-service did not stop cleanly on SIGTERM (status %d); see %s", rc,
          s->log);
}

void svc_teardown(svc_t *s)
{
    svc_stop(s);
    tu_stop(s->redis_pid);
    kid_del(s->redis_pid);
    s->redis_pid = 0;
}

long long wait_ll(PGconn *c, const char *sql, long long want, int timeout_ms)
{
    long long end = tu_now_ms() + timeout_ms, v;
    for (;;) {
        v = tu_query_ll(c, sql);
        if (v == want || tu_now_ms() >= end)
            return v;
        tu_sleep_ms(50);
    }
}

int count_in_file(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int n = 0;
    char line[8192];
    while (fgets(line, sizeof(line), f))
        for (const char *p = line; (p = strstr(p, needle)); p += strlen(needle))
            n++;
    fclose(f);
    return n;
}

int torn_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int n = 0;
    char line[65536];
    while (fgets(line, sizeof(line), f)) {
        size_t len = strcspn(line, "\n");
        const char *email = strstr(line, "[EMAIL]"), *json = strstr(line, "{\"ts\":");
        if ((email && email != line) || (json && (json != line || line[len - 1] != '}')) ||
            (email && json)) {
            fprintf(stderr, "torn line in %s: %.*s\n", path, (int)len, line);
            n++;
        }
    }
    fclose(f);
    return n;
}

int wait_count(const char *path, const char *needle, int want, int timeout_ms)
{
    long long end = tu_now_ms() + timeout_ms;
    int n;
    while ((n = count_in_file(path, needle)) < want && tu_now_ms() < end)
        tu_sleep_ms(50);
    return n;
}

void json_member(const char *json, const char *name, char *out, size_t out_size)
{
    out[0] = '\0';
    json_t *o = json_loads(json, 0, NULL);
    const char *v = json_string_value(json_object_get(o, name));
    if (v)
        snprintf(out, out_size, "%s", v);
    json_decref(o);
}
