/* outboxctl subcommands: each takes the connected session and its args. */
#ifndef OUTBOXCTL_CTL_H
#define OUTBOXCTL_CTL_H

#include <libpq-fe.h>

#include "outbox/outbox.h"

/* Exit codes: 0 ok, 1 operation failed, 2 usage error, 3 not found. */
int ctl_migrate(PGconn *c, const outbox_conf_t *conf, int argc, char **argv);
int ctl_status(PGconn *c, const outbox_conf_t *conf, int argc, char **argv);
int ctl_dlq(PGconn *c, const outbox_conf_t *conf, int argc, char **argv);
/* Re-publishes already delivered events (same ids); see replay.c. */
int ctl_replay(PGconn *c, const outbox_conf_t *conf, int argc, char **argv);

/* Prints a failed result's server message as "outboxctl: what: message". */
int ctl_db_fail(PGconn *c, PGresult *r, const char *what);

#endif
