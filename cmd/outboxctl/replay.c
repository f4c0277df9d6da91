/* outboxctl replay: re-publishes already delivered events with their
 * original message ids, so anyone can watch consumers skip them.
 *
 * Delivered rows are deleted from the outbox, so the broker is the record of
 * what was delivered: replay reads the last N entries of a Redis stream and
 * appends them again unchanged (same id, same CloudEvents document). */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/conf.h"
#include "broker/redis.h"
#include "ctl.h"

int ctl_replay(outbox_store_t *s, const outbox_conf_t *conf, int argc, char **argv)
{
    (void)s;
    const char *topic = "orders", *sink = NULL;
    int count = 10;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--topic") && i + 1 < argc)
            topic = argv[++i];
        else if (!strcmp(argv[i], "--sink") && i + 1 < argc)
            sink = argv[++i];
        else if (!strcmp(argv[i], "--count") && i + 1 < argc)
            count = atoi(argv[++i]);
        else {
            fprintf(stderr, "outboxctl: replay: unexpected argument \"%s\"\n", argv[i]);
            return 2;
        }
    }
    if (count <= 0) {
        fprintf(stderr, "outboxctl: replay: --count must be a positive integer\n");
        return 2;
    }
    char url[512];
    if (!sink || !*sink)
        snprintf(url, sizeof(url), "redis://%s", outbox__conf_str(conf, "redis_addr"));
    else
        snprintf(url, sizeof(url), "%s", sink);
    if (strncmp(url, "redis://", 8)) {
        fprintf(stderr,
                "outboxctl: replay reads Redis streams: --sink must be "
                "redis://[:password@]host:port%s\n",
                strncmp(url, "redis+pubsub:", 13) ? "" : " (Pub/Sub keeps no history to replay)");
        return 2;
    }
    outbox__redis_url_t u;
    char err[256];
    if (outbox__redis_url_parse(url, &u, err, sizeof(err)) != OUTBOX_OK) {
        fprintf(stderr, "outboxctl: replay: %s\n", err);
        return 2;
    }
    if (!u.password[0])
        snprintf(u.password, sizeof(u.password), "%s", outbox__conf_str(conf, "redis_password"));
    redisContext *rc = outbox__redis_connect(&u, 0, err, sizeof(err));
    if (!rc) {
        fprintf(stderr, "outboxctl: %s\n", err);
        return 1;
    }
    redisReply *r = redisCommand(rc, "XREVRANGE %s + - COUNT %d", topic, count);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        fprintf(stderr, "outboxctl: reading stream %s: %s\n", topic,
                r && r->str ? r->str : rc->errstr);
        if (r)
            freeReplyObject(r);
        redisFree(rc);
        return 1;
    }
    int replayed = 0;
    /* XREVRANGE is newest first: append oldest first to keep order. */
    for (size_t i = r->elements; i-- > 0;) {
        redisReply *entry = r->element[i];
        if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2)
            continue;
        redisReply *fields = entry->element[1];
        const char *av[64];
        size_t al[64];
        int ac = 0;
        av[ac] = "XADD", al[ac++] = 4;
        av[ac] = topic, al[ac++] = strlen(topic);
        av[ac] = "*", al[ac++] = 1;
        const char *id = "?";
        for (size_t f = 0; f + 1 < fields->elements && ac + 2 < 64; f += 2) {
            av[ac] = fields->element[f]->str, al[ac++] = fields->element[f]->len;
            av[ac] = fields->element[f + 1]->str, al[ac++] = fields->element[f + 1]->len;
            if (!strcmp(fields->element[f]->str, "id"))
                id = fields->element[f + 1]->str;
        }
        redisReply *x = redisCommandArgv(rc, ac, av, al);
        if (!x || x->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "outboxctl: XADD failed: %s\n", x && x->str ? x->str : rc->errstr);
            if (x)
                freeReplyObject(x);
            break;
        }
        freeReplyObject(x);
        printf("replayed message %s\n", id);
        replayed++;
    }
    freeReplyObject(r);
    redisFree(rc);
    printf("replayed %d message%s to stream %s (same message ids: consumers should skip them)\n",
           replayed, replayed == 1 ? "" : "s", topic);
    return 0;
}
