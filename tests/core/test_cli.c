/* Command-line behaviour a user meets first: --help answers, bad input gets
 * a clear message and exit 2, and no secret reaches the output. No servers. */
#include <string.h>
#include <sys/wait.h>

#include "testutil.h"

static int run(const char *cmd, char *out, size_t size)
{
    char full[2048];
    snprintf(full, sizeof(full), "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    CHECK(p, "popen %s", cmd);
    size_t n = fread(out, 1, size - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int main(void)
{
    static char out[65536];
    char cmd[1024];
    const char *relay = tu_bin("outbox-relay"), *ctl = tu_bin("outboxctl");

    snprintf(cmd, sizeof(cmd), "%s --help", relay);
    CHECK(run(cmd, out, sizeof(out)) == 0 && strstr(out, "Usage: outbox-relay") &&
              strstr(out, "OUTBOX_WORKERS") && strstr(out, "SIGTERM"),
          "relay --help: %s", out);

    snprintf(cmd, sizeof(cmd), "%s --workers 0", relay);
    CHECK(run(cmd, out, sizeof(out)) == 2 && strstr(out, "range"), "--workers 0: %s", out);
    snprintf(cmd, sizeof(cmd), "%s --frobnicate", relay);
    CHECK(run(cmd, out, sizeof(out)) == 2 && strstr(out, "--frobnicate"), "unknown flag: %s", out);
    snprintf(cmd, sizeof(cmd), "OUTBOX_WORKERS=lots %s", relay);
    CHECK(run(cmd, out, sizeof(out)) == 2 && strstr(out, "OUTBOX_WORKERS"), "bad env: %s", out);

    /* Unusable sinks fail at start with the reason, exit 2, password hidden. */
    const char *bad_sinks[] = {"ftp://x", "redis://127.0.0.1:99999",
                               "amqp://guest:s3cretpw@127.0.0.1:notaport/"};
    for (size_t i = 0; i < sizeof(bad_sinks) / sizeof(bad_sinks[0]); i++) {
        snprintf(cmd, sizeof(cmd), "OUTBOX_METRICS_ADDR=off OUTBOX_SINK='%s' %s --no-migrate",
                 bad_sinks[i], relay);
        CHECK(run(cmd, out, sizeof(out)) == 2, "sink %s: want exit 2: %s", bad_sinks[i], out);
        CHECK(strstr(out, "config_error"), "sink %s: no config_error line: %s", bad_sinks[i], out);
        CHECK(!strstr(out, "s3cretpw"), "password leaked: %s", out);
    }

    /* Secrets given by environment never appear in the effective-config log line. */
    snprintf(cmd, sizeof(cmd),
             "DB_PASSWORD=hunter2pw REDIS_PASSWORD=redispw OUTBOX_SINK=ftp://x "
             "DATABASE_URL='postgresql://app:urlpw@127.0.0.1:1/x' %s --no-migrate",
             relay);
    run(cmd, out, sizeof(out));
    CHECK(strstr(out, "\"config\"") && !strstr(out, "hunter2pw") && !strstr(out, "redispw") &&
              !strstr(out, "urlpw"),
          "secret in logs: %s", out);

    snprintf(cmd, sizeof(cmd), "%s --help", ctl);
    CHECK(run(cmd, out, sizeof(out)) == 0 && strstr(out, "dlq requeue") && strstr(out, "status"),
          "ctl help: %s", out);
    snprintf(cmd, sizeof(cmd), "%s", ctl);
    CHECK(run(cmd, out, sizeof(out)) == 2 && strstr(out, "Usage"), "ctl without command: %s", out);
    snprintf(cmd, sizeof(cmd), "%s frob", ctl);
    CHECK(run(cmd, out, sizeof(out)) == 2 && strstr(out, "unknown command"), "ctl unknown: %s",
          out);
    snprintf(cmd, sizeof(cmd), "DATABASE_URL='postgresql://u:ctlpw@127.0.0.1:1/x' %s status", ctl);
    CHECK(run(cmd, out, sizeof(out)) == 1 && strstr(out, "cannot connect") && !strstr(out, "ctlpw"),
          "ctl unreachable db: %s", out);
    printf("PASS cli_help_and_errors\n");
    return 0;
}
