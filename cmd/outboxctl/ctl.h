/* outboxctl subcommands: each takes an open store session and its args.
 * outboxctl reaches the database only through the store (store/store.h). */
#ifndef OUTBOXCTL_CTL_H
#define OUTBOXCTL_CTL_H

#include <stdio.h>

#include "outbox/outbox.h"
#include "store/store.h"

/* Exit codes: 0 ok, 1 operation failed, 2 usage error, 3 not found. */
int ctl_migrate(outbox_store_t *s, const outbox_conf_t *conf, int argc, char **argv);
int ctl_status(outbox_store_t *s, const outbox_conf_t *conf, int argc, char **argv);
int ctl_dlq(outbox_store_t *s, const outbox_conf_t *conf, int argc, char **argv);
/* One status snapshot on out (status.c); 0 or an exit code. */
int ctl_status_once(outbox_store_t *s, int json, FILE *out);
/* status --watch (watch.c): snapshots every interval_ms, count of them (0: until q/Ctrl-C). */
int ctl_watch(outbox_store_t *s, int json, int64_t interval_ms, long count);
/* Follows the events of a topic (tail.c). */
int ctl_tail(outbox_store_t *s, const outbox_conf_t *conf, int argc, char **argv);
/* Dead letters of consumer groups (outbox_consumer_dead_letter); see consumer_dlq.c. */
int ctl_consumer_dlq(outbox_store_t *s, const outbox_conf_t *conf, int argc, char **argv);
/* Re-publishes already delivered events (same ids); see replay.c. */
int ctl_replay(outbox_store_t *s, const outbox_conf_t *conf, int argc, char **argv);

/* The command table (main.c): usage texts for --help and the man page. fn
 * is NULL for commands that need no database. */
typedef struct ctl_cmd_s {
    const char *name;
    int (*fn)(outbox_store_t *, const outbox_conf_t *, int, char **);
    const char *args;  /* the argument synopsis */
    const char *usage; /* what it does, options */
} ctl_cmd_t;
extern const ctl_cmd_t ctl_cmds[];
extern const size_t ctl_ncmds;

/* outboxctl man relay|outboxctl: the man page as roff on fp (man.c). */
int ctl_man(const char *page, FILE *fp);

/* Prints "outboxctl: what: err" for a failed store op and returns 1 (3 for
 * OUTBOX_ERR_NOT_FOUND, 2 for an op this store does not have). */
int ctl_fail(outbox_err_t e, const char *what, const char *err);

#endif
