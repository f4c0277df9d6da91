/* Consumer side: parsing the CloudEvents 1.0 document every sink publishes. */
#ifndef OUTBOX_ENVELOPE_H
#define OUTBOX_ENVELOPE_H

#include "outbox/outbox.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A parsed envelope. Strings are owned by the struct; free with _term. */
typedef struct outbox_envelope_s {
    char id[OUTBOX_UUID_STRLEN + 1];
    char *type, *source, *subject, *time, *traceparent, *partitionkey;
    char *data; /**< the data member re-serialised as compact JSON */
} outbox_envelope_t;

/** Parses and validates a CloudEvents document (specversion "1.0"; id,
 *  source, type present; id a UUID). On error env is left empty. */
outbox_err_t outbox_envelope_parse(const char *json, size_t len, outbox_envelope_t *env,
                                   char *errstr, size_t errstr_size);

/** Frees the strings of env; safe on a zeroed or already-termed struct. */
void outbox_envelope_term(outbox_envelope_t *env);

#ifdef __cplusplus
}
#endif
#endif
