/* outboxctl dlq list | show | requeue | purge */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "ctl.h"

static void print_dead(void *arg, const outbox_dead_letter_t *d)
{
    int *n = arg;
    printf("%-36s  %-16s %-20s %-16s %4d %-12s %.60s\n", d->id, d->topic, d->type, d->key,
           d->attempts, d->reason, d->last_error);
    (*n)++;
}

static int dlq_list(outbox_store_t *s, int argc, char **argv)
{
    const char *limit = "100", *topic = NULL, *key = NULL;
    char err[1024];
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
    if (!s->ops->dlq_list)
        return ctl_fail(OUTBOX_ERR_UNSUPPORTED, "dlq list", "not supported by this store");
    printf("%-36s  %-16s %-20s %-16s %4s %-12s %s\n", "ID", "TOPIC", "TYPE", "KEY", "TRY", "REASON",
           "LAST ERROR");
    int n = 0;
    outbox_err_t e = s->ops->dlq_list(s, topic, key, atoi(limit), print_dead, &n, err, sizeof(err));
    if (e)
        return ctl_fail(e, "dlq list", err);
    printf("(%d dead letter%s)\n", n, n == 1 ? "" : "s");
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

static int dlq_show(outbox_store_t *s, int argc, char **argv)
{
    char err[1024], *json = NULL;
    if (need_id("show", argc, argv))
        return 2;
    if (!s->ops->dlq_show)
        return ctl_fail(OUTBOX_ERR_UNSUPPORTED, "dlq show", "not supported by this store");
    outbox_err_t e = s->ops->dlq_show(s, argv[0], &json, err, sizeof(err));
    if (e)
        return ctl_fail(e, "dlq show", err);
    printf("%s\n", json);
    free(json);
    return 0;
}

/* Requeue: back into the outbox at the head of its key, attempts reset, due
 * now, with the parked followers of its key. */
static int dlq_requeue(outbox_store_t *s, int argc, char **argv)
{
    char err[1024];
    int all = argc == 1 && !strcmp(argv[0], "--all");
    if (!all && need_id("requeue", argc, argv))
        return 2;
    if (!s->ops->dlq_requeue)
        return ctl_fail(OUTBOX_ERR_UNSUPPORTED, "dlq requeue", "not supported by this store");
    long long n = 0;
    outbox_err_t e = s->ops->dlq_requeue(s, all ? NULL : argv[0], &n, err, sizeof(err));
    if (e)
        return ctl_fail(e, "dlq requeue", err);
    if (!n && !all) {
        fprintf(stderr, "outboxctl: no dead letter with id %s\n", argv[0]);
        return 3;
    }
    printf("requeued: %lld\n", n);
    return 0;
}

static int dlq_purge(outbox_store_t *s, int argc, char **argv)
{
    const char *id = NULL;
    int64_t older = 0;
    char err[1024];
    if (argc == 1 && !strcmp(argv[0], "--all")) {
        older = 0;
    } else if (argc == 2 && !strcmp(argv[0], "--older-than")) {
        if (outbox__parse_duration_ms(argv[1], &older)) {
            fprintf(stderr, "outboxctl: dlq purge: \"%s\" is not a duration (e.g. 7d, 12h)\n",
                    argv[1]);
            return 2;
        }
    } else if (need_id("purge", argc, argv)) {
        return 2;
    } else {
        id = argv[0];
    }
    if (!s->ops->dlq_purge)
        return ctl_fail(OUTBOX_ERR_UNSUPPORTED, "dlq purge", "not supported by this store");
    long long n = 0;
    outbox_err_t e = s->ops->dlq_purge(s, id, older, &n, err, sizeof(err));
    if (e)
        return ctl_fail(e, "dlq purge", err);
    if (!n && id) {
        fprintf(stderr, "outboxctl: no dead letter with id %s\n", id);
        return 3;
    }
    printf("purged: %lld\n", n);
    return 0;
}

int ctl_dlq(outbox_store_t *s, const outbox_conf_t *conf, int argc, char **argv)
{
    if (argc < 1) {
        fprintf(stderr, "outboxctl: dlq needs a subcommand: list, show, requeue, purge\n");
        return 2;
    }
    if (!strcmp(argv[0], "list"))
        return dlq_list(s, argc - 1, argv + 1);
    if (!strcmp(argv[0], "show"))
        return dlq_show(s, argc - 1, argv + 1);
    if (!strcmp(argv[0], "requeue"))
        return dlq_requeue(s, argc - 1, argv + 1);
    if (!strcmp(argv[0], "purge"))
        return dlq_purge(s, argc - 1, argv + 1);
    fprintf(stderr, "outboxctl: unknown dlq subcommand \"%s\" (list, show, requeue, purge)\n",
            argv[0]);
    return 2;
}
