/* outbox-demo: a tiny producer + embedded relay + stream reader, to watch
 * events flow: every interval it commits an order row and its event in one
 * transaction; the relay publishes it to Redis; the reader prints it. */
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/conf.h"
#include "core/log.h"
#include "outbox/outbox.h"
#include "store/pg/pg.h"

static volatile sig_atomic_t stop;
static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void usage(FILE *fp)
{
    fprintf(fp, "Usage: outbox-demo [OPTIONS]\n\nCommits a demo order and its event every second "
                "and shows it arrive in "
                "Redis.\n\n");
    outbox__conf_print_help(fp, OUTBOX_SCOPE_DB | OUTBOX_SCOPE_RELAY | OUTBOX_SCOPE_SINK);
}

int main(int argc, char **argv)
{
    char err[1024];
    int rc;
    outbox_conf_t *conf = outbox__conf_load("outbox-demo", argc, argv, usage, NULL, &rc);
    if (!conf)
        return rc;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    PGconn *c =
        outbox__pg_connect(outbox__conf_database_url(conf), "outbox-demo", err, sizeof(err));
    if (!c || outbox_migrate(c, NULL, err, sizeof(err))) {
        fprintf(stderr, "outbox-demo: %s\n", err);
        return 1;
    }
    outbox__pg_exec(c,
                    "CREATE TABLE IF NOT EXISTS demo_orders (id uuid PRIMARY KEY, amount int, "
                    "created_at timestamptz DEFAULT now())",
                    err, sizeof(err));
    char host[256];
    snprintf(host, sizeof(host), "%s", outbox__conf_str(conf, "redis_addr"));
    char *colon = strrchr(host, ':');
    int port = colon ? atoi(colon + 1) : 6379;
    if (colon)
        *colon = '\0';
    outbox_relay_t *relay = outbox_relay_new(outbox_conf_dup(conf), err, sizeof(err));
    if (!relay || outbox_relay_start(relay, err, sizeof(err))) {
        fprintf(stderr, "outbox-demo: %s\n", err);
        return 1;
    }
    redisContext *r = redisConnect(host, port);
    char last[64] = "$";
    for (int i = 1; !stop; i++) {
        char id[OUTBOX_UUID_STRLEN + 1], payload[256];
        outbox_uuid_v7(id);
        snprintf(payload, sizeof(payload), "{\"order_id\":\"%s\",\"amount\":%d}", id, 1000 + i);
        const char *p[2] = {id, payload + 0};
        outbox__pg_exec(c, "BEGIN", err, sizeof(err));
        char amount[16];
        snprintf(amount, sizeof(amount), "%d", 1000 + i);
        p[1] = amount;
        PQclear(PQexecParams(c, "INSERT INTO demo_orders (id, amount) VALUES ($1::uuid, $2::int)",
                             2, NULL, p, NULL, NULL, 0));
        outbox_event_t ev = {
            .id = id, .topic = "orders", .type = "OrderCreated", .key = id, .payload = payload};
        if (outbox_enqueue(c, &ev, NULL, err, sizeof(err)) != OUTBOX_OK) {
            fprintf(stderr, "outbox-demo: %s\n", err);
            outbox__pg_exec(c, "ROLLBACK", err, sizeof(err));
        } else {
            outbox__pg_exec(c, "COMMIT", err, sizeof(err));
            printf("[producer] committed order %s and its OrderCreated event\n", id);
        }
        fflush(stdout);
        redisReply *rep =
            r ? redisCommand(r, "XREAD COUNT 10 BLOCK 1000 STREAMS orders %s", last) : NULL;
        if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements) {
            redisReply *entries = rep->element[0]->element[1];
            for (size_t k = 0; k < entries->elements; k++) {
                redisReply *e = entries->element[k];
                snprintf(last, sizeof(last), "%s", e->element[0]->str);
                redisReply *f = e->element[1];
                for (size_t j = 0; j + 1 < f->elements; j += 2)
                    if (!strcmp(f->element[j]->str, "event"))
                        printf("[consumer] stream orders %s: %s\n", last, f->element[j + 1]->str);
            }
            fflush(stdout);
        }
        if (rep)
            freeReplyObject(rep);
    }
    outbox_relay_destroy(relay);
    if (r)
        redisFree(r);
    PQfinish(c);
    outbox_conf_destroy(conf);
    return 0;
}
