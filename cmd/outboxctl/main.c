/* outboxctl: operate an outbox database: migrate, status, dead letters (the
 * relay's and consumer groups'), replay. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/conf.h"
#include "core/log.h"
#include "ctl.h"

static void usage(FILE *fp)
{
    fprintf(
        fp,
        "Usage: outboxctl [OPTIONS] COMMAND [ARGS]\n"
        "\n"
        "Commands:\n"
        "  migrate                     apply pending schema migrations (safe to run concurrently)\n"
        "  status [--json]             pending count, oldest pending age, per-topic counts,\n"
        "                              dead letters, and which relay worker holds which lanes\n"
        "  dlq list [--limit N] [--topic T] [--key K]\n"
        "                              list dead letters, oldest first\n"
        "  dlq show ID                 one dead letter with its error history (JSON)\n"
        "  dlq requeue ID|--all        put dead letters back at the head of their key\n"
        "  dlq purge ID|--all|--older-than DURATION\n"
        "                              delete dead letters for good\n"
        "  consumer-dlq list [--group G] [--topic T] [--limit N]\n"
        "                              list consumer dead letters (messages a consumer group's\n"
        "                              handler rejected or failed consumer_max_attempts times),\n"
        "                              oldest first; read from the consumer's database\n"
        "                              (DATABASE_URL)\n"
        "  consumer-dlq show ID        one consumer dead letter: body, error history (JSON)\n"
        "  consumer-dlq requeue ID|--all [--group G]\n"
        "                              hand dead letters to their group's handler again: a\n"
        "                              running consumer of the group picks them up within ~1 s,\n"
        "                              attempts start from 0; the inbox keeps the effect once\n"
        "  consumer-dlq purge ID|--all|--older-than DURATION [--group G]\n"
        "                              delete consumer dead letters for good\n"
        "  replay [--sink URL] [--topic T] [--count N]\n"
        "                              re-publish already delivered events from a Redis stream "
        "with\n"
        "                              the same message ids, so consumers' duplicate handling "
        "shows\n"
        "  config-doc                  print the configuration reference (Markdown)\n"
        "\n"
        "Options (environment variables in brackets):\n");
    outbox__conf_print_help(fp, OUTBOX_SCOPE_DB | OUTBOX_SCOPE_LOG);
    fprintf(fp, "\nExit codes: 0 ok, 1 failed, 2 usage error, 3 not found.\n");
}

int ctl_fail(outbox_err_t e, const char *what, const char *err)
{
    fprintf(stderr, "outboxctl: %s: %s\n", what, err && *err ? err : outbox_err_str(e));
    return e == OUTBOX_ERR_NOT_FOUND ? 3 : e == OUTBOX_ERR_UNSUPPORTED ? 2 : 1;
}

int main(int argc, char **argv)
{
    char err[1024];
    outbox_conf_t *conf = outbox_conf_new();
    int argi, help;
    if (!conf || outbox_conf_from_env(conf, err, sizeof(err)) ||
        outbox__conf_parse_args(conf, argc, argv, &argi, &help, err, sizeof(err))) {
        fprintf(stderr, "outboxctl: %s\n", conf ? err : "out of memory");
        outbox_conf_destroy(conf);
        return 2;
    }
    if (help || argi >= argc) {
        usage(help ? stdout : stderr);
        outbox_conf_destroy(conf);
        return help ? 0 : 2;
    }
    outbox__log_setup(outbox__conf_str(conf, "log_level"), outbox__conf_str(conf, "log_format"));
    const char *cmd = argv[argi];
    if (!strcmp(cmd, "config-doc")) {
        outbox__conf_print_markdown(stdout);
        outbox_conf_destroy(conf);
        return 0;
    }
    static const struct {
        const char *name;
        int (*fn)(outbox_store_t *, const outbox_conf_t *, int, char **);
    } cmds[] = {{"migrate", ctl_migrate},
                {"status", ctl_status},
                {"dlq", ctl_dlq},
                {"replay", ctl_replay},
                {"consumer-dlq", ctl_consumer_dlq},
                {"consumer-dead-letters", ctl_consumer_dlq}};
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        if (strcmp(cmd, cmds[i].name))
            continue;
        outbox_store_cfg_t cfg = {.url = outbox__conf_database_url(conf),
                                  .table = outbox__conf_str(conf, "outbox_table"),
                                  .appname = "outboxctl"};
        outbox_store_t *s = outbox__store_open(&cfg, err, sizeof(err));
        if (!s) {
            fprintf(stderr, "outboxctl: %s\n", err);
            outbox_conf_destroy(conf);
            return 1;
        }
        int rc = cmds[i].fn(s, conf, argc - argi - 1, argv + argi + 1);
        outbox__store_close(s);
        outbox_conf_destroy(conf);
        return rc;
    }
    fprintf(stderr, "outboxctl: unknown command \"%s\" (see --help)\n", cmd);
    outbox_conf_destroy(conf);
    return 2;
}
