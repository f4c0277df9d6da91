/* security_redact: no password reaches a log line through libpq's messages
 * or a logged conninfo. outbox__pg_connect is given DSNs libpq refuses in
 * ways that make it quote the conninfo (a URI it cannot parse is echoed
 * whole), DSNs whose server is not there, and passwords with the characters
 * people type raw ('@', '/', spaces, quotes); errstr must never hold the
 * password. outbox__redact_url and outbox__pg_redact are checked directly,
 * and the configuration dump (what services log at start) too. No server is
 * needed: port 1 on 127.0.0.1 refuses at once. Also: rediss:// is refused
 * with its reason (Debian 12's hiredis has no TLS). */
#include <stdio.h>
#include <string.h>

#include "core/conf.h"
#include "core/log.h"
#include "core/redis_url.h"
#include "store/pg/pg.h"
#include "testutil.h"

#define PW "Pg-S3cret-9f2c"

static void no_leak(const char *where, const char *text, const char *secret)
{
    CHECK(!strstr(text, secret), "%s leaks the password \"%s\": %s", where, secret, text);
}

static void connect_fails_quietly(const char *dsn, const char *secret)
{
    char err[1024] = "";
    PGconn *c = outbox__pg_connect(dsn, "security_redact", err, sizeof(err));
    CHECK(!c, "connected with %s?", dsn);
    CHECK(err[0], "no error text for %s", dsn);
    no_leak("outbox__pg_connect's error", err, secret);
    /* and the error still says something useful */
    CHECK(strstr(err, "cannot connect to PostgreSQL"), "error without context: %s", err);
    printf("ok  %-70.70s -> %s\n", dsn, err);
}

int main(void)
{
    /* libpq quotes the whole URI in this message */
    connect_fails_quietly("postgresql://app:" PW "@[::1/db", PW);
    connect_fails_quietly("postgresql://app:" PW "@[]:5432/db", PW);
    /* percent-encoded password, echoed raw */
    connect_fails_quietly("postgresql://app:Pg%40S3cret%2F9f2c@[::1/db", "Pg%40S3cret%2F9f2c");
    connect_fails_quietly("postgresql://app:Pg%40S3cret%2F9f2c@[::1/db", "Pg@S3cret/9f2c");
    /* server not there */
    connect_fails_quietly("postgresql://app:" PW "@127.0.0.1:1/db", PW);
    connect_fails_quietly("host=127.0.0.1 port=1 user=app password=" PW " dbname=db", PW);
    connect_fails_quietly("host=127.0.0.1 port=1 user=app password = '" PW " x' dbname=db", PW);
    /* refused options */
    connect_fails_quietly("postgresql://app:" PW "@127.0.0.1:1/db?sslmode=bogus", PW);
    connect_fails_quietly("postgresql://app:" PW "@127.0.0.1:5432:9/db", PW);
    connect_fails_quietly("host=127.0.0.1 password=" PW " junk", PW);
    connect_fails_quietly("host=127.0.0.1 password='" PW, PW);

    /* the redaction helpers themselves */
    char out[1024];
    const char *urls[] = {"postgresql://app:" PW "@db:5432/x",
                          "postgresql://app:" PW "@db/x?sslmode=verify-full",
                          "amqp://guest:" PW "@127.0.0.1:5672/",
                          "nats://:" PW "@127.0.0.1:4222",
                          "host=h password=" PW " dbname=x",
                          "host=h password='" PW " with space' dbname=x",
                          "host=h password = " PW " dbname=x",
                          "host=h password\t=\t'" PW "' dbname=x",
                          "in URI: \"postgresql://app:" PW "@[::1/db\"",
                          "redis://:" PW "@127.0.0.1:6379/0",
                          NULL};
    for (const char *const *u = urls; *u; u++) {
        outbox__redact_url(*u, out, sizeof(out));
        no_leak("outbox__redact_url", out, PW);
        CHECK(strstr(out, "****"), "nothing masked in %s -> %s", *u, out);
    }
    /* a raw '@' or '/' in a URI password (invalid, but typed) is masked whole */
    outbox__redact_url("postgresql://app:p@ss/w0rd-Xy@db:5432/x", out, sizeof(out));
    no_leak("outbox__redact_url", out, "w0rd-Xy");
    no_leak("outbox__redact_url", out, "ss/w0rd");
    /* a message that quotes the password some other way */
    outbox__pg_redact("FATAL: role said " PW " twice: " PW, "host=h password=" PW, NULL, out,
                      sizeof(out));
    no_leak("outbox__pg_redact", out, PW);
    outbox__pg_redact("echo: ab" PW "cd", NULL, PW, out, sizeof(out));
    CHECK(!strcmp(out, "echo: ab****cd"), "masked as %s", out);
    outbox__pg_redact("short pw: xyz!", "postgresql://u:xyz@h/d", NULL, out, sizeof(out));
    no_leak("outbox__pg_redact", out, "xyz");

    /* the configuration dump services log at start */
    outbox_conf_t *conf = outbox_conf_new();
    char err[256];
    CHECK(!outbox_conf_set(conf, "database_url", "host=h password = '" PW "' dbname=x", err,
                           sizeof(err)),
          "%s", err);
    CHECK(!outbox_conf_set(conf, "db_password", PW, err, sizeof(err)), "%s", err);
    CHECK(!outbox_conf_set(conf, "sink", "amqp://u:" PW "@h:5672/", err, sizeof(err)), "%s", err);
    CHECK(!outbox_conf_set(conf, "consumer_source", "redis://:" PW "@h:1", err, sizeof(err)), "%s",
          err);
    CHECK(!outbox_conf_set(conf, "search_database_url", "postgresql://u:" PW "@h/s", err,
                           sizeof(err)),
          "%s", err);
    int n = 0;
    const outbox_conf_prop_t *props = outbox__conf_props(&n);
    for (int i = 0; i < n; i++)
        if (props[i].secret == 1 && props[i].type == OUTBOX_CT_STR &&
            strcmp(props[i].name, "kafka_properties"))
            CHECK(!outbox_conf_set(conf, props[i].name, PW, err, sizeof(err)), "%s", err);
    char *dump = outbox_conf_dump(conf);
    no_leak("outbox_conf_dump", dump, PW);
    free(dump);
    outbox_conf_destroy(conf);
    /* rediss:// is refused with the reason (no TLS in this hiredis), and
     * the refusal does not echo the URL's password */
    outbox__redis_url_t ru;
    CHECK(outbox__redis_url_parse("rediss://:" PW "@h:6380", &ru, err, sizeof(err)) ==
              OUTBOX_ERR_CONFIG,
          "rediss:// accepted");
    CHECK(strstr(err, "not supported") && strstr(err, "TLS"), "rediss:// error: %s", err);
    no_leak("the rediss:// error", err, PW);
    printf("PASS security_redact\n");
    return 0;
}
