/* transactions-service adapters: the ledger store on PostgreSQL + the
 * outbox + the inbox (tx_pg.c), and the broker consumers that feed the
 * use cases (tx_consumers.c). */
#ifndef TX_ADAPTER_H
#define TX_ADAPTER_H

#include "kit/kit.h"
#include "port/tx_port.h"

#define TX_IDEM_SCOPE "transactions"

/* The store on a pool (API threads) or on one session of its own (a
 * consumer thread: pool NULL, conninfo set; reconnects when needed). */
typedef struct tx_pg_s {
    outbox_dbpool_t *pool;
    const char *conninfo;
    const char *appname;
    PGconn *conn;
} tx_pg_t;
tx_store_t tx_pg_store(tx_pg_t *pg);
/* Closes a session-mode store's connection. */
void tx_pg_close(tx_pg_t *pg);

/* The consumers: group "accounts" (topic users: UserCreated -> account) and
 * group "ledger" (topic transactions: TransactionCreated -> apply), each
 * consumer_threads threads with their own broker consumer and session. */
typedef struct tx_consumers_s tx_consumers_t;
tx_consumers_t *tx_consumers_start(const outbox_conf_t *conf, char *errstr, size_t errstr_size);
/* Asks the threads to stop, joins them and frees everything. NULL: no-op.
 * A thread still running timeout_ms later (> 0; <= 0 waits for ever) is
 * left: -1, nothing freed, and the caller ends the process. */
int tx_consumers_stop(tx_consumers_t *cs, int64_t timeout_ms);

#endif
