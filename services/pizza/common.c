/* Helpers the four pizza programs share: own options, database start-up. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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
    if (end == s || errno || !(v >= 0)) /* NaN ("nan") is not a duration either */
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

#define MAX_QUANTITY 100
#define MAX_PRICE 100000.0

/* 1 when s is 1..max bytes with no control characters. */
static int text_ok(const json_t *s, size_t max)
{
    if (!json_is_string(s) || json_string_length(s) == 0 || json_string_length(s) > max)
        return 0;
    const char *p = json_string_value(s);
    for (size_t i = 0; i < json_string_length(s); i++)
        if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
            return 0;
    return 1;
}

/* A required text member: 0 and *out set, or -1 with why naming it. */
static int check_text(const json_t *doc, const char *name, size_t max, const char **out, char *why,
                      size_t why_size)
{
    json_t *v = json_object_get(doc, name);
    if (!v) {
        snprintf(why, why_size, "%s is required (a non-empty string), e.g. " PIZZA_EXAMPLE, name);
        return -1;
    }
    if (!text_ok(v, max)) {
        snprintf(why, why_size,
                 "%s must be a string of 1 to %zu characters without control characters", name,
                 max);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

static const char *const sizes[] = {"Small", "Medium", "Large", "Extra Large", NULL};

int pizza_order_check(const json_t *doc, pizza_order_t *o, char *why, size_t why_size)
{
    memset(o, 0, sizeof(*o));
    if (check_text(doc, "flavor", 64, &o->flavor, why, why_size))
        return -1;
    json_t *sz = json_object_get(doc, "size");
    for (int i = 0; json_is_string(sz) && sizes[i]; i++)
        if (!strcasecmp(json_string_value(sz), sizes[i]))
            o->size = sizes[i]; /* stored as spelled here */
    if (!o->size) {
        snprintf(why, why_size, "size %s: one of \"Small\", \"Medium\", \"Large\", \"Extra Large\"",
                 sz ? "must be" : "is required");
        return -1;
    }
    json_t *q = json_object_get(doc, "quantity");
    if (!json_is_integer(q) || json_integer_value(q) < 1 || json_integer_value(q) > MAX_QUANTITY) {
        snprintf(why, why_size, "quantity %s an integer from 1 to %d, e.g. 2",
                 q ? "must be" : "is required:", MAX_QUANTITY);
        return -1;
    }
    snprintf(o->quantity, sizeof(o->quantity), "%lld", (long long)json_integer_value(q));
    json_t *pr = json_object_get(doc, "price");
    double v = json_is_number(pr) ? json_number_value(pr) : -1;
    double cents = v * 100.0;
    if (!json_is_number(pr) || !(v > 0) || v > MAX_PRICE || fabs(cents - round(cents)) > 1e-6) {
        snprintf(why, why_size,
                 "price %s a positive number of at most %.0f with at most two decimals, e.g. "
                 "19.99",
                 pr ? "must be" : "is required:", MAX_PRICE);
        return -1;
    }
    snprintf(o->price, sizeof(o->price), "%.2f", round(cents) / 100.0);
    if (check_text(doc, "address", 256, &o->address, why, why_size) ||
        check_text(doc, "user_name", 128, &o->user_name, why, why_size))
        return -1;
    return 0;
}
