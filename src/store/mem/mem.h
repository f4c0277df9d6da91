/*
 * The in-memory store ("mem:NAME"): the store ops on a table kept in this
 * process, shared by every session opened on the same NAME. It drives the
 * engine's own tests without a database (claim, lanes, retries, dead
 * letters, both acknowledgement modes, priority), and its faults break the
 * engine at the store boundary on cue.
 *
 * Transactions: a session's acknowledgements, retries and dead letters are
 * applied at commit; rollback (or a session closed mid-batch) only releases
 * the rows it claimed, as a database would.
 */
#ifndef OUTBOX_STORE_MEM_H
#define OUTBOX_STORE_MEM_H

#include <stddef.h>
#include <stdint.h>

#include "outbox/outbox.h"

/** Faults, each armed for the next `count` occurrences. */
typedef enum {
    OUTBOX_MEM_FAIL_CLAIM,          /**< claim fails (the session is lost) */
    OUTBOX_MEM_FAIL_ACK,            /**< acknowledging fails after the publish */
    OUTBOX_MEM_FAIL_COMMIT,         /**< COMMIT fails: nothing applied */
    OUTBOX_MEM_FAIL_COMMIT_APPLIED, /**< COMMIT applied, but its answer is lost (outcome unknown) */
    OUTBOX_MEM_FAULT__COUNT
} outbox_mem_fault_t;

/** Appends ev to the table NAME (created on first use). The id is made when NULL. */
outbox_err_t outbox__mem_enqueue(const char *name, const outbox_event_t *ev, char *id_out);
void outbox__mem_fault(const char *name, outbox_mem_fault_t fault, int count);

typedef struct outbox_mem_counts_s {
    long long pending, processed, dead, parked, claimed_now;
    long long max_attempts_seen; /**< highest attempts among pending rows */
} outbox_mem_counts_t;
void outbox__mem_counts(const char *name, outbox_mem_counts_t *out);

/** Attempts recorded for event id (pending or dead), or -1 if unknown/acked. */
int outbox__mem_attempts(const char *name, const char *id);

/** Drops the table NAME and everything in it (no session may be open on it). */
void outbox__mem_drop(const char *name);

#endif
