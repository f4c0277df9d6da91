/* A rolled-back transaction publishes nothing, even interleaved with
 * committed ones, and even when the relay is already running. */
#include "relay_common.h"

int main(void)
{
    RELAY_TEST_OPEN("relay_rollback");
    const char *stream = tu_unique("rollback");
    char err[512];

    outbox_relay_t *relay = outbox_relay_new(relay_conf(ci, host, port), err, sizeof(err));
    CHECK(relay && outbox_relay_start(relay, err, sizeof(err)) == OUTBOX_OK, "%s", err);

    char kept[10][OUTBOX_UUID_STRLEN + 1];
    for (int i = 0; i < 20; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%d", i);
        PQclear(tu_exec(c, "BEGIN"));
        outbox_event_t ev = {.topic = stream,
                             .type = i % 2 ? "RolledBack" : "Committed",
                             .key = key,
                             .payload = "{}"};
        char id[OUTBOX_UUID_STRLEN + 1];
        CHECK(outbox_enqueue(c, &ev, id, err, sizeof(err)) == OUTBOX_OK, "%s", err);
        tu_sleep_ms(20); /* the relay is polling meanwhile: uncommitted rows must stay invisible */
        if (i % 2) {
            PQclear(tu_exec(c, "ROLLBACK"));
        } else {
            PQclear(tu_exec(c, "COMMIT"));
            memcpy(kept[i / 2], id, sizeof(id));
        }
    }
    /* A business error after enqueue aborts the transaction: nothing either. */
    PQclear(tu_exec(c, "BEGIN"));
    outbox_event_t ev = {.topic = stream, .type = "AbortedByError", .key = "kx", .payload = "{}"};
    CHECK(outbox_enqueue(c, &ev, NULL, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    PGresult *bad = PQexec(c, "SELECT 1/0");
    CHECK(PQresultStatus(bad) == PGRES_FATAL_ERROR, "division by zero did not fail");
    PQclear(bad);
    PQclear(tu_exec(c, "ROLLBACK"));

    wait_drained(c, 20000);
    tu_sleep_ms(1500); /* more than one poll interval */
    outbox_relay_destroy(relay);

    long n = 0;
    entry_t *got = read_stream(r, stream, &n);
    CHECK(n == 10, "want the 10 committed events, got %ld", n);
    long dups;
    check_all_present(kept, 10, got, n, &dups);
    CHECK(dups == 0, "%ld duplicates in a crash-free run", dups);
    redisReply *rep = redisCommand(r, "XRANGE %s - +", stream);
    for (size_t i = 0; i < rep->elements; i++) {
        redisReply *f = rep->element[i]->element[1];
        for (size_t j = 0; j + 1 < f->elements; j += 2)
            if (!strcmp(f->element[j]->str, "type"))
                CHECK(!strcmp(f->element[j + 1]->str, "Committed"), "a %s event was published",
                      f->element[j + 1]->str);
    }
    freeReplyObject(rep);
    free(got);
    redisFree(r);
    PQfinish(c);
    printf("PASS relay_rollback_publishes_nothing: 10 committed published, 11 rolled back never "
           "seen\n");
    return 0;
}
