/* Our users' own commands work as they wrote them.
 *
 * A table per seed (the five READMEs our users wrote, /work/shared/seeds):
 * the curl commands each seed shows, as the seed writes them (shell text,
 * line continuations and quotes included), sent to the service that answers
 * them, and the answer the seed shows (status class and JSON members), plus
 * the log lines the seed says to watch for. Each command is parsed the way
 * the shell and curl would (-X, -H, -d; -d without -X is a POST; -d without
 * a Content-Type header sends application/x-www-form-urlencoded, as curl
 * does; -X POST without -d sends no body at all) and sent with libcurl to
 * the service on a free port in place of localhost:8080.
 *
 * Seeds 000 and 003 show no curl command: 000's sequence diagram shows
 * "POST /orders (Place Order) -> 200 OK (Success)", which is the row here;
 * 003 (cars) shows no HTTP API, so its row only starts cars-service and
 * checks it answers /healthz. Rows whose binary is not in the build
 * (users-service, transactions-service, cars-service are being written in
 * other branches) print "skipped: <binary> not built" and the rest still
 * runs: the rows light up when those binaries appear in build/bin.
 *
 * Expectations: "name=value" (a string member equal to value, or an
 * integer member whose decimal text is value), "name~uuid" (a UUID
 * string), "name~present", "name==prev" (equal to the same member of the
 * previous command's answer: the seed's "cached response"). Names may be
 * paths ("data.id"). {member} in a command is replaced by that member of
 * the previous answer. */
#include <curl/curl.h>
#include <jansson.h>
#include <signal.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "testutil.h"

#define MAX_CMDS 6
#define MAX_EXPECT 8

typedef struct cmd_s {
    const char *curl; /* as the seed writes it */
    int status_class; /* 2 for 2xx, 4 for 4xx */
    const char *expect[MAX_EXPECT];
} cmd_t;

typedef struct seed_s {
    const char *seed;   /* "001" */
    const char *binary; /* the service that answers */
    const char *what;
    cmd_t cmds[MAX_CMDS];
    const char *logs[8]; /* lines the seed says to watch for */
} seed_t;

static const seed_t seeds[] = {
    {"000",
     "orders-service",
     "sequence diagram: POST /orders (Place Order) -> 200 OK (Success)",
     {{"curl -X POST http://localhost:8080/orders", 2, {"status=success", "order_id~uuid"}}},
     {"Outbox worker started", "Inventory consumer started"}},
    {"001",
     "orders-service",
     "Quick start: create an order, then the same Idempotency-Key again",
     {{"curl -X POST http://localhost:8080/orders \\\n  -H \"Idempotency-Key: order-123\"",
       2,
       {"status=success", "order_id~uuid"}},
      {"curl -X POST http://localhost:8080/orders \\\n  -H \"Idempotency-Key: order-123\"",
       2,
       {"status=success", "order_id==prev"}}},
     {"Connected to database successfully", "Connected to Redis successfully",
      "Outbox worker started", "Email consumer started", "Server starting on port",
      "[EMAIL] Sending confirmation email for Order", "[EMAIL] -> User: user-456",
      "[EMAIL] -> Amount: 1000"}},
    {"002",
     "users-service",
     "User Service API: POST /users",
     {{"curl -X POST http://localhost:8080/users \\\n  -H 'Content-Type: application/json' \\\n"
       "  -d '{\"email\": \"user@example.com\", \"password\": \"password123\"}'",
       2,
       {"code=201", "message=user created successfully", "data.id~uuid"}}},
     {NULL}},
    {"002",
     "transactions-service",
     "Transaction Service API: create, get status, get balance",
     {{"curl -X POST http://localhost:8080/api/v1/transactions \\\n"
       "  -H 'Content-Type: application/json' \\\n"
       "  -d '{\"amount\": 100, \"description\": \"transfer\", \"fromUserId\": \"user-1\", "
       "\"toUserId\": \"user-2\"}'",
       2,
       {"transactionId~uuid", "status=PENDING"}},
      {"curl http://localhost:8080/api/v1/transactions/{transactionId}",
       2,
       {"transactionId==prev"}},
      /* The seed shows no answer; "user-1" has no account (no UserCreated). */
      {"curl http://localhost:8080/api/v1/balance/user-1", 4, {NULL}}},
     {NULL}},
    {"003",
     "cars-service",
     "no HTTP command in the seed: the service starts and answers",
     {{NULL}},
     {NULL}},
    {"004",
     "pizza-api",
     "Create a Pizza Order (using curl)",
     {{"curl -X POST http://localhost:8080/pizza \\\n"
       "  -H 'Content-Type: application/json' \\\n"
       "  -d "
       "'{\"flavor\":\"Pepperoni\",\"size\":\"Large\",\"quantity\":2,\"price\":19.99,\"address\":"
       "\"123 Main St\",\"user_name\":\"Alice\"}'",
       2,
       {"order_id~uuid", "flavor=Pepperoni", "size=Large", "quantity=2", "user_name=Alice",
        "status=pending"}}},
     {"Connected to database successfully", "Server starting on port"}},
};

