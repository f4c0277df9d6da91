/* The inbox: first record says new, a repeat says duplicate, a rolled-back
 * effect forgets the record, and concurrent consumers apply once. */
#include <pthread.h>

#include "relay_common.h"

static const char *g_ci;
static const char *MSG = "0190b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b";

static void *racer(void *arg)
{
    (void)arg;
    PGconn *c = tu_connect(g_ci);
    char err[256];
    int is_new = 0;
    PQclear(tu_exec(c, "BEGIN"));
    CHECK(outbox_inbox_record(c, "race", MSG, &is_new, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    if (is_new)
        PQclear(tu_exec(c, "UPDATE effects SET n = n + 1"));
    tu_sleep_ms(50);
    PQclear(tu_exec(c, "COMMIT"));
    PQfinish(c);
    return NULL;
}

int main(void)
{
    PGconn *c;
    g_ci = setup_db("inbox_exactly_once", &c);
    char err[256];
    int is_new = -1;
    PQclear(tu_exec(c, "BEGIN"));
    CHECK(outbox_inbox_record(c, "email", MSG, &is_new, err, sizeof(err)) == OUTBOX_OK &&
              is_new == 1,
          "first");
    PQclear(tu_exec(c, "COMMIT"));
    PQclear(tu_exec(c, "BEGIN"));
    CHECK(outbox_inbox_record(c, "email", MSG, &is_new, err, sizeof(err)) == OUTBOX_OK &&
              is_new == 0,
          "repeat");
    PQclear(tu_exec(c, "COMMIT"));
    /* Another consumer has its own record. */
    PQclear(tu_exec(c, "BEGIN"));
    CHECK(outbox_inbox_record(c, "inventory", MSG, &is_new, err, sizeof(err)) == OUTBOX_OK &&
              is_new == 1,
          "other");
    PQclear(tu_exec(c, "ROLLBACK")); /* effect failed: the record goes with it */
    PQclear(tu_exec(c, "BEGIN"));
    CHECK(outbox_inbox_record(c, "inventory", MSG, &is_new, err, sizeof(err)) == OUTBOX_OK &&
              is_new == 1,
          "record survived a rollback");
    PQclear(tu_exec(c, "COMMIT"));
    PQclear(tu_exec(c, "BEGIN"));
    CHECK(outbox_inbox_record(c, "inventory", "nope", &is_new, err, sizeof(err)) ==
              OUTBOX_ERR_INVALID_ARG,
          "bad id accepted");
    PQclear(tu_exec(c, "ROLLBACK"));

    /* 8 concurrent deliveries of one message: the effect happens once. */
    PQclear(tu_exec(c, "CREATE TABLE effects (n int); INSERT INTO effects VALUES (0)"));
    pthread_t t[8];
    for (int i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, racer, NULL);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    CHECK(tu_query_ll(c, "SELECT n FROM effects") == 1, "effect applied %lld times",
          tu_query_ll(c, "SELECT n FROM effects"));
    PQfinish(c);
    printf("PASS inbox_exactly_once\n");
    return 0;
}
