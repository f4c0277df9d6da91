/* outboxctl subcommands: each takes an open store session and its args.
 * outboxctl reaches the database only through the store (store/store.h). */
#ifndef OUTBOXCTL_CTL_H
#define OUTBOXCTL_CTL_H

#include "outbox/outbox.h"
#include "store/store.h"

/* Exit codes: 0 ok, 1 operation failed, 2 usage error, 3 not found. */
int ctl_migrate(outbox_store_t *s, const outbox_conf_t *conf, int argc, char **argv);
int ctl_status(outbox_store_t *s, const outbox_conf_t *conf, int argc, char **argv);
int ctl_dlq(outbox_store_t *s, const outbox_conf_t *conf, int argc, char **argv);
/* Dead letters of consumer groups (outbox_consumer_dead_letter); see consumer_dlq.c. */
int ctl_consumer_dlq(outbox_store_t *s, const outbox_conf_t *conf, int argc, char **argv);
/* Re-publishes already delivered events (same ids); see replay.c. */
int ctl_replay(outbox_store_t *s, const outbox_conf_t *conf, int argc, char **argv);

/* Prints "outboxctl: what: err" for a failed store op and returns 1 (3 for
 * OUTBOX_ERR_NOT_FOUND, 2 for an op this store does not have). */
int ctl_fail(outbox_err_t e, const char *what, const char *err);

#endif
