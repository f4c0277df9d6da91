/* outboxctl tail and status --watch against a running relay (ack_mode=mark,
 * Redis sink): tail from the outbox (processed rows) and from the Redis
 * stream both show every event committed after they started, once, in
 * commit order; status --watch prints successive snapshots when stdout is
 * not a terminal, and on a terminal redraws in place and quits on q. */
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#define N 20

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    CHECK(f, "open %s", path);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return strdup(buf);
}

static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* Waits until the tail writing to log says it follows (its start position
 * is taken), within a bound as generous as a slow machine needs. */
static void wait_following(const char *log, pid_t pid)
{
    long long end = tu_now_ms() + tu_ms(30000);
    for (;;) {
        FILE *f = fopen(log, "r");
        char line[512];
        int found = 0;
        while (f && !found && fgets(line, sizeof(line), f))
            found = strstr(line, "outboxctl tail: following") != NULL;
        if (f)
            fclose(f);
        if (found)
            return;
        CHECK(tu_wait(pid, 1) == -1, "the tail exited before following (see %s)", log);
        CHECK(tu_now_ms() < end, "the tail does not follow yet (see %s)", log);
        tu_sleep_ms(20);
    }
}

/* Every id appears once; the events of one key (i % 3) in commit order. */
static void check_ids(const char *what, const char *out, char ids[N][OUTBOX_UUID_STRLEN + 1])
{
    const char *prevs[3] = {out, out, out};
    for (int i = 0; i < N; i++) {
        const char **prev = &prevs[i % 3];
        char want[64];
        snprintf(want, sizeof(want), "{\"id\":\"%s\"", ids[i]);
        CHECK(count_of(out, want) == 1, "%s: event %d (%s) shown %d times:\n%s", what, i, ids[i],
              count_of(out, want), out);
        const char *at = strstr(out, want);
        CHECK(at >= *prev, "%s: event %d out of order within its key:\n%s", what, i, out);
        *prev = at;
    }
}

