/* outboxctl migrate | status */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/util.h"
#include "ctl.h"

int ctl_migrate(outbox_store_t *s, const outbox_conf_t *conf, int argc, char **argv)
{
    char err[1024];
    int applied = 0;
    if (argc > 0) {
        fprintf(stderr, "outboxctl: migrate takes no arguments\n");
        return 2;
    }
    outbox_err_t e = s->ops->migrate(s, &applied, err, sizeof(err));
    if (e)
        return ctl_fail(e, "migrate", err);
    printf("migrations applied: %d (schema up to date; outbox table \"%s\")\n", applied,
           s->cfg.table);
    return 0;
}

/* Text between quotes in JSON output. */
static void json_str(FILE *out, const char *p)
{
    for (; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if ((unsigned char)*p < 0x20)
            fprintf(out, "\\u%04x", (unsigned char)*p);
        else
            fputc(*p, out);
    }
}

typedef struct status_out_s {
    FILE *out;
    int json, n, held;
} status_out_t;

static void print_topic(void *arg, const outbox_topic_stats_t *t)
{
    status_out_t *o = arg;
    FILE *out = o->out;
    if (o->json) {
        fprintf(out, "%s{\"topic\":\"", o->n ? "," : "");
        json_str(out, t->topic);
        fprintf(out, "\",\"pending\":%lld,\"retrying\":%lld,\"oldest_pending_age_seconds\":%.3f}",
                t->pending, t->retrying, t->oldest_age_s);
    } else {
        fprintf(out, "%-32s %10lld %10lld %12.3f\n", t->topic, t->pending, t->retrying,
                t->oldest_age_s);
    }
    o->n++;
}

/* Lane holders are collected first: the text output shows their total above them. */
typedef struct holders_s {
    outbox__buf_t text, json;
    int n, held;
} holders_t;

static void add_holder(void *arg, const outbox_lane_holder_t *h)
{
    holders_t *o = arg;
    outbox__buf_printf(&o->text, "%-48s %8d %6d  %s\n", h->holder, h->pid, h->count, h->lanes);
    outbox__buf_printf(&o->json, "%s{\"holder\":\"", o->n ? "," : "");
    for (const char *p = h->holder; *p; p++)
        if (*p == '"' || *p == '\\')
            outbox__buf_printf(&o->json, "\\%c", *p);
        else if ((unsigned char)*p >= 0x20)
            outbox__buf_add(&o->json, p, 1);
    outbox__buf_printf(&o->json, "\",\"pid\":%d,\"count\":%d,\"lanes\":[%s]}", h->pid, h->count,
                       h->lanes);
    o->n++;
    o->held += h->count;
}

int ctl_status_once(outbox_store_t *s, int json, FILE *out)
{
    char err[1024];
    outbox_store_stats_t st;
    outbox_err_t e = s->ops->stats(s, &st, err, sizeof(err));
    if (e)
        return ctl_fail(e, "status (did you run 'outboxctl migrate'?)", err);
    status_out_t o = {.out = out, .json = json};
    if (json)
        fprintf(out,
                "{\"table\":\"%s\",\"pending\":%lld,\"oldest_pending_age_seconds\":%.3f,"
                "\"retrying\":%lld,"
                "\"dead_letters\":%lld,\"processed\":%lld,\"topics\":[",
                s->cfg.table, st.pending, st.oldest_age_s, st.retrying, st.dead, st.processed);
    else
        fprintf(
            out,
            "outbox table:         %s\npending events:       %lld\noldest pending age:   %.3fs\n"
            "retrying:             %lld\ndead letters:         %lld\nprocessed (kept):     %lld\n"
            "\n%-32s %10s %10s %12s\n",
            s->cfg.table, st.pending, st.oldest_age_s, st.retrying, st.dead, st.processed, "TOPIC",
            "PENDING", "RETRYING", "OLDEST(s)");
    if ((e = s->ops->topic_stats(s, print_topic, &o, err, sizeof(err))))
        return ctl_fail(e, "status", err);
    if (!json && !o.n)
        fprintf(out, "(no pending events)\n");
    if (json)
        fprintf(out, "],\"lanes\":[");
    else
        fprintf(out, "\n");
    holders_t h = {0};
    e = s->ops->lane_holders(s, add_holder, &h, err, sizeof(err));
    if (!e && (h.text.broken || h.json.broken))
        e = outbox__err(OUTBOX_ERR_NOMEM, err, sizeof(err), "out of memory");
    if (!e && json)
        fprintf(out, "%s]}\n", h.json.p ? h.json.p : "");
    else if (!e)
        fprintf(out, "lanes held: %d of %d\n%-48s %8s %6s  %s\n%s%s", h.held, OUTBOX_LANES,
                "HOLDER", "PID", "LANES", "LIST", h.text.p ? h.text.p : "",
                h.n ? "" : "(no relay is running)\n");
    free(h.text.p);
    free(h.json.p);
    if (e)
        return ctl_fail(e, "status", err);
    return 0;
}

int ctl_status(outbox_store_t *s, const outbox_conf_t *conf, int argc, char **argv)
{
    int json = 0, watch = 0;
    int64_t interval_ms = 2000;
    long count = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if (!strcmp(argv[i], "--watch") || !strcmp(argv[i], "-w")) {
            watch = 1;
        } else if (!strcmp(argv[i], "--interval") && i + 1 < argc) {
            if (outbox__parse_duration_ms(argv[++i], &interval_ms) || interval_ms < 100) {
                fprintf(stderr, "outboxctl: status: --interval wants a duration of at least "
                                "100ms (e.g. 1s)\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "--count") && i + 1 < argc) {
            if ((count = atol(argv[++i])) <= 0) {
                fprintf(stderr, "outboxctl: status: --count must be a positive integer\n");
                return 2;
            }
        } else {
            fprintf(stderr,
                    "outboxctl: status: unexpected argument \"%s\" (see outboxctl status "
                    "--help)\n",
                    argv[i]);
            return 2;
        }
    }
    if (!s->ops->stats || !s->ops->topic_stats || !s->ops->lane_holders)
        return ctl_fail(OUTBOX_ERR_UNSUPPORTED, "status", "not supported by this store");
    if (watch)
        return ctl_watch(s, json, interval_ms, count);
    return ctl_status_once(s, json, stdout);
}
