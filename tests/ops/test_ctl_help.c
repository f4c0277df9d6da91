/* Every outboxctl command answers --help (and "outboxctl help CMD") with its
 * own usage, exit 0, without a database: DATABASE_URL points nowhere. */
#include <string.h>
#include <sys/wait.h>

#include "testutil.h"

static int run(const char *cmd, char *out, size_t size)
{
    char full[2048];
    snprintf(full, sizeof(full), "DATABASE_URL='postgresql://u@127.0.0.1:1/x' %s 2>&1", cmd);
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
    const char *ctl = tu_bin("outboxctl");
    static const struct {
        const char *args, *want;
    } cases[] = {
        {"migrate --help", "outboxctl [OPTIONS] migrate"},
        {"status --help", "outboxctl [OPTIONS] status"},
        {"status --json -h", "outboxctl [OPTIONS] status"},
        {"dlq --help", "dlq requeue ID|--all"},
        {"dlq list --help", "dlq list [--limit N]"},
        {"dlq requeue --help", "dlq requeue ID|--all"},
        {"dlq purge -h", "--older-than"},
        {"replay --help", "outboxctl [OPTIONS] replay"},
        {"config-doc --help", "configuration reference"},
        {"help dlq", "dlq show ID"},
        {"help", "Commands"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(cmd, sizeof(cmd), "%s %s", ctl, cases[i].args);
        int rc = run(cmd, out, sizeof(out));
        CHECK(rc == 0 && strstr(out, cases[i].want) && !strstr(out, "cannot connect"),
              "outboxctl %s: rc=%d, want \"%s\" in: %s", cases[i].args, rc, cases[i].want, out);
    }
    /* Without --help the same command still needs the database. */
    snprintf(cmd, sizeof(cmd), "%s dlq list", ctl);
    CHECK(run(cmd, out, sizeof(out)) == 1 && strstr(out, "cannot connect"), "dlq list: %s", out);
    snprintf(cmd, sizeof(cmd), "%s help frob", ctl);
    CHECK(run(cmd, out, sizeof(out)) == 2, "help frob: %s", out);
    printf("PASS cli_subcommand_help\n");
    return 0;
}
