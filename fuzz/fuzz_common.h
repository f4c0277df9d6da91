/* Helpers the fuzz targets share (fuzz/README.md). */
#ifndef OUTBOX_FUZZ_COMMON_H
#define OUTBOX_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "outbox/consumer.h"

/* The libFuzzer entry points: every target defines the first one;
 * fuzz_common.c defines the second. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Where FUZZ_CHECK reports: stderr as it was at start-up, before
 * libFuzzer's -close_fd_mask=2 silenced the library's log lines. */
extern FILE *fuzz_report;

/* A property every input must keep; a violation aborts, which libFuzzer
 * reports as a crash (and saves the input). */
#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            FILE *fp_ = fuzz_report ? fuzz_report : stderr;                                        \
            fprintf(fp_, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);                  \
            fprintf(fp_, __VA_ARGS__);                                                             \
            fputc('\n', fp_);                                                                      \
            fflush(fp_);                                                                           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/** data[0..size) as a malloc'd NUL-terminated string (it may hold NULs
 *  before the end). Never NULL (aborts on ENOMEM). */
char *fuzz_str(const uint8_t *data, size_t size);

/** Reads data line by line ('\n'; a '\r' before it is kept). */
typedef struct fuzz_lines_s {
    const char *p, *end;
} fuzz_lines_t;

void fuzz_lines_init(fuzz_lines_t *r, const uint8_t *data, size_t size);
/** The next line (without its '\n') in *line / *len: 1, or 0 at the end. */
int fuzz_line(fuzz_lines_t *r, const char **line, size_t *len);
/** What is left after the lines read so far. */
const char *fuzz_rest(const fuzz_lines_t *r, size_t *len);

/** A consumer whose broker is never contacted (a Redis URL: it connects
 *  lazily) and without a database (no dead-letter table), topic "orders":
 *  enough for outbox__consumer_dispatch(). Free with
 *  outbox_consumer_destroy(). */
outbox_consumer_t *fuzz_consumer_new(void);

/** A consumer handler that checks what every delivery guarantees (a UUID
 *  id, type and source, data that is one JSON value, the body as
 *  received) and answers from the data's last byte: mostly OUTBOX_OK,
 *  sometimes a failure, so the retry and dead-letter paths run too. */
outbox_err_t fuzz_handler(const outbox_delivery_t *d, void *opaque);

/** Number of fuzz_handler calls (reset it per input as needed). */
extern unsigned fuzz_handled;

#endif
