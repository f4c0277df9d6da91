#!/usr/bin/env bash
# Throwaway PostgreSQL and Redis on free loopback ports, in a temporary
# directory, run as an unprivileged user (PostgreSQL refuses root).
#
#   eval "$(scripts/servers.sh start)"   # prints export lines; sets SERVERS_DIR
#   scripts/servers.sh stop "$SERVERS_DIR"
#
# Exports: OUTBOX_TEST_PG (admin conninfo), OUTBOX_TEST_REDIS (host:port),
# DATABASE_URL (database "outbox"), REDIS_ADDR.
#
# PostgreSQL runs with fsync=off, synchronous_commit=off, full_page_writes=off
# (fast, for the test suite). SERVERS_PG_DURABLE=1 starts it durable as in
# production instead (fsync=on, synchronous_commit=on, full_page_writes=on),
# as the benchmarks want; SERVERS_PG_OPTS adds further "-c name=value" options.
set -euo pipefail
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

as_user() { # run a command as the unprivileged server user when we are root
  if [ "$(id -u)" -eq 0 ]; then runuser -u "$SERVER_USER" -- "$@"; else "$@"; fi
}

start() {
  SERVER_USER=${SERVER_USER:-postgres}
  id "$SERVER_USER" >/dev/null 2>&1 || SERVER_USER=nobody
  local dir; dir=$(mktemp -d /tmp/outbox-servers.XXXXXX)
  chmod 755 "$dir"
  mkdir -p "$dir/pg" "$dir/redis"
  [ "$(id -u)" -eq 0 ] && chown "$SERVER_USER" "$dir/pg" "$dir/redis"
  local pgport redisport
  pgport=$(free_port); redisport=$(free_port)
  as_user "$PGBIN/initdb" -D "$dir/pg/data" -U postgres --auth=trust -E UTF8 >"$dir/pg/initdb.log" 2>&1 \
    || { cat "$dir/pg/initdb.log" >&2; exit 1; }
  local durability="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  [ "${SERVERS_PG_DURABLE:-0}" = 1 ] && durability="-c fsync=on -c synchronous_commit=on -c full_page_writes=on"
  as_user "$PGBIN/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/server.log" -w -t 60 start \
    -o "-p $pgport -k $dir/pg -c listen_addresses=127.0.0.1 -c max_connections=400 $durability ${SERVERS_PG_OPTS:-}" \
    >/dev/null || { cat "$dir/pg/server.log" >&2; exit 1; }
  as_user redis-server --port "$redisport" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$dir/redis" --daemonize yes --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/redis.log"
  for _ in $(seq 100); do redis-cli -p "$redisport" ping >/dev/null 2>&1 && break; sleep 0.05; done
  "$PGBIN/psql" -q -h 127.0.0.1 -p "$pgport" -U postgres -d postgres -c "CREATE DATABASE outbox" >/dev/null
  echo "$SERVER_USER" > "$dir/user"
  cat <<ENV
export SERVERS_DIR='$dir'
export OUTBOX_TEST_PG='host=127.0.0.1 port=$pgport user=postgres'
export OUTBOX_TEST_REDIS='127.0.0.1:$redisport'
export DATABASE_URL='postgresql://postgres@127.0.0.1:$pgport/outbox'
export REDIS_ADDR='127.0.0.1:$redisport'
ENV
}

stop() {
  local dir=${1:-${SERVERS_DIR:-}}
  [ -n "$dir" ] && [ -d "$dir" ] || exit 0
  SERVER_USER=$(cat "$dir/user" 2>/dev/null || echo postgres)
  [ -f "$dir/redis/redis.pid" ] && kill "$(cat "$dir/redis/redis.pid")" 2>/dev/null || true
  [ -d "$dir/pg/data" ] && as_user "$PGBIN/pg_ctl" -D "$dir/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:-}" ;;
  *) echo "usage: $0 start|stop [DIR]" >&2; exit 2 ;;
esac
