/* A strict RFC 8259 JSON scanner that never converts anything: it checks
 * text, finds the byte span of a value and drops insignificant whitespace.
 * Numbers of any size and precision, and strings with \u0000, are valid.
 * It exists so that event data reaches the broker as the producer wrote it
 * (DESIGN.md, "Payloads are carried faithfully"); parse with jansson only
 * what is ours to read (envelope attributes, HTTP bodies). */
#ifndef OUTBOX_CORE_JSON_H
#define OUTBOX_CORE_JSON_H

#include <stddef.h>

#include "core/buf.h"

/** Where and why a text is not JSON. what is a static string. */
typedef struct outbox__json_error_s {
    size_t offset; /**< byte offset of the offending byte (len if the text ended early) */
    const char *what;
} outbox__json_error_t;

/** Returns 0 if s[0..len) is exactly one JSON value, optionally surrounded by
 *  whitespace (UTF-8, no BOM); -1 otherwise, with err (if not NULL) filled.
 *  Nesting depth is limited only by memory. This function does not
 *  allocate unless values nest deeper than 512 levels. */
int outbox__json_check(const char *s, size_t len, outbox__json_error_t *err);

/**
 * Finds the member called name (compared after unescaping the member's key)
 * in the top-level object of s, and checks the whole text as
 * outbox__json_check does. Returns 1 and sets *off and *vlen to the byte span
 * of its value (no surrounding whitespace) if found, 0 if the object has no
 * such member, -1 if s is not valid JSON, not an object, or has the member
 * more than once (err says which).
 */
int outbox__json_find_member(const char *s, size_t len, const char *name, size_t *off, size_t *vlen,
                             outbox__json_error_t *err);

/** A value's byte span in a text; len 0: not there. */
typedef struct outbox__json_span_s {
    size_t off, len;
} outbox__json_span_t;

/**
 * outbox__json_find_member for up to 16 names in one pass: spans[k] gets the
 * span of names[k]'s value (len 0 if the object has no such member). Returns
 * how many were found, or -1 (err says why) if s is not valid JSON, not an
 * object, or has one of the names more than once. Does not allocate.
 */
int outbox__json_find_members(const char *s, size_t len, const char *const *names, size_t n,
                              outbox__json_span_t *spans, outbox__json_error_t *err);

/**
 * Unescapes the string literal lit[0..len) (quotes included, valid as the
 * scanner checks it) into a new NUL-terminated string in *out (free() it).
 * Returns 0; -1 if lit is not a string literal or its text holds U+0000 or a
 * lone surrogate (no C string of UTF-8 can carry it); -2 when out of memory.
 */
int outbox__json_string_dup(const char *lit, size_t len, char **out);

/** Returns 1 if s[0..len) is well-formed UTF-8 (RFC 3629: no overlong
 *  forms, no surrogates, nothing above U+10FFFF), else 0. */
int outbox__json_utf8_valid(const char *s, size_t len);

/** Copies the valid JSON text s[0..len) to out without whitespace outside
 *  strings; everything else is kept byte for byte. out must hold len bytes
 *  (it is not NUL-terminated). Returns the number of bytes written. */
size_t outbox__json_compact(const char *s, size_t len, char *out);

/**
 * Appends s[0..len) to b as the inside of a JSON string (no quotes), escaped
 * as jansson writes it: '"' and '\\' with a backslash, \b \f \n \r \t, other
 * control characters (NUL included) as \u00XX; '/' and non-ASCII text are
 * kept. Ill-formed UTF-8: with lenient, each offending byte becomes \ufffd
 * (the replacement character) and 0 is returned; without, nothing is appended
 * and -1 is returned. Allocation failures leave b broken (see core/buf.h).
 */
int outbox__json_put_escaped(outbox__buf_t *b, const char *s, size_t len, int lenient);

#endif
