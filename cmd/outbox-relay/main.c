/* outbox-relay: the relay as a daemon, for any application in any language
 * that writes the outbox table itself. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "core/conf.h"
#include "core/log.h"
#include "core/util.h"
#include "outbox/outbox.h"
#include "store/store.h"

static outbox_relay_t *g_relay;
static volatile sig_atomic_t g_signals;

#if defined(__SANITIZE_THREAD__)
/* make tsan: a second signal, or batches still in flight after
 * shutdown_timeout, end the process with _exit while worker threads run or
 * have just ended unjoined: by design, their transactions roll back. That
 * is not the leak ThreadSanitizer's "thread leak" report is about. */
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
    return "report_thread_leaks=0";
}
#endif

static void on_signal(int sig)
{
    (void)sig;
    if (++g_signals > 1)
        _exit(1); /* second signal: leave now; open transactions roll back */
    outbox_relay_stop(g_relay);
}

/* Gives the memory the batches freed back to the system once the relay has
 * gone quiet after work: no batch ended during the last tick (200 ms), some
 * since the last trim. glibc keeps what a worker freed in that thread's arena
 * at its high-water mark: after a drain at 3 workers and batch
 * 2000 the relay stayed at ~18 MB resident, ~4.3 MB of it free heap, which
 * malloc_trim(0) returns (bench/footprint.sh idle: 18.1 -> 12-13 MB). Once
 * per quiet spell, so a draining relay never pays for it. Here, not in the
 * library: a process embedding the relay owns its allocator's policy. */
static void trim_when_quiet(uint64_t *last, uint64_t *trimmed)
{
#ifdef __GLIBC__
    uint64_t batches = 0;
    for (int i = 0; i < outbox_relay_worker_count(g_relay); i++) {
        outbox_worker_stats_t st;
        if (outbox_relay_worker_stats(g_relay, i, &st) == OUTBOX_OK)
            batches += st.batches;
    }
    if (batches == *last && batches != *trimmed) {
        malloc_trim(0);
        *trimmed = batches;
    }
    *last = batches;
#else
    (void)last;
    (void)trimmed;
#endif
}

static void usage(FILE *fp)
{
    fprintf(fp, "Usage: outbox-relay [OPTIONS]\n"
                "\n"
                "Publishes committed events from the PostgreSQL outbox table to a broker,\n"
                "with N workers claiming batches (FOR UPDATE SKIP LOCKED), per-key order,\n"
                "retries with backoff, and dead letters. Applies pending migrations at start\n"
                "unless --no-migrate is given. Every option can also be set by the environment\n"
                "variable shown; flags win over the environment.\n"
                "\n"
                "  --no-migrate               do not apply schema migrations at start\n"
                "  --version                  print the version and exit\n");
    outbox__conf_print_help(fp, OUTBOX_SCOPE_DB | OUTBOX_SCOPE_RELAY | OUTBOX_SCOPE_SINK |
                                    OUTBOX_SCOPE_LOG);
    fprintf(fp, "\nSignals: SIGTERM/SIGINT stop claiming, finish or roll back the batch in flight\n"
                "(up to --shutdown-timeout) and exit 0; a second signal exits at once.\n"
                "\nExample:\n"
                "  DATABASE_URL=postgres://app@127.0.0.1/app OUTBOX_SINK=redis://127.0.0.1:6379 "
                "outbox-relay\n");
}

int main(int argc, char **argv)
{
    char err[1024];
    int migrate = 1;
    /* Strip our own flags before the table-driven parser sees argv. */
    int n = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--no-migrate")) {
            migrate = 0;
        } else if (!strcmp(argv[i], "--version")) {
            printf("outbox-relay %s\n", OUTBOX_VERSION_STR);
            return 0;
        } else {
            argv[n++] = argv[i];
        }
    }
    argc = n;

    int rc;
    outbox_conf_t *conf = outbox__conf_load("outbox-relay", argc, argv, usage, NULL, &rc);
    if (!conf)
        return rc;
    outbox__conf_log(conf, "relay", OUTBOX_SCOPE_DB | OUTBOX_SCOPE_RELAY | OUTBOX_SCOPE_SINK);

    if (migrate) {
        /* The database may still be starting: retry for a while. */
        outbox_store_cfg_t cfg = {.url = outbox__conf_database_url(conf),
                                  .table = outbox__conf_str(conf, "outbox_table"),
                                  .appname = "outbox-relay migrate"};
        outbox_store_t *s = NULL;
        for (int attempt = 0; attempt < 30 && !s; attempt++) {
            if (!(s = outbox__store_open(&cfg, err, sizeof(err)))) {
                outbox__log(OUTBOX_LOG_WARN, "relay", "db_wait", err, NULL);
                sleep(1);
            }
        }
        int applied = 0;
        if (!s || s->ops->migrate(s, &applied, err, sizeof(err))) {
            outbox__log(OUTBOX_LOG_ERROR, "relay", "migrate_failed", err, NULL);
            outbox__store_close(s);
            outbox_conf_destroy(conf);
            return 1;
        }
        outbox__store_close(s);
        char a[16];
        snprintf(a, sizeof(a), "%d", applied);
        outbox__log(OUTBOX_LOG_INFO, "relay", "migrated", "schema up to date", "applied", a,
                    "table", cfg.table, NULL);
    }

    int64_t shutdown_ms = outbox__conf_ms(conf, "shutdown_timeout");
    g_relay = outbox_relay_new(conf, err, sizeof(err));
    if (!g_relay) {
        outbox__log(OUTBOX_LOG_ERROR, "relay", "config_error", err, NULL);
        outbox_conf_destroy(conf);
        return 2;
    }
    outbox__on_stop_signals(on_signal);

    if (outbox_relay_start(g_relay, err, sizeof(err))) {
        outbox__log(OUTBOX_LOG_ERROR, "relay", "start_failed", err, NULL);
        outbox_relay_destroy(g_relay);
        return 1;
    }
    /* Sleep until a signal asks us to stop (or every worker exits). */
    uint64_t batches = 0, trimmed = 0;
    while (!g_signals && outbox_relay_wait(g_relay, 200) == OUTBOX_ERR_TIMEOUT)
        trim_when_quiet(&batches, &trimmed);
    if (!g_signals && outbox_relay_fatal(g_relay)) {
        outbox__log(OUTBOX_LOG_ERROR, "relay", "stopped_on_error", outbox_relay_fatal(g_relay),
                    NULL);
        outbox_relay_destroy(g_relay);
        return 1;
    }
    outbox__log(OUTBOX_LOG_INFO, "relay", "shutting_down",
                "stop requested; finishing batches in flight", NULL);
    if (outbox_relay_wait(g_relay, (int)shutdown_ms) == OUTBOX_ERR_TIMEOUT) {
        outbox__log(
            OUTBOX_LOG_WARN, "relay", "shutdown_timeout",
            "batches still in flight after shutdown_timeout: exiting; their transactions roll back "
            "and the events are published again later",
            NULL);
        _exit(0);
    }
    outbox_relay_destroy(g_relay);
    outbox__log(OUTBOX_LOG_INFO, "relay", "stopped", "relay stopped cleanly", NULL);
    return 0;
}
