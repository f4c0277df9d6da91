/* outboxctl consumer-dlq list | show | requeue | purge: the dead letters of
 * consumer groups (table outbox_consumer_dead_letter in the consumer's
 * database; see include/outbox/consumer.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "ctl.h"

static void print_dead(void *arg, const outbox_consumer_dead_t *d)
{
    int *n = arg;
    printf("%-8lld %-16s %-36s  %-16s %-16s %4d %-12s %-9s %.60s\n", d->id, d->group, d->message_id,
           d->topic, d->key, d->attempts, d->reason,
           d->requeued_at && *d->requeued_at ? "requeued" : "dead", d->last_error);
    (*n)++;
}

/* "--group G" anywhere in argv: removed, value in *group. */
static int take_group(int *argc, char **argv, const char **group)
{
    for (int i = 0; i < *argc; i++) {
        if (strcmp(argv[i], "--group"))
            continue;
        if (i + 1 >= *argc || !*argv[i + 1]) {
            fprintf(stderr, "outboxctl: consumer-dlq: --group needs a group name\n");
            return 2;
        }
        *group = argv[i + 1];
        memmove(argv + i, argv + i + 2, (size_t)(*argc - i - 2) * sizeof(*argv));
        *argc -= 2;
        i--;
    }
    return 0;
}

static int cdl_list(outbox_store_t *s, int argc, char **argv)
{
    const char *limit = "100", *topic = NULL, *group = NULL;
    char err[1024];
    if (take_group(&argc, argv, &group))
        return 2;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--limit") && i + 1 < argc)
            limit = argv[++i];
        else if (!strcmp(argv[i], "--topic") && i + 1 < argc)
            topic = argv[++i];
        else {
            fprintf(stderr, "outboxctl: consumer-dlq list: unexpected argument \"%s\"\n", argv[i]);
            return 2;
        }
    }
    if (atoi(limit) <= 0) {
        fprintf(stderr, "outboxctl: consumer-dlq list: --limit must be a positive integer\n");
        return 2;
    }
    if (!s->ops->cdl_list)
        return ctl_fail(OUTBOX_ERR_UNSUPPORTED, "consumer-dlq list", "not supported by this store");
    printf("%-8s %-16s %-36s  %-16s %-16s %4s %-12s %-9s %s\n", "ID", "GROUP", "MESSAGE ID",
           "TOPIC", "KEY", "TRY", "REASON", "STATE", "LAST ERROR");
    int n = 0;
    outbox_err_t e =
        s->ops->cdl_list(s, group, topic, 0, atoi(limit), print_dead, &n, err, sizeof(err));
    if (e)
        return ctl_fail(e, "consumer-dlq list", err);
    printf("(%d consumer dead letter%s)\n", n, n == 1 ? "" : "s");
    return 0;
}

/* The dead letter id (a positive integer, from list) in argv[0]. */
static int need_id(const char *cmd, int argc, char **argv, long long *id)
{
    char *end = NULL;
    *id = argc == 1 ? strtoll(argv[0], &end, 10) : 0;
    if (argc != 1 || *id <= 0 || !end || *end) {
        fprintf(stderr,
                "outboxctl: consumer-dlq %s: give one dead letter id (the number in the ID "
                "column of consumer-dlq list)%s\n",
                cmd, strcmp(cmd, "show") ? " or --all" : "");
        return 2;
    }
    return 0;
}

static int cdl_show(outbox_store_t *s, int argc, char **argv)
{
    char err[1024], *json = NULL;
    long long id;
    if (need_id("show", argc, argv, &id))
        return 2;
    if (!s->ops->cdl_show)
        return ctl_fail(OUTBOX_ERR_UNSUPPORTED, "consumer-dlq show", "not supported by this store");
    outbox_err_t e = s->ops->cdl_show(s, id, &json, err, sizeof(err));
    if (e)
        return ctl_fail(e, "consumer-dlq show", err);
    printf("%s\n", json);
    free(json);
    return 0;
}

/* Requeue: the group's running consumers hand it to their handler again
 * (within about a second); attempts start from 0. */
static int cdl_requeue(outbox_store_t *s, int argc, char **argv)
{
    char err[1024];
    const char *group = NULL;
    long long id = 0;
    if (take_group(&argc, argv, &group))
        return 2;
    int all = argc == 1 && !strcmp(argv[0], "--all");
    if (!all && need_id("requeue", argc, argv, &id))
        return 2;
    if (!s->ops->cdl_requeue)
        return ctl_fail(OUTBOX_ERR_UNSUPPORTED, "consumer-dlq requeue",
                        "not supported by this store");
    long long n = 0;
    outbox_err_t e = s->ops->cdl_requeue(s, id, group, &n, err, sizeof(err));
    if (e)
        return ctl_fail(e, "consumer-dlq requeue", err);
    if (!n && !all) {
        fprintf(stderr, "outboxctl: no consumer dead letter with id %lld%s%s\n", id,
                group ? " in group " : "", group ? group : "");
        return 3;
    }
    printf("requeued: %lld\n", n);
    return 0;
}

static int cdl_purge(outbox_store_t *s, int argc, char **argv)
{
    const char *group = NULL;
    long long id = 0;
    int64_t older = 0;
    char err[1024];
    if (take_group(&argc, argv, &group))
        return 2;
    if (argc == 1 && !strcmp(argv[0], "--all")) {
        older = 0;
    } else if (argc == 2 && !strcmp(argv[0], "--older-than")) {
        if (outbox__parse_duration_ms(argv[1], &older)) {
            fprintf(stderr,
                    "outboxctl: consumer-dlq purge: \"%s\" is not a duration (e.g. 7d, 12h)\n",
                    argv[1]);
            return 2;
        }
    } else if (need_id("purge", argc, argv, &id)) {
        return 2;
    }
    if (!s->ops->cdl_purge)
        return ctl_fail(OUTBOX_ERR_UNSUPPORTED, "consumer-dlq purge",
                        "not supported by this store");
    long long n = 0;
    outbox_err_t e = s->ops->cdl_purge(s, id, group, older, &n, err, sizeof(err));
    if (e)
        return ctl_fail(e, "consumer-dlq purge", err);
    if (!n && id) {
        fprintf(stderr, "outboxctl: no consumer dead letter with id %lld\n", id);
        return 3;
    }
    printf("purged: %lld\n", n);
    return 0;
}

int ctl_consumer_dlq(outbox_store_t *s, const outbox_conf_t *conf, int argc, char **argv)
{
    (void)conf;
    if (argc < 1) {
        fprintf(stderr, "outboxctl: consumer-dlq needs a subcommand: list, show, requeue, purge\n");
        return 2;
    }
    if (!strcmp(argv[0], "list"))
        return cdl_list(s, argc - 1, argv + 1);
    if (!strcmp(argv[0], "show"))
        return cdl_show(s, argc - 1, argv + 1);
    if (!strcmp(argv[0], "requeue"))
        return cdl_requeue(s, argc - 1, argv + 1);
    if (!strcmp(argv[0], "purge"))
        return cdl_purge(s, argc - 1, argv + 1);
    fprintf(stderr,
            "outboxctl: unknown consumer-dlq subcommand \"%s\" (list, show, requeue, purge)\n",
            argv[0]);
    return 2;
}
