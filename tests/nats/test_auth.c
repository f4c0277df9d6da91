/* NATS with user/password authentication: the relay delivers through
 * nats://user:pass@host:port, a wrong password is a broker error whose
 * message names the server but not the password, and no log line of the
 * relay, the sink or the consumer ever contains the password. */
#include "natstest.h"
#include "outbox/consumer.h"

#define SECRET "s3cret-Pa55"

static outbox_err_t count_handler(const outbox_delivery_t *d, void *opaque)
{
    (*(int *)opaque)++;
    return OUTBOX_OK;
}

int main(void)
{
    tn_require();
    const char *conninfo;
    PGconn *db = tn_db("nats_auth", &conninfo);

    /* nats-server with a user; tn_start's readiness probe has no
     * credentials, so start it by hand here. */
    tn_server_t srv = {0};
    srv.port = tu_free_port();
    snprintf(srv.dir, sizeof(srv.dir), "/tmp/outbox-nats.XXXXXX");
    CHECK(mkdtemp(srv.dir), "mkdtemp");
    snprintf(srv.log, sizeof(srv.log), "%s.log", srv.dir);
    char port[16];
    snprintf(port, sizeof(port), "%d", srv.port);
    char *argv[] = {"nats-server", "-js",    "-a",  "127.0.0.1", "-p",   port, "-sd",
                    srv.dir,       "--user", "app", "--pass",    SECRET, NULL};
    srv.pid = tu_spawn(argv, NULL, srv.log);
    tn_track(srv.pid, srv.dir, 1);
    char good[128], bad[128];
    snprintf(good, sizeof(good), "nats://app:%s@127.0.0.1:%d", SECRET, srv.port);
    snprintf(bad, sizeof(bad), "nats://app:wrong-%s@127.0.0.1:%d", SECRET, srv.port);
    snprintf(srv.url, sizeof(srv.url), "nats://127.0.0.1:%d", srv.port);

    char logpath[200];
    snprintf(logpath, sizeof(logpath), "%s.relay.log", srv.dir);
    fflush(stderr);
    int saved_err = dup(2);
    CHECK(freopen(logpath, "w", stderr), "freopen");

    /* wrong password: the sink reports a broker error without the secret */
    outbox_conf_t *conf = outbox_conf_new();
    char err[512];
    outbox_consumer_t *bc = NULL;
    int got = 0;
    long long end = tu_now_ms() + 10000;
    outbox_err_t e = OUTBOX_ERR_BROKER;
    while (tu_now_ms() < end) { /* the server may still be starting */
        outbox_consumer_destroy(bc);
        bc = outbox_consumer_new(bad, "g", "g-1", (const char *const[]){"secure"}, 1, conf, err,
                                 sizeof(err));
        CHECK(bc, "consumer_new: %s", err);
        e = outbox_consumer_poll(bc, 100, count_handler, &got);
        if (strstr(outbox_consumer_errstr(bc), "uthoriz"))
            break;
        tu_sleep_ms(100);
    }
    CHECK(e == OUTBOX_ERR_BROKER, "wrong password should be a broker error");
    char bad_msg[512];
    snprintf(bad_msg, sizeof(bad_msg), "%s", outbox_consumer_errstr(bc));
    outbox_consumer_destroy(bc);

    /* right password: relay delivers, consumer reads */
    outbox_relay_t *relay =
        tn_relay(conninfo, good, (const char *const[]){"log_level", "debug", NULL});
    for (int i = 0; i < 20; i++)
        tn_enqueue(db, "secure", "Thing", "k", "{\"v\":1}", NULL, NULL, NULL, NULL);
    int drained = tn_wait_drained(db, 20000);
    outbox_relay_destroy(relay);
    outbox_consumer_t *c = outbox_consumer_new(good, "g", "g-1", (const char *const[]){"secure"}, 1,
                                               conf, err, sizeof(err));
    CHECK(c, "consumer_new: %s", err);
    for (int i = 0; i < 50 && got < 20; i++)
        outbox_consumer_poll(c, 200, count_handler, &got);
    outbox_consumer_destroy(c);
    outbox_conf_destroy(conf);

    fflush(stderr);
    dup2(saved_err, 2);
    close(saved_err);
    CHECK(drained == 0, "relay did not deliver with credentials");
    CHECK(got == 20, "consumer got %d of 20", got);
    printf("wrong password -> %s\n", bad_msg);
    CHECK(!strstr(bad_msg, SECRET), "error message contains the password");
    FILE *f = fopen(logpath, "r");
    CHECK(f, "log");
    char line[4096];
    int lines = 0;
    while (fgets(line, sizeof(line), f)) {
        lines++;
        CHECK(!strstr(line, SECRET), "password in a log line: %s", line);
    }
    fclose(f);
    unlink(logpath);
    printf("%d log lines (debug level), none with the password; 20 events relayed and consumed\n",
           lines);

    PQfinish(db);
    tn_cleanup(&srv);
    printf("PASS\n");
    return 0;
}
