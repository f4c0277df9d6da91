/* A program built against an installed liboutbox (see examples/README.md):
 *
 *   cc enqueue.c $(pkg-config --cflags --libs outbox) -o enqueue
 *   cmake -S examples -B build-example -DCMAKE_PREFIX_PATH=/your/prefix
 *
 * Without arguments it prints the library version and a fresh event id.
 * With a conninfo it enqueues one event in a transaction of its own:
 *
 *   ./enqueue 'postgresql://app@127.0.0.1/app'
 */
#include <stdio.h>
#include <string.h>

#include <libpq-fe.h>
#include <outbox/outbox.h>

int main(int argc, char **argv)
{
    char id[OUTBOX_UUID_STRLEN + 1], err[512];
    if (outbox_version() != OUTBOX_VERSION)
        fprintf(stderr, "warning: headers %s, library %s\n", OUTBOX_VERSION_STR,
                outbox_version_str());
    if (argc < 2) {
        outbox_uuid_v7(id);
        printf("liboutbox %s (headers %s), a new event id: %s\n", outbox_version_str(),
               OUTBOX_VERSION_STR, id);
        return 0;
    }
    PGconn *c = PQconnectdb(argv[1]);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "enqueue: %s", PQerrorMessage(c));
        PQfinish(c);
        return 1;
    }
    int applied = 0;
    if (outbox_migrate(c, &applied, err, sizeof(err)) != OUTBOX_OK) {
        fprintf(stderr, "enqueue: %s\n", err);
        PQfinish(c);
        return 1;
    }
    PQclear(PQexec(c, "BEGIN"));
    /* ... the business change goes here, in the same transaction ... */
    outbox_event_t ev = {.topic = "examples",
                         .type = "ExampleHappened",
                         .key = "example-1",
                         .payload = "{\"hello\":\"world\"}"};
    outbox_err_t e = outbox_enqueue(c, &ev, id, err, sizeof(err));
    PGresult *r = PQexec(c, e == OUTBOX_OK ? "COMMIT" : "ROLLBACK");
    int ok = e == OUTBOX_OK && PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    PQfinish(c);
    if (!ok) {
        fprintf(stderr, "enqueue: %s\n", e ? err : "commit failed");
        return 1;
    }
    printf("enqueued event %s\n", id);
    return 0;
}
