/* outboxctl dlq list | show | requeue | purge */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "ctl.h"

static int dlq_list(PGconn *c, int argc, char **argv)
{
    const char *limit = "100", *topic = NULL, *key = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--limit") && i + 1 < argc)
            limit = argv[++i];
        else if (!strcmp(argv[i], "--topic") && i + 1 < argc)
            topic = argv[++i];
        else if (!strcmp(argv[i], "--key") && i + 1 < argc)
            key = argv[++i];
        else {
            fprintf(stderr, "outboxctl: dlq list: unexpected argument \"%s\"\n", argv[i]);
            return 2;
        }
    }
    if (atoi(limit) <= 0) {
        fprintf(stderr, "outboxctl: dlq list: --limit must be a positive integer\n");
        return 2;
    }
    const char *params[3] = {limit, topic, key};
    PGresult *r = PQexecParams(c,
                               "SELECT id, topic, type, key, attempts, reason, dead_at, left(COALESCE(last_error, ''), 60)"
                               "  FROM outbox_dead_letter"
                               " WHERE ($2::text IS NULL OR topic = $2) AND ($3::text IS NULL OR key = $3)"
                               " ORDER BY seq LIMIT $1::int",
                               3, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return ctl_db_fail(c, r, "dlq list");
    printf("%-36s  %-16s %-20s %-16s %4s %-12s %s\n", "ID", "TOPIC", "TYPE", "KEY", "TRY", "REASON", "LAST ERROR");
    for (int i = 0; i < PQntuples(r); i++)
        printf("%-36s  %-16s %-20s %-16s %4s %-12s %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
               PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), PQgetvalue(r, i, 4), PQgetvalue(r, i, 5),
               PQgetvalue(r, i, 7));
    printf("(%d dead letter%s)\n", PQntuples(r), PQntuples(r) == 1 ? "" : "s");
    PQclear(r);
    return 0;
}

static int need_id(const char *cmd, int argc, char **argv)
{
    if (argc != 1 || !outbox_uuid_valid(argv[0])) {
        fprintf(stderr, "outboxctl: dlq %s: give one event id (a UUID)%s\n", cmd,
                strcmp(cmd, "show") ? " or --all" : "");
        return 2;
    }
    return 0;
}

static int dlq_show(PGconn *c, int argc, char **argv)
{
    if (need_id("show", argc, argv))
        return 2;
    const char *params[1] = {argv[0]};
    PGresult *r = PQexecParams(c,
                               "SELECT jsonb_pretty(to_jsonb(d) - 'payload' || jsonb_build_object('payload', d.payload::jsonb))"
                               "  FROM outbox_dead_letter d WHERE id = $1::uuid",
                               1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return ctl_db_fail(c, r, "dlq show");
    if (!PQntuples(r)) {
        fprintf(stderr, "outboxctl: no dead letter with id %s\n", argv[0]);
        PQclear(r);
        return 3;
    }
    printf("%s\n", PQgetvalue(r, 0, 0));
    PQclear(r);
    return 0;
}

/* Requeue: back into the outbox with its original seq (so it is the head of
 * its key again), attempts reset, due now. Parked followers of the same key
 * are requeued with it when --all is used or when they share the key. */
static int dlq_requeue(PGconn *c, int argc, char **argv)
{
    int all = argc == 1 && !strcmp(argv[0], "--all");
    if (!all && need_id("requeue", argc, argv))
        return 2;
    const char *params[1] = {all ? NULL : argv[0]};
    PGresult *r = PQexecParams(
        c,
        "WITH moved AS ("
        "  DELETE FROM outbox_dead_letter d"
        "   WHERE $1::uuid IS NULL OR d.id = $1::uuid"
        "      OR (d.reason = 'parked' AND d.key = (SELECT key FROM outbox_dead_letter WHERE id = $1::uuid))"
        "  RETURNING d.*)"
        " INSERT INTO outbox (seq, id, topic, type, key, payload, headers, traceparent, source, created_at,"
        "                     attempts, next_attempt_at, last_error, errors)"
        " SELECT seq, id, topic, type, key, payload, headers, traceparent, source, created_at,"
        "        0, now(), last_error, errors FROM moved",
        1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        return ctl_db_fail(c, r, "dlq requeue");
    int n = atoi(PQcmdTuples(r));
    PQclear(r);
    if (!n && !all) {
        fprintf(stderr, "outboxctl: no dead letter with id %s\n", argv[0]);
        return 3;
    }
    printf("requeued: %d\n", n);
    PQclear(PQexec(c, "SELECT pg_notify('outbox_wakeup', '')"));
    return 0;
}

static int dlq_purge(PGconn *c, int argc, char **argv)
{
    const char *id = NULL, *older = NULL;
    if (argc == 1 && !strcmp(argv[0], "--all")) {
        older = "0";
    } else if (argc == 2 && !strcmp(argv[0], "--older-than")) {
        int64_t ms;
        if (outbox__parse_duration_ms(argv[1], &ms)) {
            fprintf(stderr, "outboxctl: dlq purge: \"%s\" is not a duration (e.g. 7d, 12h)\n", argv[1]);
            return 2;
        }
        static char buf[32];
        snprintf(buf, sizeof(buf), "%lld", (long long)ms);
        older = buf;
    } else if (need_id("purge", argc, argv)) {
        return 2;
    } else {
        id = argv[0];
    }
    const char *params[2] = {id, older};
    PGresult *r = PQexecParams(c,
                               "DELETE FROM outbox_dead_letter"
                               " WHERE ($1::uuid IS NOT NULL AND id = $1::uuid)"
                               "    OR ($2::bigint IS NOT NULL AND dead_at <= now() - $2::bigint * interval '1 millisecond')",
                               2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        return ctl_db_fail(c, r, "dlq purge");
    int n = atoi(PQcmdTuples(r));
    PQclear(r);
    if (!n && id) {
        fprintf(stderr, "outboxctl: no dead letter with id %s\n", id);
        return 3;
    }
    printf("purged: %d\n", n);
    return 0;
}

int ctl_dlq(PGconn *c, const outbox_conf_t *conf, int argc, char **argv)
{
    if (argc < 1) {
        fprintf(stderr, "outboxctl: dlq needs a subcommand: list, show, requeue, purge\n");
        return 2;
    }
    if (!strcmp(argv[0], "list"))
        return dlq_list(c, argc - 1, argv + 1);
    if (!strcmp(argv[0], "show"))
        return dlq_show(c, argc - 1, argv + 1);
    if (!strcmp(argv[0], "requeue"))
        return dlq_requeue(c, argc - 1, argv + 1);
    if (!strcmp(argv[0], "purge"))
        return dlq_purge(c, argc - 1, argv + 1);
    fprintf(stderr, "outboxctl: unknown dlq subcommand \"%s\" (list, show, requeue, purge)\n", argv[0]);
    return 2;
}
