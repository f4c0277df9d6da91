/* outboxctl migrate | status */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "store/pg/pg.h"

int ctl_migrate(PGconn *c, const outbox_conf_t *conf, int argc, char **argv)
{
    char err[1024];
    int applied = 0;
    if (argc > 0) {
        fprintf(stderr, "outboxctl: migrate takes no arguments\n");
        return 2;
    }
    if (outbox_migrate(c, &applied, err, sizeof(err))) {
        fprintf(stderr, "outboxctl: %s\n", err);
        return 1;
    }
    printf("migrations applied: %d (schema up to date)\n", applied);
    return 0;
}

static PGresult *query(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        ctl_db_fail(c, r, "status query failed (did you run 'outboxctl migrate'?)");
        return NULL;
    }
    return r;
}

int ctl_status(PGconn *c, const outbox_conf_t *conf, int argc, char **argv)
{
    int json = argc > 0 && !strcmp(argv[0], "--json");
    if (argc > (json ? 1 : 0)) {
        fprintf(stderr, "outboxctl: status takes only --json\n");
        return 2;
    }
    PGresult *tot = query(c, "SELECT count(*),"
                             " COALESCE(round(extract(epoch FROM now() - min(created_at))::numeric, 3), 0),"
                             " count(*) FILTER (WHERE attempts > 0),"
                             " (SELECT count(*) FROM outbox_dead_letter)"
                             " FROM outbox");
    if (!tot)
        return 1;
    PGresult *top = query(c, "SELECT topic, count(*), count(*) FILTER (WHERE attempts > 0),"
                             " round(extract(epoch FROM now() - min(created_at))::numeric, 3)"
                             " FROM outbox GROUP BY topic ORDER BY topic");
    char sql[1024];
    snprintf(sql, sizeof(sql),
             "SELECT COALESCE(a.application_name, ''), l.pid, count(*), string_agg(l.objid::text, ',' ORDER BY l.objid)"
             "  FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
             " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %d AND l.objsubid = 2"
             "   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
             " GROUP BY 1, 2 ORDER BY 1",
             OUTBOX_LOCK_NS_LANE);
    PGresult *lanes = top ? query(c, sql) : NULL;
    if (!top || !lanes) {
        PQclear(tot);
        PQclear(top);
        return 1;
    }
    if (json) {
        printf("{\"pending\":%s,\"oldest_pending_age_seconds\":%s,\"retrying\":%s,\"dead_letters\":%s,\"topics\":[",
               PQgetvalue(tot, 0, 0), PQgetvalue(tot, 0, 1), PQgetvalue(tot, 0, 2), PQgetvalue(tot, 0, 3));
        for (int i = 0; i < PQntuples(top); i++) {
            printf("%s{\"topic\":\"", i ? "," : "");
            for (const char *p = PQgetvalue(top, i, 0); *p; p++)
                (*p == '"' || *p == '\\') ? printf("\\%c", *p) : putchar(*p);
            printf("\",\"pending\":%s,\"retrying\":%s,\"oldest_pending_age_seconds\":%s}", PQgetvalue(top, i, 1),
                   PQgetvalue(top, i, 2), PQgetvalue(top, i, 3));
        }
        printf("],\"lanes\":[");
        for (int i = 0; i < PQntuples(lanes); i++) {
            printf("%s{\"holder\":\"", i ? "," : "");
            for (const char *p = PQgetvalue(lanes, i, 0); *p; p++)
                (*p == '"' || *p == '\\') ? printf("\\%c", *p) : putchar(*p);
            printf("\",\"pid\":%s,\"count\":%s,\"lanes\":[%s]}", PQgetvalue(lanes, i, 1), PQgetvalue(lanes, i, 2),
                   PQgetvalue(lanes, i, 3));
        }
        printf("]}\n");
    } else {
        printf("pending events:       %s\n", PQgetvalue(tot, 0, 0));
        printf("oldest pending age:   %ss\n", PQgetvalue(tot, 0, 1));
        printf("retrying:             %s\n", PQgetvalue(tot, 0, 2));
        printf("dead letters:         %s\n", PQgetvalue(tot, 0, 3));
        printf("\n%-32s %10s %10s %12s\n", "TOPIC", "PENDING", "RETRYING", "OLDEST(s)");
        for (int i = 0; i < PQntuples(top); i++)
            printf("%-32s %10s %10s %12s\n", PQgetvalue(top, i, 0), PQgetvalue(top, i, 1), PQgetvalue(top, i, 2),
                   PQgetvalue(top, i, 3));
        if (!PQntuples(top))
            printf("(no pending events)\n");
        int held = 0;
        for (int i = 0; i < PQntuples(lanes); i++)
            held += atoi(PQgetvalue(lanes, i, 2));
        printf("\nlanes held: %d of %d\n%-48s %8s %6s  %s\n", held, OUTBOX_LANES, "HOLDER", "PID", "LANES", "LIST");
        for (int i = 0; i < PQntuples(lanes); i++)
            printf("%-48s %8s %6s  %s\n", PQgetvalue(lanes, i, 0), PQgetvalue(lanes, i, 1), PQgetvalue(lanes, i, 2),
                   PQgetvalue(lanes, i, 3));
        if (!PQntuples(lanes))
            printf("(no relay is running)\n");
    }
    PQclear(tot);
    PQclear(top);
    PQclear(lanes);
    return 0;
}