int main(void)
{
    PGconn *c;
    const char *ci = tu_outbox_db("ops_tail_watch", &c);
    char host[64], sink[128], env_db[1024], env_sink[160], err[512];
    int port;
    tu_redis_addr(host, sizeof(host), &port);
    snprintf(sink, sizeof(sink), "redis://%s:%d", host, port);
    const char *topic = tu_unique("tail");

    outbox_conf_t *conf = outbox_conf_new();
    tu_conf_set(conf, "database_url", ci);
    tu_conf_set(conf, "sink", sink);
    tu_conf_set(conf, "ack_mode", "mark");
    tu_conf_set(conf, "metrics_addr", "off");
    tu_conf_set(conf, "workers", "2");
    outbox_relay_t *relay = tu_relay_start(conf);

    snprintf(env_db, sizeof(env_db), "DATABASE_URL=%s", ci);
    snprintf(env_sink, sizeof(env_sink), "OUTBOX_SINK=%s", sink);
    char *env[] = {env_db, env_sink, "OUTBOX_ACK_MODE=mark", NULL};
    const char *ctl = tu_bin("outboxctl");
    char count[16];
    snprintf(count, sizeof(count), "%d", N);
    char log_outbox[256], log_redis[256];
    snprintf(log_outbox, sizeof(log_outbox), "%s/ops_tail_outbox.log", OUTBOX_BIN_DIR "/..");
    snprintf(log_redis, sizeof(log_redis), "%s/ops_tail_redis.log", OUTBOX_BIN_DIR "/..");
    unlink(log_outbox);
    unlink(log_redis);
    char tmo[16]; /* the tails' own bound, stretched like the test's */
    snprintf(tmo, sizeof(tmo), "%lds", tu_ms(60000) / 1000);
    char *a1[] = {(char *)ctl, "tail", (char *)topic, "--json", "--count", count,
                  "--timeout", tmo,    "--source",    "outbox", NULL};
    char *a2[] = {(char *)ctl, "tail", (char *)topic, "--json", "--count", count,
                  "--timeout", tmo,    "--source",    "redis",  NULL};
    /* An event from before the tails start is not shown. */
    static char ids[N][OUTBOX_UUID_STRLEN + 1];
    char old_id[OUTBOX_UUID_STRLEN + 1];
    PQclear(tu_exec(c, "BEGIN"));
    outbox_event_t ev = {.topic = topic, .type = "Before", .key = "k0", .payload = "{\"n\":-1}"};
    CHECK(outbox_enqueue(c, &ev, old_id, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    PQclear(tu_exec(c, "COMMIT"));
    /* published and processed before the tails start */
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM outbox WHERE id = '%s' AND status = 'processed'", old_id);
    long long tp = tu_now_ms();
    while (tu_query_ll(c, sql) != 1) {
        CHECK(tu_now_ms() - tp < tu_ms(30000), "the first event was not processed");
        tu_sleep_ms(20);
    }

    pid_t p1 = tu_spawn(a1, env, log_outbox), p2 = tu_spawn(a2, env, log_redis);
    wait_following(log_outbox, p1);
    wait_following(log_redis, p2);
    for (int i = 0; i < N; i++) {
        char payload[64], key[16];
        snprintf(payload, sizeof(payload), "{\"n\":%d,\"big\":12345678901234567890}", i);
        snprintf(key, sizeof(key), "k%d", i % 3);
        outbox_event_t e = {.topic = topic, .type = "Happened", .key = key, .payload = payload};
        PQclear(tu_exec(c, "BEGIN"));
        CHECK(outbox_enqueue(c, &e, ids[i], err, sizeof(err)) == OUTBOX_OK, "%s", err);
        PQclear(tu_exec(c, "COMMIT"));
        if (i % 5 == 0)
            tu_sleep_ms(100);
    }
    int s1 = tu_wait(p1, 60000), s2 = tu_wait(p2, 60000);
    char *o1 = slurp(log_outbox), *o2 = slurp(log_redis);
    CHECK(s1 == 0, "tail --source outbox exit %d:\n%s", s1, o1);
    CHECK(s2 == 0, "tail --source redis exit %d:\n%s", s2, o2);
    check_ids("tail (redis)", o2, ids);
    check_ids("tail (outbox)", o1, ids);
    CHECK(!strstr(o1, old_id) && !strstr(o2, old_id), "an old event was shown:\n%s\n%s", o1, o2);
    CHECK(strstr(o1, "12345678901234567890"), "data not as written:\n%s", o1);
    printf("tail: outbox and redis sources each showed the %d new events once\n", N);
    free(o1);
    free(o2);

    /* Text output, from the start, with a count. */
    char cmd[2048], out[65536];
    snprintf(cmd, sizeof(cmd),
             "DATABASE_URL='%s' OUTBOX_ACK_MODE=mark %s tail %s --from-start --count 3 "
             "--timeout 20s 2>/dev/null",
             ci, ctl, topic);
    FILE *p = popen(cmd, "r");
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    CHECK(pclose(p) == 0 && count_of(out, "\n") == 3 && strstr(out, "Before") &&
              strstr(out, "key=k0"),
          "tail text --from-start:\n%s", out);

    /* status --watch without a terminal: successive snapshots. */
    snprintf(cmd, sizeof(cmd),
             "DATABASE_URL='%s' %s status --watch --interval 200ms --count 3 2>&1", ci, ctl);
    p = popen(cmd, "r");
    n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    CHECK(pclose(p) == 0 && count_of(out, "--- ") == 3 && count_of(out, "outbox table:") == 3 &&
              count_of(out, "processed (kept):     21") >= 1 && !strchr(out, '\033'),
          "status --watch (pipe):\n%s", out);
    snprintf(cmd, sizeof(cmd),
             "DATABASE_URL='%s' %s status --watch --json --interval 200ms --count 2 2>&1", ci, ctl);
    p = popen(cmd, "r");
    n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    CHECK(pclose(p) == 0 && count_of(out, "{\"table\":\"outbox\"") == 2 && count_of(out, "\n") == 2,
          "status --watch --json (pipe):\n%s", out);

    /* On a terminal: alternate screen, redraws, and q quits. */
    if (system("command -v script >/dev/null 2>&1") == 0) {
        snprintf(cmd, sizeof(cmd),
                 "(sleep 2; printf q) | timeout 20 script -qec \"env DATABASE_URL='%s' %s status "
                 "--watch --interval 300ms\" /dev/null 2>&1",
                 ci, ctl);
        long long t0 = tu_now_ms();
        p = popen(cmd, "r");
        n = fread(out, 1, sizeof(out) - 1, p);
        out[n] = '\0';
        int st = pclose(p);
        CHECK(st == 0, "status --watch on a terminal: exit %d (q did not quit?):\n%s", st, out);
        CHECK(strstr(out, "\033[?1049h") && strstr(out, "q to quit") &&
                  count_of(out, "\033[H\033[2J") >= 3 && strstr(out, "\033[?1049l"),
              "status --watch on a terminal: no redraw:\n%s", out);
        printf("status --watch: terminal redraws and quits on q after %lld ms\n", tu_now_ms() - t0);
    }
    outbox_relay_stop(relay);
    outbox_relay_wait(relay, 10000);
    outbox_relay_destroy(relay);

    /* ack_mode=delete, no relay running, a non-Redis sink: the outbox source
     * shows pending rows, those already there with --from-start and then the
     * ones committed while it runs. */
    const char *topic2 = tu_unique("tailpending");
    for (int i = 0; i < 4; i++) {
        outbox_event_t e = {
            .topic = topic2, .type = i < 2 ? "Early" : "Late", .key = "p", .payload = "{}"};
        if (i == 2) {
            char *a3[] = {(char *)ctl, "tail", (char *)topic2, "--from-start", "--count", "4",
                          "--timeout", "30s",  "--json",       "--interval",   "50ms",    NULL};
            char env_sink2[] = "OUTBOX_SINK=stdout:";
            char *env2[] = {env_db, env_sink2, NULL};
            snprintf(log_outbox, sizeof(log_outbox), "%s/ops_tail_pending.log",
                     OUTBOX_BIN_DIR "/..");
            unlink(log_outbox);
            p1 = tu_spawn(a3, env2, log_outbox);
            wait_following(log_outbox, p1);
        }
        PQclear(tu_exec(c, "BEGIN"));
        CHECK(outbox_enqueue(c, &e, ids[i], err, sizeof(err)) == OUTBOX_OK, "%s", err);
        PQclear(tu_exec(c, "COMMIT"));
    }
    s1 = tu_wait(p1, 30000);
    o1 = slurp(log_outbox);
    CHECK(s1 == 0 && count_of(o1, "\"type\":\"Early\"") == 2 &&
              count_of(o1, "\"type\":\"Late\"") == 2 && strstr(o1, "pending"),
          "tail of pending rows (delete mode): exit %d:\n%s", s1, o1);
    free(o1);
    printf("tail: pending rows (ack_mode=delete, outbox source) shown, old and new\n");
    PQfinish(c);
    printf("PASS ctl_tail_and_watch\n");
    return 0;
}
