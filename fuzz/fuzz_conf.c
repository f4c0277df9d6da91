/*
 * src/core/conf.c: configuration values from outside (environment,
 * flags, outbox_conf_set), every property of the table.
 *
 * Input: lines. "name=value" sets a property (outbox_conf_set); a line
 * starting with '-' is a command-line argument (outbox__conf_parse_args
 * over all of them at the end). Then the typed getter of every property
 * set runs: what was accepted is in range and reads back as set; the
 * database conninfo built from the DB_* values means the same to libpq;
 * the dump shows no secret.
 */
#include <ctype.h>
#include <libpq-fe.h>
#include <string.h>

#include "core/conf.h"
#include "fuzz_common.h"

#define MAX_ARGS 32

/* The conninfo built from db_* (database_url empty) must give libpq the
 * values as set. */
static void check_conninfo(const outbox_conf_t *conf)
{
    if (outbox__conf_str(conf, "database_url")[0])
        return;
    const char *ci = outbox__conf_database_url(conf);
    if (strlen(ci) >= 2000)
        return; /* cut at the buffer's end: not comparable */
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(ci, &err);
    FUZZ_CHECK(opts, "libpq cannot parse the conninfo built: %s", err ? err : "?");
    static const char *const map[][2] = {{"host", "db_host"},
                                         {"port", "db_port"},
                                         {"user", "db_user"},
                                         {"password", "db_password"},
                                         {"dbname", "db_name"}};
    for (PQconninfoOption *o = opts; o->keyword; o++)
        for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
            if (!strcmp(o->keyword, map[i][0])) {
                const char *want = outbox_conf_get(conf, map[i][1]);
                FUZZ_CHECK(o->val && !strcmp(o->val, want), "%s reads as \"%s\", set \"%s\"",
                           map[i][0], o->val ? o->val : "(null)", want);
            }
    PQconninfoFree(opts);
    PQfreemem(err);
}

/* The getters of property name (as set: any case, '-' or '_'), and the
 * dump line of a secret. */
static void check_prop(const outbox_conf_t *conf, const char *name, const char *dump)
{
    int n;
    const outbox_conf_prop_t *props = outbox__conf_props(&n), *p = NULL;
    char norm[64];
    size_t i;
    for (i = 0; i < sizeof(norm) - 1 && name[i]; i++)
        norm[i] = name[i] == '-' ? '_' : (char)tolower((unsigned char)name[i]);
    norm[i] = '\0';
    for (int k = 0; k < n && !p; k++)
        if (!strcmp(props[k].name, norm))
            p = &props[k];
    FUZZ_CHECK(p, "%s was set but is not a property", name);
    const char *v = outbox_conf_get(conf, p->name);
    FUZZ_CHECK(v, "%s has no value", p->name);
    switch (p->type) {
    case OUTBOX_CT_INT: {
        int64_t x = outbox__conf_int(conf, p->name);
        FUZZ_CHECK(x >= p->min && x <= p->max, "%s = %lld", p->name, (long long)x);
        break;
    }
    case OUTBOX_CT_DURATION: {
        int64_t x = outbox__conf_ms(conf, p->name);
        FUZZ_CHECK(x >= p->min && x <= p->max, "%s = %lldms from \"%s\"", p->name, (long long)x, v);
        break;
    }
    case OUTBOX_CT_BOOL: {
        int b = outbox__conf_bool(conf, p->name);
        FUZZ_CHECK(b == 0 || b == 1, "%s = %d", p->name, b);
        break;
    }
    case OUTBOX_CT_ENUM:
    case OUTBOX_CT_STR:
        FUZZ_CHECK(outbox__conf_str(conf, p->name) == v, "two values for %s", p->name);
        break;
    }
    if (p->secret == 1) {
        /* its dump line is name=**** (or name= when empty) */
        char line[128];
        snprintf(line, sizeof(line), "%s=%s", p->name, v[0] ? "****" : "");
        size_t ll = strlen(line);
        const char *at = strstr(dump, line);
        while (at && !((at == dump || at[-1] == '\n') && (at[ll] == '\n' || !at[ll])))
            at = strstr(at + 1, line);
        FUZZ_CHECK(at, "secret %s is not redacted in the dump", p->name);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    outbox_conf_t *conf = outbox_conf_new();
    FUZZ_CHECK(conf, "out of memory");
    char *text = fuzz_str(data, size);
    char *argv[MAX_ARGS + 2] = {"fuzz"}, *set[MAX_ARGS];
    int argc = 1, nset = 0;
    char err[1024];
    for (char *line = text, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (line[0] == '-') {
            if (argc <= MAX_ARGS)
                argv[argc++] = line;
            continue;
        }
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = '\0';
        if (outbox_conf_set(conf, line, eq + 1, err, sizeof(err)) == OUTBOX_OK) {
            FUZZ_CHECK(!strcmp(outbox_conf_get(conf, line), eq + 1), "%s does not read back", line);
            if (nset < MAX_ARGS)
                set[nset++] = line;
        } else {
            FUZZ_CHECK(err[0], "refused without a reason");
        }
    }
    argv[argc] = NULL;
    int argi = 0, help = 0;
    if (outbox__conf_parse_args(conf, argc, argv, &argi, &help, err, sizeof(err)) == OUTBOX_OK)
        FUZZ_CHECK(argi >= 1 && argi <= argc, "argi %d of %d", argi, argc);
    char *dump = outbox_conf_dump(conf);
    FUZZ_CHECK(dump, "no dump");
    for (int i = 0; i < nset; i++)
        check_prop(conf, set[i], dump);
    free(dump);
    check_conninfo(conf);
    outbox_conf_t *copy = outbox_conf_dup(conf);
    FUZZ_CHECK(copy, "out of memory");
    char *a = outbox_conf_dump(conf), *b = outbox_conf_dump(copy);
    FUZZ_CHECK(a && b && !strcmp(a, b), "the copy differs");
    free(a);
    free(b);
    outbox_conf_destroy(copy);
    outbox_conf_destroy(conf);
    free(text);
    return 0;
}
