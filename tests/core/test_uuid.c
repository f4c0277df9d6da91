/* UUID v7: format, version/variant bits, time order, uniqueness. */
#include <stdint.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "outbox/outbox.h"
#include "testutil.h"

#define N 100000

static int cmp(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

int main(void)
{
    static char ids[N][OUTBOX_UUID_STRLEN + 1];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    uint64_t before = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
    for (int i = 0; i < N; i++) {
        outbox_uuid_v7(ids[i]);
        CHECK(outbox_uuid_valid(ids[i]), "generated id %s is not a valid UUID", ids[i]);
        CHECK(strlen(ids[i]) == 36, "length %zu", strlen(ids[i]));
        CHECK(ids[i][14] == '7', "version nibble of %s is not 7", ids[i]);
        CHECK(strchr("89ab", ids[i][19]) != NULL, "variant of %s is not RFC 9562", ids[i]);
        if (i)
            CHECK(strcmp(ids[i - 1], ids[i]) < 0, "not strictly increasing: %s then %s", ids[i - 1],
                  ids[i]);
    }
    /* The first 48 bits are the Unix time in milliseconds. */
    char hex[13];
    memcpy(hex, ids[0], 8);
    memcpy(hex + 8, ids[0] + 9, 4);
    hex[12] = '\0';
    uint64_t ms = strtoull(hex, NULL, 16);
    CHECK(ms + 5 >= before && ms <= before + 5000, "timestamp %llu far from now %llu",
          (unsigned long long)ms, (unsigned long long)before);

    qsort(ids, N, sizeof(ids[0]), cmp);
    for (int i = 1; i < N; i++)
        CHECK(strcmp(ids[i - 1], ids[i]) != 0, "duplicate id %s", ids[i]);

    /* A forked child does not hand out the random bytes its parent will
     * (they come from a per-thread pool, filled before the fork). */
    for (int round = 0; round < 3; round++) {
        char mine[OUTBOX_UUID_STRLEN + 1], theirs[OUTBOX_UUID_STRLEN + 1] = {0};
        outbox_uuid_v7(mine); /* the pool is filled */
        int fds[2];
        CHECK(pipe(fds) == 0, "pipe");
        pid_t pid = fork();
        CHECK(pid >= 0, "fork");
        if (pid == 0) {
            char id[OUTBOX_UUID_STRLEN + 1];
            outbox_uuid_v7(id);
            _exit(write(fds[1], id, sizeof(id)) == (ssize_t)sizeof(id) ? 0 : 1);
        }
        close(fds[1]);
        CHECK(read(fds[0], theirs, sizeof(theirs)) == (ssize_t)sizeof(theirs),
              "read the child's id");
        close(fds[0]);
        int status = 0;
        waitpid(pid, &status, 0);
        outbox_uuid_v7(mine);
        CHECK(strcmp(mine + 24, theirs + 24) != 0,
              "parent and forked child drew the same random bits: %s and %s", mine, theirs);
    }

    /* Validation. */
    CHECK(outbox_uuid_valid("0190b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b"), "canonical rejected");
    CHECK(outbox_uuid_valid("0190B3C4-5D6E-7F80-9A1B-2C3D4E5F6A7B"), "upper case rejected");
    CHECK(!outbox_uuid_valid(NULL), "NULL accepted");
    CHECK(!outbox_uuid_valid(""), "empty accepted");
    CHECK(!outbox_uuid_valid("0190b3c45d6e7f809a1b2c3d4e5f6a7b"), "no dashes accepted");
    CHECK(!outbox_uuid_valid("0190b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7"), "short accepted");
    CHECK(!outbox_uuid_valid("0190b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b0"), "long accepted");
    CHECK(!outbox_uuid_valid("0190b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7g"), "non-hex accepted");
    printf("PASS unit_uuid: %d ids valid, v7, strictly increasing, unique\n", N);
    return 0;
}