/* ---- the command line, as the shell and curl read it ---- */

typedef struct req_s {
    char method[16];
    char url[512];
    char *headers[16];
    int nheaders;
    char *data; /* NULL: no -d */
} req_t;

/* Splits shell text into words: quotes, backslash-newline, backslash escapes. */
static int words(const char *s, char **out, int max)
{
    int n = 0;
    while (*s) {
        while (*s == ' ' || *s == '\t' || *s == '\n' || (*s == '\\' && s[1] == '\n'))
            s += *s == '\\' ? 2 : 1;
        if (!*s)
            break;
        char *w = malloc(strlen(s) + 1);
        CHECK(w && n < max, "too many words");
        size_t k = 0;
        while (*s && *s != ' ' && *s != '\t' && *s != '\n') {
            if (*s == '\'') {
                for (s++; *s && *s != '\''; s++)
                    w[k++] = *s;
                CHECK(*s == '\'', "unterminated ' quote");
                s++;
            } else if (*s == '"') {
                for (s++; *s && *s != '"'; s++) {
                    if (*s == '\\' && (s[1] == '"' || s[1] == '\\' || s[1] == '$'))
                        s++;
                    w[k++] = *s;
                }
                CHECK(*s == '"', "unterminated \" quote");
                s++;
            } else if (*s == '\\' && s[1]) {
                if (s[1] == '\n') {
                    s += 2;
                    continue;
                }
                w[k++] = s[1];
                s += 2;
            } else {
                w[k++] = *s++;
            }
        }
        w[k] = '\0';
        out[n++] = w;
    }
    return n;
}

/* Parses a curl command; localhost:8080 becomes 127.0.0.1:port. */
static void parse_curl(const char *cmd, int port, req_t *r)
{
    char *w[64];
    int n = words(cmd, w, 64);
    memset(r, 0, sizeof(*r));
    CHECK(n > 1 && !strcmp(w[0], "curl"), "not a curl command: %s", cmd);
    for (int i = 1; i < n; i++) {
        if ((!strcmp(w[i], "-X") || !strcmp(w[i], "--request")) && i + 1 < n)
            snprintf(r->method, sizeof(r->method), "%s", w[++i]);
        else if ((!strcmp(w[i], "-H") || !strcmp(w[i], "--header")) && i + 1 < n)
            r->headers[r->nheaders++] = strdup(w[++i]);
        else if ((!strcmp(w[i], "-d") || !strcmp(w[i], "--data") || !strcmp(w[i], "--data-raw")) &&
                 i + 1 < n)
            r->data = strdup(w[++i]);
        else if (w[i][0] == '-')
            CHECK(0, "curl option %s is not understood by this test", w[i]);
        else {
            const char *u = w[i], *host = "http://localhost:8080";
            CHECK(!strncmp(u, host, strlen(host)), "URL %s is not on localhost:8080", u);
            snprintf(r->url, sizeof(r->url), "http://127.0.0.1:%d%s", port, u + strlen(host));
        }
    }
    if (!r->method[0])
        snprintf(r->method, sizeof(r->method), "%s", r->data ? "POST" : "GET");
    int has_ct = 0;
    for (int i = 0; i < r->nheaders; i++)
        has_ct |= !strncasecmp(r->headers[i], "Content-Type:", 13);
    if (r->data && !has_ct) /* what curl sends for -d */
        r->headers[r->nheaders++] = strdup("Content-Type: application/x-www-form-urlencoded");
    for (int i = 0; i < n; i++)
        free(w[i]);
}

typedef struct answer_s {
    long status;
    char body[16384];
    size_t len;
} answer_t;

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    answer_t *a = ud;
    size_t n = size * nmemb, room = sizeof(a->body) - 1 - a->len;
    memcpy(a->body + a->len, p, n < room ? n : room);
    a->len += n < room ? n : room;
    a->body[a->len] = '\0';
    return n;
}

