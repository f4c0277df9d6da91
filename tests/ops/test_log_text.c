/* Logs for both readers: JSON lines by default; --log-format=text gives
 * aligned columns (time, level, component, event, then key=value), coloured
 * only on a terminal without NO_COLOR. No servers: a relay with a bad sink
 * logs its config and a config_error and exits 2. */
#include <regex.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

static int run(const char *cmd, char *out, size_t size)
{
    FILE *p = popen(cmd, "r");
    CHECK(p, "popen %s", cmd);
    size_t n = fread(out, 1, size - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int matches(const char *re, const char *s)
{
    regex_t r;
    CHECK(regcomp(&r, re, REG_EXTENDED | REG_NEWLINE) == 0, "bad regex %s", re);
    int ok = regexec(&r, s, 0, NULL, 0) == 0;
    regfree(&r);
    return ok;
}

#define ENV                                                                                        \
    "DATABASE_URL='postgresql://u:s3cretpw@127.0.0.1:1/x' OUTBOX_SINK=ftp://x "                    \
    "OUTBOX_METRICS_ADDR=off "

int main(void)
{
    static char out[65536];
    char cmd[2048];
    const char *relay = tu_bin("outbox-relay");

    snprintf(cmd, sizeof(cmd), ENV "%s --no-migrate 2>&1", relay);
    CHECK(run(cmd, out, sizeof(out)) == 2, "relay: %s", out);
    CHECK(matches("^\\{\"ts\":\"[0-9T:.-]+Z\",\"level\":\"error\",\"component\":\"relay\","
                  "\"event\":\"config_error\"",
                  out),
          "json line: %s", out);

    snprintf(cmd, sizeof(cmd), ENV "%s --no-migrate --log-format=text 2>&1", relay);
    CHECK(run(cmd, out, sizeof(out)) == 2, "relay text: %s", out);
    CHECK(matches("^[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3} ERROR relay      config_error           "
                  "sink \"ftp://x\"",
                  out),
          "text columns: %s", out);
    CHECK(matches("^[0-9:.]{12} INFO  relay      config                 ", out), "info: %s", out);
    CHECK(!strchr(out, '\033'), "colour in a pipe: %s", out);
    CHECK(!strstr(out, "s3cretpw"), "secret in text log: %s", out);

    snprintf(cmd, sizeof(cmd), ENV "OUTBOX_LOG_FORMAT=text %s --no-migrate 2>&1", relay);
    CHECK(run(cmd, out, sizeof(out)) == 2 && matches("^[0-9:.]{12} ERROR relay", out),
          "OUTBOX_LOG_FORMAT=text: %s", out);

    /* On a terminal (script(1) gives one): coloured, unless NO_COLOR. */
    if (system("command -v script >/dev/null 2>&1") == 0) {
        snprintf(cmd, sizeof(cmd),
                 "script -qec \"env " ENV "%s --no-migrate --log-format=text\" /dev/null", relay);
        run(cmd, out, sizeof(out));
        CHECK(strstr(out, "\033[1;31mERROR"), "no colour on a terminal: %s", out);
        snprintf(cmd, sizeof(cmd),
                 "script -qec \"env NO_COLOR=1 " ENV "%s --no-migrate --log-format=text\" "
                 "/dev/null",
                 relay);
        run(cmd, out, sizeof(out));
        CHECK(strstr(out, "ERROR relay") && !strchr(out, '\033'), "NO_COLOR ignored: %s", out);
    } else {
        printf("note: script(1) missing, terminal colour not checked\n");
    }
    printf("PASS log_text_format\n");
    return 0;
}
