/* Helpers the four pizza programs share: own options, database start-up. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pizza.h"

int pizza_opts_take(pizza_opt_t *opts, int n, int *argc, char **argv, char *errstr,
                    size_t errstr_size)
{
    for (int i = 0; i < n; i++) {
        const char *e = getenv(opts[i].env);
        opts[i].value = e && *e ? e : opts[i].def;
    }
    int out = 1;
    for (int a = 1; a < *argc; a++) {
        int used = 0;
        if (!strcmp(argv[a], "--")) {
            while (a < *argc)
                argv[out++] = argv[a++];
            break;
        }
        for (int i = 0; i < n && !used; i++) {
            size_t l = strlen(opts[i].name);
            const char *arg = argv[a];
            if (strncmp(arg, "--", 2) || strncmp(arg + 2, opts[i].name, l))
                continue;
            if (arg[2 + l] == '=') {
                opts[i].value = arg + 3 + l;
                used = 1;
            } else if (arg[2 + l] == '\0') {
                if (a + 1 >= *argc) {
                    snprintf(errstr, errstr_size, "--%s needs a value", opts[i].name);
                    return -1;
                }
                opts[i].value = argv[++a];
                used = 1;
            }
        }
        if (!used)
            argv[out++] = argv[a];
    }
    *argc = out;
    argv[out] = NULL;
    return 0;
}

void pizza_opts_help(FILE *fp, const pizza_opt_t *opts, int n)
{
    for (int i = 0; i < n; i++) {
        char flag[64];
        snprintf(flag, sizeof(flag), "--%s", opts[i].name);
        fprintf(fp, "  %-26s %s\n  %-26s [env %s; default \"%s\"]\n", flag, opts[i].help, "",
                opts[i].env, opts[i].def);
    }
}

int pizza_parse_ms(const char *s, int64_t *ms)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || v < 0)
        return -1;
    double mul = 1;
    if (!strcmp(end, "") || !strcmp(end, "ms"))
        mul = 1;
    else if (!strcmp(end, "s"))
        mul = 1000;
    else if (!strcmp(end, "m"))
        mul = 60000;
    else
        return -1;
    if (v * mul > 3600.0 * 1000)
        return -1;
    *ms = (int64_t)(v * mul);
    return 0;
}

int pizza_parse_rate(const char *s, double *v)
{
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    if (end == s || *end || errno || !(d >= 0 && d <= 1))
        return -1;
    *v = d;
    return 0;
}

PGconn *pizza_connect(const outbox_conf_t *conf, const char *component, const char *appname,
                      volatile sig_atomic_t *stop)
{
    char err[512] = "";
    for (int attempt = 0; attempt < 30 && !*stop; attempt++) {
        PGconn *c =
            outbox_kit_db_connect(outbox_kit_conf_database_url(conf), appname, err, sizeof(err));
        if (c)
            return c;
        outbox__log(OUTBOX_LOG_WARN, component, "db_wait", err, NULL);
        sleep(1);
    }
    outbox__log(OUTBOX_LOG_ERROR, component, "db_failed", err[0] ? err : "stopped", NULL);
    return NULL;
}

int pizza_migrate(PGconn *c, const char *component)
{
    char err[512];
    if (outbox_migrate_table(c, PIZZA_TABLE, NULL, err, sizeof(err)) ||
        outbox_kit_migrate(c, "pizza", pizza_migrations, NULL, err, sizeof(err))) {
        outbox__log(OUTBOX_LOG_ERROR, component, "migrate_failed", err, NULL);
        return -1;
    }
    return 0;
}
