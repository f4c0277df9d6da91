/* NATS URL parsing: servers, default port, credentials kept out of the
 * server URLs (so nats.c messages cannot leak them), redaction of the URL
 * in log lines, and clear errors for bad input. No server needed. */
#include <string.h>

#include "core/log.h"
#include "broker/nats.h"
#include "testutil.h"

int main(void)
{
    outbox__nats_url_t u;
    char err[256];

    CHECK(outbox__nats_parse_url("nats://127.0.0.1:4223", &u, err, sizeof(err)) == OUTBOX_OK, "%s",
          err);
    CHECK(u.nservers == 1 && !strcmp(u.servers[0], "nats://127.0.0.1:4223"), "%s", u.servers[0]);
    CHECK(!u.user[0] && !u.password[0], "no credentials");

    CHECK(outbox__nats_parse_url("nats://app:s3cret@n1:4222,n2,nats://n3:5222", &u, err,
                                 sizeof(err)) == OUTBOX_OK,
          "%s", err);
    CHECK(u.nservers == 3, "%d servers", u.nservers);
    CHECK(!strcmp(u.servers[0], "nats://n1:4222") && !strcmp(u.servers[1], "nats://n2:4222") &&
              !strcmp(u.servers[2], "nats://n3:5222"),
          "%s %s %s", u.servers[0], u.servers[1], u.servers[2]);
    CHECK(!strcmp(u.user, "app") && !strcmp(u.password, "s3cret"), "credentials");
    for (int i = 0; i < u.nservers; i++)
        CHECK(!strstr(u.servers[i], "s3cret"), "password in server URL %s", u.servers[i]);

    char shown[256];
    outbox__redact_url("nats://app:s3cret@n1:4222,n2", shown, sizeof(shown));
    CHECK(!strstr(shown, "s3cret"), "redacted: %s", shown);
    outbox__redact_url("nats://:tok3n@n1:4222", shown, sizeof(shown));
    CHECK(!strstr(shown, "tok3n"), "token redacted: %s", shown);
    CHECK(outbox__nats_parse_url("nats://:tok3n@n1", &u, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    CHECK(!u.user[0] && !strcmp(u.password, "tok3n"), "token form");

    CHECK(outbox__nats_parse_url("nats://[::1]:4222", &u, err, sizeof(err)) == OUTBOX_OK, "%s",
          err);
    CHECK(!strcmp(u.servers[0], "nats://[::1]:4222"), "%s", u.servers[0]);

    CHECK(outbox__nats_parse_url("nats://host:99999", &u, err, sizeof(err)) == OUTBOX_ERR_CONFIG,
          "bad port");
    CHECK(strstr(err, "port"), "%s", err);
    CHECK(outbox__nats_parse_url("nats://", &u, err, sizeof(err)) == OUTBOX_ERR_CONFIG, "no host");
    CHECK(outbox__nats_parse_url("nats://a,,b", &u, err, sizeof(err)) == OUTBOX_ERR_CONFIG,
          "empty host");
    CHECK(outbox__nats_parse_url("redis://x", &u, err, sizeof(err)) == OUTBOX_ERR_CONFIG, "scheme");
    CHECK(u.tls == 0, "plain");

    /* TLS: nats+tls:// (and nats.c's own tls://) */
    CHECK(outbox__nats_parse_url("nats+tls://app:s3cret@n1:4443,tls://n2", &u, err, sizeof(err)) ==
              OUTBOX_OK,
          "%s", err);
    CHECK(u.tls == 1 && u.nservers == 2 && !strcmp(u.servers[0], "tls://n1:4443") &&
              !strcmp(u.servers[1], "tls://n2:4222") && !strcmp(u.password, "s3cret"),
          "tls: %d %s %s", u.tls, u.servers[0], u.servers[1]);
    CHECK(outbox__nats_parse_url("tls://n1", &u, err, sizeof(err)) == OUTBOX_OK && u.tls, "tls://");
    outbox__redact_url("nats+tls://app:s3cret@n1:4443", shown, sizeof(shown));
    CHECK(!strstr(shown, "s3cret"), "%s", shown);

    char name[64];
    outbox__nats_stream_name("shop.orders v2", name, sizeof(name));
    CHECK(!strcmp(name, "SHOP_ORDERS_V2"), "%s", name);
    printf("PASS\n");
    return 0;
}
