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
    /** The data member's JSON text exactly as it is in the document (never
     *  parsed and re-encoded: 0.1, 123456789012345678901234567890 and
     *  "a\u0000b" arrive as written); "null" if the member is absent. */
    char *data;
} outbox_envelope_t;

/** Parses and validates a CloudEvents document: strict JSON (RFC 8259),
 *  data and each attribute it reads at most once, specversion "1.0", id a
 *  UUID, source and type present, no string attribute holding U+0000 or a
 *  lone surrogate (attributes are C strings). One pass of a scanner, no
 *  JSON tree. On error returns OUTBOX_ERR_INVALID_ARG (or OUTBOX_ERR_NOMEM),
 *  errstr says why, and env is left empty. json (len bytes, need not be
 *  NUL-terminated) is borrowed; on success env owns copies (free with
 *  outbox_envelope_term()). Thread-safe. */
outbox_err_t outbox_envelope_parse(const char *json, size_t len, outbox_envelope_t *env,
                                   char *errstr, size_t errstr_size);

/** Frees the strings of env; safe on a zeroed or already-termed struct.
 *  This function can't fail. */
void outbox_envelope_term(outbox_envelope_t *env);

#ifdef __cplusplus
}
#endif
#endif
