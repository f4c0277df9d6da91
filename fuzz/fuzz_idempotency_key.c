/*
 * src/http/idempotency.c: the Idempotency-Key header value as a client
 * sent it (any bytes, NUL and control bytes included; the length is
 * given, the value is not NUL-terminated), and the request fingerprint.
 *
 * An accepted key is 1..255 printable ASCII characters; a bare token is
 * kept as sent; a quoted one (Structured Field string) reads back the same
 * when written quoted again. A refused one says why.
 */
#include <string.h>

#include "fuzz_common.h"
#include "http/idempotency.h"

static void check_key(const char *v, size_t len)
{
    char key[OUTBOX_IDEM_KEY_MAX + 1], why[256] = "";
    memset(key, 0x55, sizeof(key));
    if (outbox__idem_key_parse(v, len, key, why, sizeof(why)) != 0) {
        FUZZ_CHECK(why[0], "refused without a reason");
        return;
    }
    size_t n = strnlen(key, sizeof(key));
    FUZZ_CHECK(n >= 1 && n <= OUTBOX_IDEM_KEY_MAX, "key of %zu characters", n);
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(key[i] >= 0x20 && key[i] <= 0x7e, "byte 0x%02x in the key",
                   (unsigned char)key[i]);
    FUZZ_CHECK(memchr(v, '\0', len) == NULL, "a value with a NUL byte was accepted");
    if (v[0] != '"') {
        FUZZ_CHECK(n == len && !memcmp(key, v, n), "a bare key was changed");
        return;
    }
    /* written quoted again, it reads back the same */
    char q[2 * OUTBOX_IDEM_KEY_MAX + 3], again[OUTBOX_IDEM_KEY_MAX + 1];
    size_t k = 0;
    q[k++] = '"';
    for (size_t i = 0; i < n; i++) {
        if (key[i] == '"' || key[i] == '\\')
            q[k++] = '\\';
        q[k++] = key[i];
    }
    q[k++] = '"';
    FUZZ_CHECK(outbox__idem_key_parse(q, k, again, why, sizeof(why)) == 0 && !strcmp(again, key),
               "quoted key \"%s\" does not read back", key);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* exactly size bytes on the heap: ASan sees any read past the value */
    char *v = malloc(size ? size : 1);
    FUZZ_CHECK(v, "out of memory");
    memcpy(v, data, size);
    check_key(v, size);
    char fp[65];
    outbox__idem_fingerprint("POST", "/orders", v, size, fp);
    FUZZ_CHECK(strlen(fp) == 64 && strspn(fp, "0123456789abcdef") == 64, "fingerprint %s", fp);
    free(v);
    return 0;
}
