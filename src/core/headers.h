/* An event's own headers (the outbox "headers" column: a JSON object) as
 * name/value pairs for the sinks that carry headers (AMQP, Kafka, NATS).
 *
 * One rule for every sink: a member whose value is a JSON string is sent as
 * that string (unescaped); any other value (number, true, false, null,
 * object, array) is sent as its compact JSON text, exactly as written
 * (numbers are never converted: 1.50 stays "1.50", a 30-digit integer keeps
 * its digits; only whitespace outside strings is dropped). */
#ifndef OUTBOX_CORE_HEADERS_H
#define OUTBOX_CORE_HEADERS_H

#include <stddef.h>

#include "outbox/outbox.h"

/**
 * Called once per header, in the order of the JSON text. name and value
 * are NUL-terminated and valid only during the call (copy what you keep);
 * len is value's length in bytes, which may hold NUL bytes (a string with
 * \u0000): check strlen(value) == len where a C string is needed. Return
 * OUTBOX_OK to go on; anything else stops the walk and is returned.
 */
typedef outbox_err_t (*outbox__header_fn)(void *opaque, const char *name, const char *value,
                                          size_t len);

/**
 * Calls fn for every member of the JSON object headers_json. NULL or empty
 * text means no headers (OUTBOX_OK). A member whose name holds a NUL byte is
 * skipped (it cannot be a header name), and so is one whose name or string
 * value escapes a lone surrogate ("\ud800": valid JSON, but no UTF-8 text). Returns OUTBOX_OK when
 * every header was visited, OUTBOX_ERR_INVALID_ARG (before any call) when the text is not a JSON
 * object, OUTBOX_ERR_NOMEM, or the first value fn returned that was not OUTBOX_OK.
 */
outbox_err_t outbox__headers_each(const char *headers_json, outbox__header_fn fn, void *opaque);

#endif
