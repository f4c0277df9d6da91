/* Store registry: picks the back end that serves a URL. */
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

extern const outbox_store_ops_t outbox__store_pg_ops;
extern const outbox_store_ops_t outbox__store_mem_ops;

/* Most specific first: PostgreSQL takes any conninfo, so it comes last. */
static const outbox_store_ops_t *const backends[] = {&outbox__store_mem_ops, &outbox__store_pg_ops,
                                                     NULL};

static const outbox_store_ops_t *find(const char *url)
{
    for (const outbox_store_ops_t *const *b = backends; *b; b++)
        if ((*b)->handles(url ? url : ""))
            return *b;
    return NULL;
}

int outbox__store_supported(const char *url)
{
    return find(url) != NULL;
}

int outbox__store_watchable(const char *url)
{
    const outbox_store_ops_t *ops = find(url);
    return ops && ops->newest_due;
}

int outbox__store_table_valid(const char *name)
{
    static const char *const taken[] = {"outbox_inbox", "outbox_schema_migrations",
                                        "outbox_http_idempotency", NULL};
    if (!name || !*name || strlen(name) > 48 || (name[0] >= '0' && name[0] <= '9') ||
        !strncmp(name, "pg_", 3))
        return 0;
    size_t n = strlen(name), dl = strlen("_dead_letter");
    if (n >= dl && !strcmp(name + n - dl, "_dead_letter"))
        return 0; /* the dead letters of another table */
    for (const char *const *t = taken; *t; t++)
        if (!strcmp(name, *t))
            return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return 0;
    return 1;
}

outbox_store_t *outbox__store_open(const outbox_store_cfg_t *cfg, char *errstr, size_t errstr_size)
{
    const outbox_store_ops_t *ops = find(cfg->url);
    if (!ops) {
        outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                    "no store serves database URL \"%.16s...\"", cfg->url ? cfg->url : "");
        return NULL;
    }
    const char *table = cfg->table && *cfg->table ? cfg->table : "outbox";
    if (!outbox__store_table_valid(table)) {
        outbox__err(
            OUTBOX_ERR_CONFIG, errstr, errstr_size,
            "outbox table \"%.60s\": use lower-case letters, digits and _ (at most 48 bytes)",
            table);
        return NULL;
    }
    outbox_store_t *s = calloc(1, sizeof(*s));
    if (!s) {
        outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
        return NULL;
    }
    s->ops = ops;
    s->cfg = *cfg;
    s->cfg.url = strdup(cfg->url);
    s->cfg.table = strdup(table);
    s->cfg.appname = strdup(cfg->appname && *cfg->appname ? cfg->appname : "outbox");
    if (!s->cfg.url || !s->cfg.table || !s->cfg.appname) {
        outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
        outbox__store_close(s);
        return NULL;
    }
    if (ops->open(s, errstr, errstr_size) != OUTBOX_OK) {
        s->ops = NULL; /* nothing to close */
        outbox__store_close(s);
        return NULL;
    }
    return s;
}

void outbox__store_close(outbox_store_t *s)
{
    if (!s)
        return;
    if (s->ops && s->ops->close)
        s->ops->close(s);
    free((char *)s->cfg.url);
    free((char *)s->cfg.table);
    free((char *)s->cfg.appname);
    free(s);
}
