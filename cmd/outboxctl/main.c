/* outboxctl: operate an outbox database: migrate, status, dead letters (the
 * relay's and consumer groups'), replay. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/conf.h"
#include "core/log.h"
#include "ctl.h"

/* Every command with its usage text: "outboxctl CMD --help" (and "outboxctl
 * help CMD") prints it without touching the database; "outboxctl man
 * outboxctl" puts them in the man page. */
const ctl_cmd_t ctl_cmds[] = {
    {"migrate", ctl_migrate, "",
     "Applies pending schema migrations to the outbox table (safe to run concurrently).\n"},
    {"status", ctl_status, "[--json] [--watch [--interval DURATION] [--count N]]",
     "Pending count, oldest pending age, per-topic counts, dead letters, and which\n"
     "relay worker holds which lanes.\n"
     "\n"
     "  --json                 one JSON document instead of text\n"
     "  --watch, -w            refresh in place like top (q or Ctrl-C quits); when stdout\n"
     "                         is not a terminal, print successive snapshots\n"
     "  --interval DURATION    refresh interval of --watch (default 2s)\n"
     "  --count N              stop --watch after N snapshots\n"},
    {"dlq", ctl_dlq, "list|show|requeue|purge [ARGS]",
     "Dead letters: events the relay gave up on (attempts exhausted or refused by\n"
     "the broker), and the later events of their key when dlq_mode=park.\n"
     "\n"
     "  dlq list [--limit N] [--topic T] [--key K]\n"
     "                         list dead letters, oldest first (default limit 100)\n"
     "  dlq show ID            one dead letter with its error history (JSON)\n"
     "  dlq requeue ID|--all   put dead letters back at the head of their key,\n"
     "                         attempts reset, due now, with their parked followers\n"
     "  dlq purge ID|--all|--older-than DURATION\n"
     "                         delete dead letters for good\n"},
    {"consumer-dlq", ctl_consumer_dlq, "list|show|requeue|purge [ARGS]",
     "Dead letters of consumer groups: messages a group's handler rejected or\n"
     "failed consumer_max_attempts times, kept in the consumer's database\n"
     "(DATABASE_URL) with their error history. Alias: consumer-dead-letters.\n"
     "\n"
     "  consumer-dlq list [--group G] [--topic T] [--limit N]\n"
     "                         list consumer dead letters, oldest first\n"
     "  consumer-dlq show ID   one consumer dead letter: body, error history (JSON)\n"
     "  consumer-dlq requeue ID|--all [--group G]\n"
     "                         hand dead letters to their group's handler again: a\n"
     "                         running consumer of the group picks them up within ~1 s,\n"
     "                         attempts start from 0; the inbox keeps the effect once\n"
     "  consumer-dlq purge ID|--all|--older-than DURATION [--group G]\n"
     "                         delete consumer dead letters for good\n"},
    {"consumer-dead-letters", ctl_consumer_dlq, "list|show|requeue|purge [ARGS]",
     "The same as consumer-dlq.\n"},
    {"replay", ctl_replay, "[--sink URL] [--topic T] [--count N]",
     "Re-publishes already delivered events from a Redis stream with the same\n"
     "message ids, so consumers' duplicate handling shows.\n"
     "\n"
     "  --sink URL             redis://[:password@]host:port (default REDIS_ADDR)\n"
     "  --topic T              stream to replay (default orders)\n"
     "  --count N              how many of its last entries (default 10)\n"},
    {"tail", ctl_tail,
     "TOPIC [--source outbox|redis] [--from-start] [--count N] [--timeout DURATION] [--json]",
     "Follows the events of TOPIC as they are published.\n"
     "\n"
     "Sources:\n"
     "  outbox   the outbox table, whatever the sink. With ack_mode=mark: the rows\n"
     "           the relay acknowledged (published), by processed_at. With\n"
     "           ack_mode=delete (default) published rows are deleted, so it shows\n"
     "           rows as they are committed, while pending: an event published\n"
     "           between two polls is missed.\n"
     "  redis    the Redis stream TOPIC (XREAD, no consumer group): every event\n"
     "           published, the CloudEvents document as the broker has it.\n"
     "Default: outbox with ack_mode=mark, else redis when OUTBOX_SINK is redis://\n"
     "(or unset), else outbox.\n"
     "\n"
     "  --from-start           begin with what is already there (default: new only)\n"
     "  --count N              exit after N events (exit 1 if --timeout comes first)\n"
     "  --timeout DURATION     exit after this long (default: until Ctrl-C)\n"
     "  --json                 one JSON object per line: id, topic, type, key, at and\n"
     "                         data (outbox) or event (redis), as written\n"
     "  --interval DURATION    outbox poll interval (default 250ms)\n"},
    {"config-doc", NULL, "", "Prints the configuration reference (Markdown).\n"},
    {"man", NULL, "relay|outboxctl",
     "Prints a man page (roff) generated from the configuration table, e.g.\n"
     "  outboxctl man relay > outbox-relay.1\n"},
    {"version", NULL, "", "Prints the version of outboxctl and of the library.\n"},
};
const size_t ctl_ncmds = sizeof(ctl_cmds) / sizeof(ctl_cmds[0]);

