#!/bin/sh
# Every SQL statement is parameterised (docs/SECURITY.md). Runs
# sql_param_scan.py over src/, services/ and cmd/ with the allowlist of the
# sites that must splice in an identifier, and first proves the scanner
# catches the ways a value gets into SQL text (bad samples must fail, a clean
# sample must pass, a stale allowlist line must fail).
# Usage: sql_param_check.sh SOURCE_DIR
set -eu
SRC=$1
HERE="$SRC/tests/security"
SCAN="python3 $HERE/sql_param_scan.py"
command -v python3 >/dev/null 2>&1 || { echo "SKIP: python3 is not installed"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

cat >"$T/bad.c" <<'C'
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>
void by_format(PGconn *c, const char *id)
{
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT * FROM orders WHERE id = '%s'", id);
    PQclear(PQexec(c, sql));
}
void by_concat(PGconn *c, const char *email)
{
    char sql[256];
    strcpy(sql, "DELETE FROM users WHERE email = '");
    strcat(sql, email);
    strcat(sql, "'");
    PQclear(PQexec(c, sql));
}
void by_lower_case(PGconn *c, const char *name)
{
    char q[256];
    snprintf(q, sizeof(q),
             "select id from users"
             " where name = '%s'",
             name);
    PQsendQuery(c, q);
}
void by_pri_macro(PGconn *c, int64_t id)
{
    char q[128];
    snprintf(q, sizeof(q), "UPDATE t SET x = 1 WHERE id = %" PRId64, id);
    PQclear(PQexecParams(c, q, 0, NULL, NULL, NULL, NULL, 0));
}
void by_buf(outbox__buf_t *b, int n)
{
    outbox__buf_printf(b, "INSERT INTO t (n) VALUES (%d)", n);
}
static const char *tmpl = "UPDATE {TABLE} SET done = true WHERE id = $1";
C
cat >"$T/good.c" <<'C'
#include <libpq-fe.h>
#include <stdio.h>
void good(PGconn *c, const char *id, char *err, size_t n)
{
    const char *p[1] = {id};
    PGresult *r = PQexecParams(c, "SELECT * FROM orders WHERE id = $1", 1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        snprintf(err, n, "COMMIT failed: %s", PQresultErrorMessage(r));
    snprintf(err, n, "cannot listen on %s: select another port from the list", id);
    PQclear(r);
    PQclear(PQexec(c, "COMMIT"));
}
C

fail=0
out=$($SCAN "$T/bad.c" 2>&1) && { echo "FAIL: the scanner passed a file that builds SQL from values:"; echo "$out"; fail=1; }
for want in "by_format" "by_concat" "by_lower_case" "by_pri_macro" "by_buf" "template site"; do
    echo "$out" | grep -q "$want" || { echo "FAIL: the scanner missed $want in the bad sample:"; echo "$out"; fail=1; }
done
out=$($SCAN "$T/good.c" 2>&1) || { echo "FAIL: the scanner refused a clean file:"; echo "$out"; fail=1; }
printf 'bad.c by_format format 1 sample\n' >"$T/allow"
out=$($SCAN --root "$T" --allowlist "$T/allow" "$T/bad.c" 2>&1) && { echo "FAIL: a partial allowlist passed the bad sample"; fail=1; }
echo "$out" | grep -q "by_format" && echo "$out" | grep "by_format" | grep -q FAIL && { echo "FAIL: an allowlisted site was still reported"; fail=1; }
printf 'good.c good format 1 a site that is not there\n' >"$T/allow"
out=$($SCAN --root "$T" --allowlist "$T/allow" "$T/good.c" 2>&1) && { echo "FAIL: a stale allowlist line passed"; fail=1; }
[ $fail = 0 ] || exit 1
echo "scanner self-test: 6 kinds of string-built SQL caught, clean sample passed, stale allowlist line caught"

cd "$SRC"
$SCAN --allowlist tests/security/sql_allowlist.txt src services cmd
