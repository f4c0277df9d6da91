/* Poison event: after OUTBOX_MAX_ATTEMPTS it moves to the dead-letter table
 * with its error history; later events of its key are held behind it while
 * other keys flow; `outboxctl dlq requeue` puts it back at the head of its
 * key and everything is delivered in order. Park mode: followers are
 * dead-lettered too and come back with the requeue. */
#include <sys/wait.h>

#include "relay_common.h"

static int ctl(const char *ci, const char *a1, const char *a2, const char *a3, char *out,
               size_t out_size)
{
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "DATABASE_URL='%s' %s %s %s %s 2>&1", ci, tu_bin("outboxctl"), a1,
             a2 ? a2 : "", a3 ? a3 : "");
    FILE *p = popen(cmd, "r");
    size_t n = p ? fread(out, 1, out_size - 1, p) : 0;
    out[n] = '\0';
    int st = p ? pclose(p) : -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static outbox_relay_t *start(const char *ci, const char *host, int port, const char *poison,
                             const char *mode)
{
    char err[512];
    outbox_conf_t *conf = relay_conf(ci, host, port);
    conf_set(conf, "max_attempts", "3");
    conf_set(conf, "backoff_base", "20ms");
    conf_set(conf, "backoff_max", "50ms");
    conf_set(conf, "poll_interval", "50ms");
    conf_set(conf, "maintenance_interval", "200ms");
    conf_set(conf, "dlq_mode", mode);
    if (poison)
        conf_set(conf, "fault_poison_type", poison);
    outbox_relay_t *relay = outbox_relay_new(conf, err, sizeof(err));
    CHECK(relay && outbox_relay_start(relay, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    return relay;
}

static void enq(PGconn *c, const char *topic, const char *key, const char *type, int seq, char *id)
{
    char err[512], payload[64];
    snprintf(payload, sizeof(payload), "{\"seq\":%d}", seq);
    PQclear(tu_exec(c, "BEGIN"));
    outbox_event_t ev = {.topic = topic, .type = type, .key = key, .payload = payload};
    CHECK(outbox_enqueue(c, &ev, id, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    PQclear(tu_exec(c, "COMMIT"));
}

static void run(const char *mode)
{
    char name[64];
    snprintf(name, sizeof(name), "poison_%s", mode);
    PGconn *c;
    const char *ci = setup_db(name, &c);
    char host[64], out[8192];
    int port;
    tu_redis_addr(host, sizeof(host), &port);
    redisContext *r = tu_redis_connect(host, port);
    char topic[64];
    snprintf(topic, sizeof(topic), "%s", tu_unique("poison"));

    outbox_relay_t *relay = start(ci, host, port, "Poison", mode);
    char ids[6][OUTBOX_UUID_STRLEN + 1], other[OUTBOX_UUID_STRLEN + 1];
    enq(c, topic, "k0", "Good", 0, ids[0]);
    enq(c, topic, "k0", "Poison", 1, ids[1]);
    enq(c, topic, "k0", "Good", 2, ids[2]);
    enq(c, topic, "k0", "Good", 3, ids[3]);
    enq(c, topic, "k1", "Good", 0, other);

    long long end = tu_now_ms() + 20000;
    while (tu_query_ll(c, "SELECT count(*) FROM outbox_dead_letter") == 0)
        CHECK(tu_now_ms() < end, "poison event never dead-lettered");
    tu_sleep_ms(600);
    enq(c, topic, "k0", "Good", 4, ids[4]); /* arrives after the dead letter */
    enq(c, topic, "k1", "Good", 1, ids[5]); /* other key keeps flowing */
    tu_sleep_ms(800);
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT attempts FROM outbox_dead_letter WHERE id = '%s'", ids[1]);
    CHECK(tu_query_ll(c, sql) == 3, "dead letter attempts != max_attempts");
    snprintf(sql, sizeof(sql),
             "SELECT jsonb_array_length(errors) FROM outbox_dead_letter WHERE id = '%s'", ids[1]);
    CHECK(tu_query_ll(c, sql) == 3, "error history should hold the 3 failures");
    long n = 0, dups = 0;
    entry_t *got = read_stream(r, topic, &n);
    CHECK(n == 3, "before requeue want k0#0, k1#0, k1#1 published, got %ld", n);
    char want[3][OUTBOX_UUID_STRLEN + 1];
    memcpy(want[0], ids[0], sizeof(want[0]));
    memcpy(want[1], other, sizeof(want[1]));
    memcpy(want[2], ids[5], sizeof(want[2]));
    check_all_present(want, 3, got, n, &dups);
    free(got);
    if (!strcmp(mode, "hold")) {
        CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox WHERE key = 'k0'") == 3,
              "followers not held");
        CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox_dead_letter") == 1,
              "hold mode parked followers");
    } else {
        CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox WHERE key = 'k0'") == 0,
              "followers not parked");
        CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox_dead_letter WHERE reason = 'parked'") ==
                  3,
              "want 3 parked followers, got %lld",
              tu_query_ll(c, "SELECT count(*) FROM outbox_dead_letter WHERE reason = 'parked'"));
    }
    CHECK(ctl(ci, "dlq", "list", NULL, out, sizeof(out)) == 0 && strstr(out, ids[1]),
          "dlq list: %s", out);
    CHECK(ctl(ci, "dlq", "show", ids[1], out, sizeof(out)) == 0 &&
              strstr(out, "injected publish failure"),
          "dlq show: %s", out);
    CHECK(ctl(ci, "dlq", "show", "00000000-0000-7000-8000-000000000000", out, sizeof(out)) == 3,
          "show missing id");
    CHECK(ctl(ci, "dlq", "requeue", "not-a-uuid", out, sizeof(out)) == 2,
          "bad id not a usage error");
    CHECK(ctl(ci, "status", NULL, NULL, out, sizeof(out)) == 0 && strstr(out, "dead letters:"),
          "status: %s", out);

    /* The fix ships: restart without the poison, requeue, all in order. */
    outbox_relay_destroy(relay);
    relay = start(ci, host, port, NULL, mode);
    CHECK(ctl(ci, "dlq", "requeue", ids[1], out, sizeof(out)) == 0, "requeue: %s", out);
    wait_drained(c, 20000);
    tu_sleep_ms(300);
    outbox_relay_destroy(relay);
    CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox_dead_letter") == 0, "dead letters left");
    got = read_stream(r, topic, &n);
    int last = -1;
    for (long i = 0; i < n; i++) {
        if (strcmp(got[i].key, "k0"))
            continue;
        CHECK(got[i].seq == last + 1, "k0 out of order after requeue: %d after %d", got[i].seq,
              last);
        last = got[i].seq;
    }
    CHECK(last == 4, "k0 incomplete: last position %d", last);
    free(got);

    /* purge */
    relay = start(ci, host, port, "Poison", mode);
    char pid[OUTBOX_UUID_STRLEN + 1];
    enq(c, topic, "k9", "Poison", 0, pid);
    end = tu_now_ms() + 20000;
    while (tu_query_ll(c, "SELECT count(*) FROM outbox_dead_letter") == 0)
        CHECK(tu_now_ms() < end, "second poison never dead-lettered");
    outbox_relay_destroy(relay);
    CHECK(ctl(ci, "dlq", "purge", pid, out, sizeof(out)) == 0 && strstr(out, "purged: 1"),
          "purge: %s", out);
    CHECK(tu_query_ll(c, "SELECT count(*) FROM outbox_dead_letter") == 0, "purge left rows");
    redisFree(r);
    PQfinish(c);
}

int main(void)
{
    run("hold");
    run("park");
    printf("PASS poison_dead_letter_requeue: hold and park modes; poison dead-lettered after 3 "
           "attempts with its "
           "history, key held, other keys flowed, requeue delivered in order, purge removed\n");
    return 0;
}
