/* security_nats_tls: NATS over TLS with the server verified.
 *
 * A nats-server (-js --tls) with a certificate for "localhost" (DNS name
 * only) signed by a self-signed CA made here with openssl. The relay
 * publishes to nats+tls://localhost:PORT and a consumer reads the events
 * back, both with nats_ca_file = that CA: events flow. Refused, each with a
 * broker error that says why: another self-signed CA, the address
 * 127.0.0.1 (the certificate does not name it: the host name is checked),
 * and plain nats:// (nats.c follows the server's demand for TLS but
 * verifies against the system store only: nats_ca_file applies to
 * nats+tls://). Skips without nats-server or openssl. */
#include "../nats/natstest.h"
#include "outbox/consumer.h"

static char dir[128];

static void cleanup(void)
{
    if (dir[0] && !strncmp(dir, "/tmp/outbox-natstls.", 20)) {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        (void)!system(cmd);
    }
}

static void sh(const char *cmd)
{
    CHECK(system(cmd) == 0, "failed: %s", cmd);
}

static outbox_err_t count_handler(const outbox_delivery_t *d, void *opaque)
{
    (void)d;
    (*(int *)opaque)++;
    return OUTBOX_OK;
}

/* Polls a consumer of url (CA ca) until it gets want events or an error
 * that stays; returns the count, with the last error in err. */
static int consume(const char *url, const char *ca, int want, char *err, size_t err_size)
{
    outbox_conf_t *conf = outbox_conf_new();
    tu_conf_set(conf, "nats_ca_file", ca);
    int got = 0;
    outbox_consumer_t *c = outbox_consumer_new(
        url, "tls-group", "tls-1", (const char *const[]){"secure"}, 1, conf, err, err_size);
    CHECK(c, "consumer_new: %s", err);
    err[0] = '\0';
    for (int i = 0; i < 30 && got < want; i++) {
        outbox_err_t e = outbox_consumer_poll(c, 200, count_handler, &got);
        if (e != OUTBOX_OK) {
            snprintf(err, err_size, "%s", outbox_consumer_errstr(c));
            if (i >= 5)
                break;
        }
    }
    outbox_consumer_destroy(c);
    outbox_conf_destroy(conf);
    return got;
}

int main(void)
{
    tn_require();
    if (system("openssl version >/dev/null 2>&1") != 0)
        tu_skip("openssl is not installed");
    snprintf(dir, sizeof(dir), "/tmp/outbox-natstls.XXXXXX");
    CHECK(mkdtemp(dir), "mkdtemp");
    atexit(cleanup);
#define Q " >/dev/null 2>&1"
    char cmd[2048];
    snprintf(cmd, sizeof(cmd),
             "cd %s && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=nats test CA'"
             " -keyout ca.key -out ca.crt" Q
             " && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=other CA'"
             " -keyout other.key -out other-ca.crt" Q
             " && openssl req -newkey rsa:2048 -nodes -subj '/CN=localhost' -keyout server.key"
             " -out server.csr" Q
             " && printf 'subjectAltName=DNS:localhost\\nextendedKeyUsage=serverAuth\\n' > ext"
             " && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial"
             " -days 2 -extfile ext -out server.crt" Q,
             dir);
    sh(cmd);
    char ca[256], other[256], cert[256], key[256], store[256], log[256];
    snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
    snprintf(other, sizeof(other), "%s/other-ca.crt", dir);
    snprintf(cert, sizeof(cert), "%s/server.crt", dir);
    snprintf(key, sizeof(key), "%s/server.key", dir);
    snprintf(store, sizeof(store), "%s/js", dir);
    snprintf(log, sizeof(log), "%s/nats.log", dir);

    int port = tu_free_port();
    char p[16];
    snprintf(p, sizeof(p), "%d", port);
    char *argv[] = {"nats-server", "-js",   "-a",        "127.0.0.1", "-p",       p,   "-sd",
                    store,         "--tls", "--tlscert", cert,        "--tlskey", key, NULL};
    pid_t srv = tu_spawn(argv, NULL, log);
    tn_track(srv, "", 1);

    const char *conninfo;
    PGconn *db = tn_db("security_nats_tls", &conninfo);
    char good[128], by_ip[128], plain[128], err[1024];
    snprintf(good, sizeof(good), "nats+tls://localhost:%d", port);
    snprintf(by_ip, sizeof(by_ip), "nats+tls://127.0.0.1:%d", port);
    snprintf(plain, sizeof(plain), "nats://localhost:%d", port);

    /* the server may still be starting: wait until a verified consumer connects */
    long long end = tu_now_ms() + 15000;
    do {
        consume(good, ca, 0, err, sizeof(err));
    } while (err[0] && tu_now_ms() < end && (tu_sleep_ms(200), 1));
    CHECK(!err[0], "no TLS connection to nats-server: %s (log %s)", err, log);

    outbox_relay_t *relay =
        tn_relay(conninfo, good, (const char *const[]){"nats_ca_file", ca, NULL});
    for (int i = 0; i < 10; i++)
        tn_enqueue(db, "secure", "Sealed", "k", "{\"v\":1}", NULL, NULL, NULL, NULL);
    CHECK(tn_wait_drained(db, 20000) == 0, "relay did not publish over TLS");
    outbox_relay_destroy(relay);
    int got = consume(good, ca, 10, err, sizeof(err));
    CHECK(got == 10, "consumer over TLS got %d of 10: %s", got, err);
    printf("nats+tls:// with the CA: 10 events published and consumed\n");

    got = consume(good, other, 1, err, sizeof(err));
    CHECK(got == 0 && err[0], "another CA was accepted (%d events)", got);
    printf("another CA    -> %s\n", err);
    got = consume(by_ip, ca, 1, err, sizeof(err));
    CHECK(got == 0 && err[0], "a host the certificate does not name was accepted (%d)", got);
    printf("wrong host    -> %s\n", err);
    got = consume(plain, ca, 1, err, sizeof(err));
    CHECK(got == 0 && err[0], "plain nats:// to a TLS server was accepted (%d)", got);
    printf("plain nats:// -> %s\n", err);

    PQfinish(db);
    tn_server_t t = {.pid = srv};
    tn_cleanup(&t); /* SIGTERM; the store is under dir, removed at exit */
    printf("PASS security_nats_tls\n");
    return 0;
}
