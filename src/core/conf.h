/* The configuration table: one row per property (name, type, default, env
 * var, range, secret flag, doc). The same table drives outbox_conf_set,
 * environment overrides, command-line flags, --help, log redaction and
 * docs/CONFIGURATION.md (outboxctl config-doc). */
#ifndef OUTBOX_CORE_CONF_H
#define OUTBOX_CORE_CONF_H

#include <stdint.h>
#include <stdio.h>

#include "outbox/outbox.h"

typedef enum {
    OUTBOX_CT_STR,
    OUTBOX_CT_INT,
    OUTBOX_CT_BOOL,
    OUTBOX_CT_DURATION,
    OUTBOX_CT_ENUM
} outbox_conf_type_t;

/* Scopes: which programs a property concerns (for --help). */
#define OUTBOX_SCOPE_DB 0x01      /* anything that connects to the database */
#define OUTBOX_SCOPE_RELAY 0x02   /* relay engine */
#define OUTBOX_SCOPE_SINK 0x04    /* sink options */
#define OUTBOX_SCOPE_HTTP 0x08    /* services' HTTP layer */
#define OUTBOX_SCOPE_SERVICE 0x10 /* business services and consumers */
#define OUTBOX_SCOPE_LOG 0x20
#define OUTBOX_SCOPE_ALL 0xff

typedef struct outbox_conf_prop_s {
    const char *name; /* "workers"; flag --workers */
    outbox_conf_type_t type;
    const char *def;       /* default as text ("" = unset) */
    const char *env;       /* environment variable, or NULL */
    int64_t min, max;      /* INT: value range; DURATION: milliseconds */
    int secret;            /* never printed or logged */
    const char *enum_vals; /* ENUM: "a|b|c" */
    unsigned scope;
    const char *doc; /* one line */
} outbox_conf_prop_t;

/** The table and its length. */
const outbox_conf_prop_t *outbox__conf_props(int *n);

/* Typed getters; the value was validated when set, so they can't fail.
 * Calling one with an unknown name or wrong type aborts (a programming error). */
const char *outbox__conf_str(const outbox_conf_t *conf, const char *name);
int64_t outbox__conf_int(const outbox_conf_t *conf, const char *name);
int outbox__conf_bool(const outbox_conf_t *conf, const char *name);
int64_t outbox__conf_ms(const outbox_conf_t *conf, const char *name);

/** 1 if name was set by the user (environment, flag or outbox_conf_set),
 *  0 if it still has its default. */
int outbox__conf_is_set(const outbox_conf_t *conf, const char *name);

/**
 * Parses argv: --name value, --name=value, --no-name for booleans (names
 * with '-' or '_'). Stops at the first non-flag argument or "--" and stores
 * its index in *argi. "--help"/"-h" sets *help=1. Unknown flags are errors.
 */
outbox_err_t outbox__conf_parse_args(outbox_conf_t *conf, int argc, char **argv, int *argi,
                                     int *help, char *errstr, size_t errstr_size);

/**
 * The start of a program's main(): defaults, then the environment, then
 * argv, then the log settings. Returns the configuration, or NULL with
 * *exit_code set: 0 after printing usage for --help, 2 after printing
 * "prog: reason" to stderr for bad input. If argi is NULL a positional
 * argument is an error; otherwise *argi gets the index of the first one.
 */
outbox_conf_t *outbox__conf_load(const char *prog, int argc, char **argv, void (*usage)(FILE *fp),
                                 int *argi, int *exit_code);

/** Prints the properties of the given scopes as --help text. */
void outbox__conf_print_help(FILE *fp, unsigned scopes);
/** Prints the table as a Markdown reference (docs/CONFIGURATION.md). */
void outbox__conf_print_markdown(FILE *fp);
/** Logs the effective configuration once (secrets and URL passwords redacted). */
void outbox__conf_log(const outbox_conf_t *conf, const char *component, unsigned scopes);

/** The database conninfo: database_url, else built from DB_HOST/DB_PORT/
 *  DB_USER/DB_PASSWORD/DB_NAME (seed defaults). Static per conf. */
const char *outbox__conf_database_url(const outbox_conf_t *conf);

#endif