static void send_req(const req_t *r, answer_t *a)
{
    memset(a, 0, sizeof(*a));
    CURL *e = curl_easy_init();
    struct curl_slist *h = NULL;
    for (int i = 0; i < r->nheaders; i++)
        h = curl_slist_append(h, r->headers[i]);
    curl_easy_setopt(e, CURLOPT_URL, r->url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
    if (r->data) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->data);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(r->data));
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    if (curl_easy_perform(e) == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &a->status);
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
}

/* ---- answers ---- */

static json_t *member(json_t *doc, const char *path)
{
    json_t *v = doc;
    while (v && *path) {
        size_t n = strcspn(path, ".");
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)n, path);
        v = json_object_get(v, name);
        path += n + (path[n] == '.');
    }
    return v;
}

/* A member's value as text ("" when absent or not a scalar). */
static void text_of(json_t *v, char *out, size_t size)
{
    out[0] = '\0';
    if (json_is_string(v))
        snprintf(out, size, "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(out, size, "%lld", (long long)json_integer_value(v));
    else if (json_is_true(v) || json_is_false(v))
        snprintf(out, size, "%s", json_is_true(v) ? "true" : "false");
}

static void check_expect(const char *ctx, const char *exp, json_t *doc, json_t *prev)
{
    char name[128], val[256];
    const char *op = strpbrk(exp, "=~");
    CHECK(op, "bad expectation %s", exp);
    snprintf(name, sizeof(name), "%.*s", (int)(op - exp), exp);
    json_t *v = member(doc, name);
    text_of(v, val, sizeof(val));
    if (!strncmp(op, "==prev", 6)) {
        char want[256];
        text_of(member(prev, name), want, sizeof(want));
        CHECK(want[0] && !strcmp(val, want), "%s: %s is \"%s\", the previous answer had \"%s\"",
              ctx, name, val, want);
    } else if (!strcmp(op, "~uuid")) {
        CHECK(outbox_uuid_valid(val), "%s: %s is \"%s\", want a UUID", ctx, name, val);
    } else if (!strcmp(op, "~present")) {
        CHECK(v && !json_is_null(v), "%s: no %s in the answer", ctx, name);
    } else {
        CHECK(!strcmp(val, op + 1), "%s: %s is \"%s\", the seed shows \"%s\"", ctx, name, val,
              op + 1);
    }
}

/* {member} in s replaced by that member of prev. */
static void substitute(const char *s, json_t *prev, char *out, size_t size)
{
    size_t k = 0;
    while (*s && k + 1 < size) {
        const char *close = *s == '{' ? strchr(s, '}') : NULL;
        if (close && close - s > 1 && close - s < 64 && !strchr(s + 1, ' ') &&
            s[1] != '"') { /* a placeholder, not a JSON body */
            char name[64], val[256];
            snprintf(name, sizeof(name), "%.*s", (int)(close - s - 1), s + 1);
            text_of(member(prev, name), val, sizeof(val));
            CHECK(val[0], "placeholder {%s}: not in the previous answer", name);
            k += (size_t)snprintf(out + k, size - k, "%s", val);
            s = close + 1;
        } else {
            out[k++] = *s++;
        }
    }
    out[k] = '\0';
}

/* ---- services ---- */

static long get_status(int port, const char *path)
{
    req_t r;
    memset(&r, 0, sizeof(r));
    snprintf(r.method, sizeof(r.method), "GET");
    snprintf(r.url, sizeof(r.url), "http://127.0.0.1:%d%s", port, path);
    answer_t a;
    send_req(&r, &a);
    return a.status;
}

static int file_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[8192];
    int found = 0;
    while (!found && fgets(line, sizeof(line), f))
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

static int run_seed(const seed_t *s, int idx, const char *redis_addr)
{
    const char *bin = tu_bin(s->binary);
    if (access(bin, X_OK) != 0) {
        printf("skipped: %s not built (seed %s: %s)\n", s->binary, s->seed, s->what);
        return 0;
    }
    char dbname[64], log[256];
    snprintf(dbname, sizeof(dbname), "seed_%s_%d", s->seed, idx);
    const char *db = tu_fresh_db(dbname);
    int port = tu_free_port();
    snprintf(log, sizeof(log), "%s/seed-%s-%s.log", OUTBOX_BIN_DIR "/../tests", s->seed, s->binary);
    unlink(log);
    static char env[10][1200];
    char *envp[11];
    int k = 0;
    snprintf(env[k], sizeof(env[k]), "DATABASE_URL=%s", db), envp[k] = env[k], k++;
    snprintf(env[k], sizeof(env[k]), "REDIS_ADDR=%s", redis_addr), envp[k] = env[k], k++;
    snprintf(env[k], sizeof(env[k]), "PORT=%d", port), envp[k] = env[k], k++;
    snprintf(env[k], sizeof(env[k]), "SERVER_PORT=%d", port), envp[k] = env[k], k++;
    snprintf(env[k], sizeof(env[k]), "OUTBOX_METRICS_ADDR=off"), envp[k] = env[k], k++;
    snprintf(env[k], sizeof(env[k]), "OUTBOX_HTTP_ADDR=127.0.0.1"), envp[k] = env[k], k++;
    snprintf(env[k], sizeof(env[k]), "OUTBOX_SINK="), envp[k] = env[k], k++;
    snprintf(env[k], sizeof(env[k]), "OUTBOX_LOG_FORMAT=text"), envp[k] = env[k], k++;
    envp[k] = NULL;
    char *argv[] = {(char *)bin, NULL};
    pid_t pid = tu_spawn(argv, envp, log);
    int ready = 0;
    for (int i = 0; i < 300 && !ready; i++) {
        long st = get_status(port, "/readyz");
        ready = st == 200 || (st == 404 && get_status(port, "/healthz") == 200);
        if (!ready) {
            CHECK(tu_wait(pid, 0) == -1, "seed %s: %s exited early; see %s", s->seed, s->binary,
                  log);
            tu_sleep_ms(50);
        }
    }
    CHECK(ready, "seed %s: %s not ready after 15 s; see %s", s->seed, s->binary, log);

    json_t *prev = NULL;
    for (int c = 0; c < MAX_CMDS && s->cmds[c].curl; c++) {
        const cmd_t *cmd = &s->cmds[c];
        char text[2048], ctx[128];
        substitute(cmd->curl, prev, text, sizeof(text));
        snprintf(ctx, sizeof(ctx), "seed %s command %d (%s)", s->seed, c + 1, s->binary);
        req_t r;
        parse_curl(text, port, &r);
        answer_t a;
        send_req(&r, &a);
        CHECK(a.status / 100 == cmd->status_class, "%s: %s\n  -> HTTP %ld, the seed shows %dxx: %s",
              ctx, text, a.status, cmd->status_class, a.body);
        json_t *doc = json_loads(a.body, 0, NULL);
        CHECK(doc || !cmd->expect[0], "%s: the answer is not JSON: %s", ctx, a.body);
        for (int e = 0; e < MAX_EXPECT && cmd->expect[e]; e++)
            check_expect(ctx, cmd->expect[e], doc, prev);
        printf("ok seed %s: %s\n   -> %ld %.160s%s\n", s->seed, text, a.status, a.body,
               a.len > 160 ? "..." : "");
        json_decref(prev);
        prev = doc;
        free(r.data);
        for (int i = 0; i < r.nheaders; i++)
            free(r.headers[i]);
    }
    json_decref(prev);
    for (int l = 0; l < 8 && s->logs[l]; l++) {
        long long end = tu_now_ms() + 15000;
        while (!file_has(log, s->logs[l]) && tu_now_ms() < end)
            tu_sleep_ms(50);
        CHECK(file_has(log, s->logs[l]), "seed %s: the log never shows \"%s\"; see %s", s->seed,
              s->logs[l], log);
        printf("ok seed %s log: %s\n", s->seed, s->logs[l]);
    }
    kill(pid, SIGTERM);
    int rc = tu_wait(pid, 20000);
    if (rc == -1) {
        kill(pid, SIGKILL);
        tu_wait(pid, 5000);
    }
    CHECK(rc == 0, "seed %s: %s did not stop cleanly on SIGTERM (%d); see %s", s->seed, s->binary,
          rc, log);
    return 1;
}

int main(void)
{
    char host[64];
    int rport;
    tu_redis_addr(host, sizeof(host), &rport); /* skips without test servers */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int redis_port = tu_free_port();
    pid_t redis = tu_redis_server_start(redis_port);
    char redis_addr[64];
    snprintf(redis_addr, sizeof(redis_addr), "127.0.0.1:%d", redis_port);
    int ran = 0, n = (int)(sizeof(seeds) / sizeof(seeds[0]));
    for (int i = 0; i < n; i++)
        ran += run_seed(&seeds[i], i, redis_addr);
    tu_stop(redis);
    CHECK(ran > 0, "no seed's service is built");
    printf("PASS seed_commands (%d of %d seed rows ran, %d skipped)\n", ran, n, n - ran);
    return 0;
}
