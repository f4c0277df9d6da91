#!/usr/bin/env bash
# A private PostgreSQL that speaks only TLS on TCP, for security_pg_tls.
#
#   pg_tls_server.sh start DIR   # prints "PORT"; DIR gets ca.crt, other-ca.crt
#   pg_tls_server.sh stop DIR
#
# DIR/ca.crt signs the server certificate (CN localhost, SAN DNS:localhost,
# IP:127.0.0.1); DIR/other-ca.crt is another self-signed CA that signs
# nothing here. pg_hba: local socket trust (set-up only), TCP hostssl with
# scram-sha-256 from 127.0.0.1, nothing else: a plain TCP connection is
# refused. Runs as the postgres user when started as root (PostgreSQL
# refuses root), like scripts/servers.sh.
set -euo pipefail
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
cmd=${1:-}; dir=${2:-}
[ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
USER_=postgres
id "$USER_" >/dev/null 2>&1 || USER_=nobody
as_user() { if [ "$(id -u)" -eq 0 ]; then runuser -u "$USER_" -- "$@"; else "$@"; fi; }

if [ "$cmd" = stop ]; then
  [ -d "$dir/data" ] && as_user "$PGBIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  exit 0
fi
[ "$cmd" = start ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
command -v openssl >/dev/null || { echo "openssl is not installed" >&2; exit 77; }
mkdir -p "$dir"
chmod 755 "$dir"
cd "$dir"
q() { "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; "$@"; exit 1; }; }
q openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=outbox test CA" \
  -keyout ca.key -out ca.crt
q openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=outbox other CA" \
  -keyout other-ca.key -out other-ca.crt
q openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >server.ext
q openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
  -extfile server.ext -out server.crt
chmod 600 server.key
mkdir -p pg data
chmod 700 data
[ "$(id -u)" -eq 0 ] && chown "$USER_" server.key server.crt pg data
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
as_user "$PGBIN/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=reject -E UTF8 \
  >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
cat >"$dir/hba" <<HBA
local   all all              trust
hostssl all all 127.0.0.1/32 scram-sha-256
HBA
[ "$(id -u)" -eq 0 ] && chown "$USER_" "$dir/hba"
as_user "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/pg/server.log" -w -t 60 start \
  -o "-p $port -k $dir/pg -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file=$dir/server.crt -c ssl_key_file=$dir/server.key -c hba_file=$dir/hba -c password_encryption=scram-sha-256 -c fsync=off" \
  >/dev/null || { cat "$dir/pg/server.log" >&2; exit 1; }
echo "$port"