static const ctl_cmd_t *find_cmd(const char *name)
{
    for (size_t i = 0; i < ctl_ncmds; i++)
        if (!strcmp(ctl_cmds[i].name, name))
            return &ctl_cmds[i];
    return NULL;
}

static void usage(FILE *fp)
{
    fprintf(
        fp,
        "Usage: outboxctl [OPTIONS] COMMAND [ARGS]\n"
        "\n"
        "Commands (outboxctl COMMAND --help describes each):\n"
        "  migrate                     apply pending schema migrations (safe to run concurrently)\n"
        "  status [--json] [--watch [--interval D]]\n"
        "                              pending count, oldest pending age, per-topic counts,\n"
        "                              dead letters, and which relay worker holds which lanes\n"
        "                              (--watch: refreshed in place like top)\n"
        "  tail TOPIC [--json] [--count N]\n"
        "                              follow the events of a topic as they are published\n"
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
        "                              re-publish already delivered events from a Redis stream\n"
        "                              with the same message ids\n"
        "  config-doc                  print the configuration reference (Markdown)\n"
        "  man relay|outboxctl         print a man page (roff)\n"
        "  version                     print the version\n"
        "  help [COMMAND]              this text, or one command's\n"
        "\n"
        "Options (environment variables in brackets):\n");
    outbox__conf_print_help(fp, OUTBOX_SCOPE_DB | OUTBOX_SCOPE_LOG);
    fprintf(fp, "\nExit codes: 0 ok, 1 failed, 2 usage error, 3 not found.\n");
}

static void cmd_usage(FILE *fp, const ctl_cmd_t *c)
{
    fprintf(fp, "Usage: outboxctl [OPTIONS] %s%s%s\n\n%s", c->name, *c->args ? " " : "", c->args,
            c->usage);
    if (c->fn)
        fprintf(fp, "\nConnects with DATABASE_URL (or DB_HOST, DB_PORT, DB_USER, DB_PASSWORD,\n"
                    "DB_NAME); outboxctl --help lists every option.\n");
    fprintf(fp, "\nExit codes: 0 ok, 1 failed, 2 usage error, 3 not found.\n");
}

/* 1 if the command's arguments ask for help (before a "--"). */
static int wants_help(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--"))
            return 0;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return 1;
    }
    return 0;
}

int ctl_fail(outbox_err_t e, const char *what, const char *err)
{
    fprintf(stderr, "outboxctl: %s: %s\n", what, err && *err ? err : outbox_err_str(e));
    return e == OUTBOX_ERR_NOT_FOUND ? 3 : e == OUTBOX_ERR_UNSUPPORTED ? 2 : 1;
}

static int run_local(const char *cmd, int argc, char **argv)
{
    if (!strcmp(cmd, "config-doc")) {
        outbox__conf_print_markdown(stdout);
        return 0;
    }
    if (!strcmp(cmd, "version")) {
        printf("outboxctl %s (liboutbox %s)\n", OUTBOX_VERSION_STR, outbox_version_str());
        return 0;
    }
    if (argc != 1) {
        fprintf(stderr, "outboxctl: man needs one page: relay or outboxctl\n");
        return 2;
    }
    return ctl_man(argv[0], stdout);
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
    const char *cmd = argv[argi];
    int cargc = argc - argi - 1;
    char **cargv = argv + argi + 1;
    if (!strcmp(cmd, "help")) { /* outboxctl help [COMMAND] */
        const ctl_cmd_t *c = cargc ? find_cmd(cargv[0]) : NULL;
        if (c)
            cmd_usage(stdout, c);
        else
            usage(stdout);
        outbox_conf_destroy(conf);
        return cargc && !c ? 2 : 0;
    }
    const ctl_cmd_t *c = find_cmd(cmd);
    if (!c) {
        fprintf(stderr, "outboxctl: unknown command \"%s\" (see --help)\n", cmd);
        outbox_conf_destroy(conf);
        return 2;
    }
    if (wants_help(cargc, cargv)) {
        cmd_usage(stdout, c);
        outbox_conf_destroy(conf);
        return 0;
    }
    outbox__log_setup(outbox__conf_str(conf, "log_level"), outbox__conf_str(conf, "log_format"));
    if (!c->fn) {
        int rc = run_local(cmd, cargc, cargv);
        outbox_conf_destroy(conf);
        return rc;
    }
    outbox_store_cfg_t cfg = {.url = outbox__conf_database_url(conf),
                              .table = outbox__conf_str(conf, "outbox_table"),
                              .appname = "outboxctl"};
    outbox_store_t *s = outbox__store_open(&cfg, err, sizeof(err));
    if (!s) {
        fprintf(stderr, "outboxctl: %s\n", err);
        outbox_conf_destroy(conf);
        return 1;
    }
    int rc = c->fn(s, conf, cargc, cargv);
    outbox__store_close(s);
    outbox_conf_destroy(conf);
    return rc;
}
