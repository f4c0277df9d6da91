/* Configuration table: defaults, validation, env overrides, flags,
 * seed-style DB_* fallback, redaction of secrets. */
#include <stdlib.h>
#include <string.h>

#include "core/conf.h"
#include "core/log.h"
#include "core/util.h"
#include "testutil.h"

int main(void)
{
    char err[512];
    outbox_conf_t *c = outbox_conf_new();
    CHECK(c, "conf_new");
    CHECK(outbox__conf_int(c, "workers") == 2, "default workers");
    CHECK(outbox__conf_ms(c, "poll_interval") == 1000, "default poll interval");
    CHECK(outbox__conf_bool(c, "notify") == 0, "default notify");
    CHECK(outbox__conf_ms(c, "poll_min_interval") == 1, "default poll_min_interval (watcher on)");

    /* set: validation with a message naming the property */
    CHECK(outbox_conf_set(c, "workers", "12", err, sizeof(err)) == OUTBOX_OK, "%s", err);
    CHECK(outbox__conf_int(c, "workers") == 12, "workers=12");
    CHECK(outbox_conf_set(c, "workers", "0", err, sizeof(err)) == OUTBOX_ERR_CONFIG,
          "0 workers accepted");
    CHECK(strstr(err, "workers") && strstr(err, "range"), "message: %s", err);
    CHECK(outbox_conf_set(c, "workers", "five", err, sizeof(err)) == OUTBOX_ERR_CONFIG,
          "non-integer accepted");
    CHECK(outbox_conf_set(c, "nope", "1", err, sizeof(err)) == OUTBOX_ERR_CONFIG &&
              strstr(err, "nope"),
          "unknown accepted: %s", err);
    CHECK(outbox_conf_set(c, "dlq_mode", "park", err, sizeof(err)) == OUTBOX_OK, "enum");
    CHECK(outbox_conf_set(c, "dlq_mode", "drop", err, sizeof(err)) == OUTBOX_ERR_CONFIG,
          "bad enum accepted");
    CHECK(outbox_conf_set(c, "notify", "off", err, sizeof(err)) == OUTBOX_OK &&
              !outbox__conf_bool(c, "notify"),
          "bool off");
    CHECK(outbox_conf_set(c, "notify", "maybe", err, sizeof(err)) == OUTBOX_ERR_CONFIG,
          "bad bool accepted");
    CHECK(outbox_conf_set(c, "poll-interval", "250ms", err, sizeof(err)) == OUTBOX_OK, "dash name");
    CHECK(outbox__conf_ms(c, "poll_interval") == 250, "250ms");

    /* durations */
    int64_t ms;
    CHECK(!outbox__parse_duration_ms("1.5s", &ms) && ms == 1500, "1.5s");
    CHECK(!outbox__parse_duration_ms("24h", &ms) && ms == 86400000, "24h");
    CHECK(!outbox__parse_duration_ms("7d", &ms) && ms == 7LL * 86400000, "7d");
    CHECK(!outbox__parse_duration_ms("42", &ms) && ms == 42, "bare ms");
    CHECK(outbox__parse_duration_ms("5 s", &ms) && outbox__parse_duration_ms("-1s", &ms) &&
              outbox__parse_duration_ms("1w", &ms) && outbox__parse_duration_ms("", &ms),
          "bad durations accepted");

    /* environment overrides, including the seed alias OUTBOX_WORKER_INTERVAL */
    setenv("OUTBOX_WORKERS", "7", 1);
    setenv("OUTBOX_WORKER_INTERVAL", "5s", 1);
    outbox_conf_t *e = outbox_conf_new();
    CHECK(outbox_conf_from_env(e, err, sizeof(err)) == OUTBOX_OK, "%s", err);
    CHECK(outbox__conf_int(e, "workers") == 7, "env workers");
    CHECK(outbox__conf_ms(e, "poll_interval") == 5000, "alias OUTBOX_WORKER_INTERVAL");
    setenv("OUTBOX_WORKERS", "lots", 1);
    CHECK(outbox_conf_from_env(e, err, sizeof(err)) == OUTBOX_ERR_CONFIG &&
              strstr(err, "OUTBOX_WORKERS"),
          "bad env names the variable: %s", err);
    unsetenv("OUTBOX_WORKERS");
    outbox_conf_destroy(e);

    /* flags beat env; --no-X for booleans; positional args stop parsing */
    char *argv[] = {"prog",        "--workers", "3",   "--batch-size=50",
                    "--no-notify", "status",    "--x", NULL};
    int argi, help;
    CHECK(outbox_conf_set(c, "notify", "on", err, sizeof(err)) == OUTBOX_OK, "%s", err);
    CHECK(outbox__conf_parse_args(c, 7, argv, &argi, &help, err, sizeof(err)) == OUTBOX_OK, "%s",
          err);
    CHECK(argi == 5 && !help, "argi=%d", argi);
    CHECK(outbox__conf_int(c, "workers") == 3 && outbox__conf_int(c, "batch_size") == 50 &&
              !outbox__conf_bool(c, "notify"),
          "flags not applied");
    char *bad[] = {"prog", "--frobnicate", NULL};
    CHECK(outbox__conf_parse_args(c, 2, bad, &argi, &help, err, sizeof(err)) == OUTBOX_ERR_CONFIG &&
              strstr(err, "--frobnicate"),
          "unknown flag: %s", err);
    char *missing[] = {"prog", "--workers", NULL};
    CHECK(outbox__conf_parse_args(c, 2, missing, &argi, &help, err, sizeof(err)) ==
              OUTBOX_ERR_CONFIG,
          "missing value accepted");
    char *h[] = {"prog", "--help", NULL};
    CHECK(outbox__conf_parse_args(c, 2, h, &argi, &help, err, sizeof(err)) == OUTBOX_OK && help,
          "--help");

    /* DB_* fallback when DATABASE_URL is empty; quoting of odd values */
    outbox_conf_t *d = outbox_conf_new();
    outbox_conf_set(d, "db_host", "db.internal", err, sizeof(err));
    outbox_conf_set(d, "db_password", "p'w d", err, sizeof(err));
    const char *ci = outbox__conf_database_url(d);
    CHECK(strstr(ci, "host='db.internal'") && strstr(ci, "port='5432'") &&
              strstr(ci, "dbname='outbox_db'") && strstr(ci, "password='p\\'w d'"),
          "conninfo: %s", ci);
    outbox_conf_set(d, "database_url", "postgres://u:secret@h/db", err, sizeof(err));
    CHECK(!strcmp(outbox__conf_database_url(d), "postgres://u:secret@h/db"), "database_url wins");
    outbox_conf_destroy(d);

    /* Redaction: URL passwords and conninfo passwords never reach logs. */
    char out[256];
    outbox__redact_url("postgres://app:s3cret@db:5432/x", out, sizeof(out));
    CHECK(!strstr(out, "s3cret") && strstr(out, "app:****@db"), "uri: %s", out);
    outbox__redact_url("host=h password='a b' dbname=x", out, sizeof(out));
    CHECK(!strstr(out, "a b") && strstr(out, "dbname=x"), "conninfo: %s", out);
    outbox__redact_url("amqp://guest:guest@127.0.0.1:5672/", out, sizeof(out));
    CHECK(!strstr(out, ":guest@"), "amqp: %s", out);
    outbox__redact_url("redis://127.0.0.1:6379", out, sizeof(out));
    CHECK(!strcmp(out, "redis://127.0.0.1:6379"), "no password changed: %s", out);
    /* Found by fuzz/fuzz_url.c: every form a parser of ours (or libpq,
     * libcurl) reads a password from is masked. */
    static const char *const leaks[][2] = {
        {"nats://app:pa/ss@n1:4222", "pa/ss"},           /* '/' in a password (base64) */
        {"kafka://app:pa/ss@k1:9092", "pa/ss"},          /* the same, Kafka */
        {"nats://app:p@ssw0rd@n1:4222", "ssw0rd"},       /* the NATS parser takes the last '@' */
        {"redis://s3cretpw@r1:6379", "s3cretpw"},        /* a Redis password without ':' */
        {"https:/app:s3cret@h/hook", "s3cret"},          /* libcurl takes one slash */
        {"host=db password = hunter22 x=1", "hunter22"}, /* libpq: spaces around '=' */
        {"host=db password=a\\ bcdef x=1", "bcdef"},     /* libpq: backslash escape */
        {"host=db password=a&bcdef x=1", "bcdef"},       /* '&' ends a value in a URI only */
        {"host=db sslpassword=k3ypass", "k3ypass"},
        {"postgres://h/db?password=s3cret&sslmode=require", "s3cret"},
    };
    for (size_t i = 0; i < sizeof(leaks) / sizeof(leaks[0]); i++) {
        outbox__redact_url(leaks[i][0], out, sizeof(out));
        CHECK(!strstr(out, leaks[i][1]), "%s shown as %s", leaks[i][0], out);
    }
    outbox__redact_url("postgres://h/db?password=s3cret&sslmode=require", out, sizeof(out));
    CHECK(strstr(out, "&sslmode=require"), "query after the password kept: %s", out);
    /* a cut copy must not show the start of a long password */
    char small[24], lng[256];
    snprintf(lng, sizeof(lng), "amqp://u:%0200d@h/", 7);
    outbox__redact_url(lng, small, sizeof(small));
    CHECK(!strstr(small, "0000"), "cut: %s", small);
    /* "nan" is no duration (it slipped past v < 0: UB converting it) */
    CHECK(outbox_conf_set(c, "poll_interval", "nan", err, sizeof(err)) == OUTBOX_ERR_CONFIG,
          "nan accepted as a duration");
    CHECK(outbox_conf_set(c, "poll_interval", "-nan", err, sizeof(err)) == OUTBOX_ERR_CONFIG,
          "-nan accepted as a duration");

    /* Backoff: within [cap/2, cap], capped at max. */
    for (int a = 1; a < 20; a++) {
        int64_t b = outbox__backoff_ms(a, 100, 5000);
        int64_t cap = 100LL << (a - 1);
        if (cap > 5000)
            cap = 5000;
        CHECK(b >= cap / 2 && b <= cap, "attempt %d: %lld not in [%lld, %lld]", a, (long long)b,
              (long long)cap / 2, (long long)cap);
    }
    outbox_conf_destroy(c);
    outbox_conf_destroy(NULL);
    printf("PASS unit_conf\n");
    return 0;
}
