/*
 * HTTP/1.1 message framing (RFC 9112), as the services' HTTP layer reads
 * requests: the request line and header section, and the chunked body
 * decoder. Pure functions over caller-owned bytes: no I/O, no allocation,
 * so that every byte a client can send is checked here (and fuzzed, see
 * fuzz/fuzz_http1.c) before anything else sees it.
 *
 * What is refused, and with which status:
 *   - a request line that is not "METHOD SP target SP HTTP/1.x", including
 *     an HTTP/0.9 line (no version), a bare CR, a control or non-ASCII
 *     byte in the target: 400; a major version other than 1: 505;
 *   - a target longer than OUTBOX_HTTP1_MAX_TARGET: 414;
 *   - a header section longer than OUTBOX_HTTP1_MAX_HEAD bytes or with more
 *     than OUTBOX_HTTP1_MAX_HEADERS fields: 431;
 *   - a field name that is not a token, whitespace before the colon, an
 *     obsolete line folding, or a NUL or other control byte (HTAB aside) in
 *     any field value: 400 (RFC 9110 5.5);
 *   - a Content-Length that is not digits, overflows, or is given twice with
 *     different values; Content-Length together with Transfer-Encoding;
 *     Transfer-Encoding in an HTTP/1.0 request: 400; a transfer coding
 *     other than "chunked" alone: 501;
 *   - an HTTP/1.1 request without Host: 400.
 * A line may end in CR LF or a bare LF (RFC 9112 2.2).
 */
#ifndef OUTBOX_HTTP_HTTP1_H
#define OUTBOX_HTTP_HTTP1_H

#include <stddef.h>
#include <stdint.h>

#define OUTBOX_HTTP1_MAX_HEAD (16 * 1024) /**< request line + header section */
#define OUTBOX_HTTP1_MAX_TARGET 8000      /**< request-target bytes */
#define OUTBOX_HTTP1_MAX_HEADERS 100

typedef struct outbox_http1_field_s {
    const char *name; /**< NUL-terminated in the parsed buffer */
    size_t name_len;
    const char *value; /**< NUL-terminated, surrounding whitespace removed */
    size_t value_len;
} outbox_http1_field_t;

/** A parsed request head. Pointers point into the buffer given to the parser. */
typedef struct outbox_http1_head_s {
    const char *method; /**< NUL-terminated */
    const char *target; /**< NUL-terminated, as sent (not decoded) */
    size_t target_len;
    int minor; /**< HTTP/1.<minor> */
    int nfields;
    outbox_http1_field_t fields[OUTBOX_HTTP1_MAX_HEADERS];
    size_t head_len;        /**< bytes of the head, final empty line included */
    int64_t content_length; /**< -1 when absent */
    int chunked;            /**< Transfer-Encoding: chunked */
    int keep_alive;         /**< the connection may carry another request */
    int expect_continue;    /**< Expect: 100-continue */
} outbox_http1_head_t;

/** Outcome of a parse step. */
typedef enum {
    OUTBOX_HTTP1_ERROR = -1, /**< refused: *status and *why say why */
    OUTBOX_HTTP1_MORE = 0,   /**< incomplete: read more bytes and call again */
    OUTBOX_HTTP1_DONE = 1    /**< complete */
} outbox_http1_rc_t;

/**
 * Parses the request head at the start of buf[0..len). On DONE fills *head
 * and writes NUL bytes into buf (after the method, the target, each field
 * name and value): buf must stay alive and unchanged while head is used.
 * Empty lines before the request line are skipped (RFC 9112 2.2). On ERROR
 * sets *status (400, 414, 431, 501 or 505) and *why (a static sentence for
 * the problem detail). MORE when buf holds no complete head yet and is
 * still within the limits.
 */
outbox_http1_rc_t outbox__http1_parse_head(char *buf, size_t len, outbox_http1_head_t *head,
                                           unsigned *status, const char **why);

/** Value of field name (case-insensitive) in head, or NULL. The first one
 *  wins when a field is repeated; *len (may be NULL) gets its length. */
const char *outbox__http1_field(const outbox_http1_head_t *head, const char *name, size_t *len);

/** State of a chunked body being decoded; zero it before the first call. */
typedef struct outbox_http1_chunked_s {
    int state;
    uint64_t remaining; /**< bytes left in the current chunk */
    size_t line_len;    /**< bytes of the current size / extension / trailer line */
    size_t trailer_len; /**< bytes of trailer section so far */
    int digits;
} outbox_http1_chunked_t;

/**
 * Decodes chunked framing in place: consumes in[0..*in_len), appends the
 * data bytes to out (out may be in itself: the data never moves forward)
 * and sets *out_len to how many were appended and *in_len to how many input
 * bytes were consumed. DONE when the last chunk and its trailer section have
 * been read (bytes after them belong to the next request), MORE when more
 * input is needed, ERROR (400, *why set) on a bad chunk size, extension,
 * line ending or trailer field. Trailer fields are checked and discarded.
 */
outbox_http1_rc_t outbox__http1_chunked(outbox_http1_chunked_t *c, const char *in, size_t *in_len,
                                        char *out, size_t *out_len, const char **why);

/**
 * Percent-decodes src[0..len) into dst (dst_size bytes, NUL-terminated).
 * Returns the decoded length, or -1 for a malformed escape, a decoded NUL
 * or control byte, or a result that does not fit. plus_space: '+' decodes
 * to ' ' (query strings).
 */
long outbox__http1_unescape(const char *src, size_t len, char *dst, size_t dst_size,
                            int plus_space);

#endif
