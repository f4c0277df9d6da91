#!/usr/bin/env bash
# A throwaway RabbitMQ node on free loopback ports, in a temporary directory,
# for tests. Works as root or as an ordinary user, with no stdin, no systemd
# and no system-wide state: its own epmd (on its own port), its own Erlang
# cookie (HOME is the temp dir), no plugins, loopback listeners only.
#
#   eval "$(scripts/rabbitmq.sh start)"   # prints export lines; sets RABBITMQ_DIR
#   scripts/rabbitmq.sh stop    "$RABBITMQ_DIR"   # stops the node and epmd, removes the dir
#   scripts/rabbitmq.sh kill    "$RABBITMQ_DIR"   # SIGKILL the node (crash), keep the data
#   scripts/rabbitmq.sh halt    "$RABBITMQ_DIR"   # graceful stop, keep the data (restartable)
#   scripts/rabbitmq.sh restart "$RABBITMQ_DIR"   # start again a halted/killed node, same ports
#
# With RABBITMQ_TLS=1 at start, the node also listens for AMQP over TLS with a
# throwaway CA (exports OUTBOX_TEST_AMQPS, OUTBOX_TEST_AMQPS_PORT and
# OUTBOX_TEST_AMQP_CA, the CA file to verify it with; needs openssl).
#
# With RABBITMQ_OWNER_PID=<pid> set at start, the node is stopped (and its
# dir removed) once that process exits, however it exits.
#
# Exports: RABBITMQ_DIR, OUTBOX_TEST_AMQP (amqp://guest:guest@127.0.0.1:PORT/),
# OUTBOX_TEST_AMQP_PORT. Start takes 5-10 s on an idle 2-core machine, 30-45 s
# under heavy load (see docs/sinks/amqp.md); RABBITMQ_START_TIMEOUT (s) caps it.
# RMQ_ERL_ARGS overrides the extra Erlang VM flags, RMQ_LOG_LEVEL the log level.
# Needs: rabbitmq-server (Debian package), python3 (free ports, readiness).
set -euo pipefail
RMQ_BIN=${RMQ_BIN:-/usr/lib/rabbitmq/bin}
START_TIMEOUT=${RABBITMQ_START_TIMEOUT:-120}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Environment of the node and of every rabbitmqctl call for it.
node_env() {
  local dir=$1
  # shellcheck disable=SC1091
  . "$dir/ports"
  export HOME="$dir"
  export RABBITMQ_NODENAME="rabbit-$AMQP_PORT@localhost"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT="$AMQP_PORT"
  export RABBITMQ_DIST_PORT="$DIST_PORT"
  export RABBITMQ_MNESIA_BASE="$dir/mnesia"
  export RABBITMQ_LOG_BASE="$dir/log"
  export RABBITMQ_PID_FILE="$dir/rabbit.pid"
  export RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf"
  export RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config"
  export RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
  export RABBITMQ_FEATURE_FLAGS_FILE="$dir/feature_flags"
  export RABBITMQ_QUORUM_DIR="$dir/quorum"
  export RABBITMQ_LOGS="$dir/log/rabbit.log"
  export RABBITMQ_CTL_DIST_PORT_MIN="$CTL_PORT"
  export RABBITMQ_CTL_DIST_PORT_MAX="$CTL_PORT"
  export ERL_EPMD_PORT="$EPMD_PORT"
  export ERL_EPMD_ADDRESS=127.0.0.1
  # Enable only one feature flag on first boot (the default enables all 7,
  # and each one recompiles the flag registry): 8-11 s instead of 14-17 s to
  # start at load ~8 on 2 cores. Nothing the tests use needs the others
  # (they are for quorum queues, streams, mirroring, limits).
  export RABBITMQ_FEATURE_FLAGS="${RABBITMQ_FEATURE_FLAGS-implicit_default_bindings}"
  # Fewer schedulers and no busy-waiting: boots faster and stays quiet on
  # small shared CI machines.
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="${RMQ_ERL_ARGS:-+S 2:2 +A 8 +sbwt none +sbwtdcpu none +sbwtdio none} -kernel inet_dist_use_interface {127,0,0,1}"
}

# 0 when an AMQP 0-9-1 listener answers the protocol header with a frame.
amqp_ready() {
  python3 - "$1" <<'PY' 2>/dev/null
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.sendall(b"AMQP\x00\x00\x09\x01")
s.settimeout(2)
b = s.recv(7)
sys.exit(0 if len(b) == 7 and b[0] == 1 else 1)
PY
}

launch() {
  local dir=$1
  node_env "$dir"
  # Our own epmd on our own port (left running across halt/restart).
  if ! epmd -port "$EPMD_PORT" -names >/dev/null 2>&1; then
    epmd -port "$EPMD_PORT" -address 127.0.0.1 -daemon
  fi
  if amqp_ready "$AMQP_PORT"; then
    echo "rabbitmq.sh: something already answers on port $AMQP_PORT" >&2
    return 1
  fi
  rm -f "$RABBITMQ_PID_FILE"
  # setsid + no stdin: the node survives the caller's shell and never waits
  # for a terminal. The rabbitmq-server wrapper shell stays as the parent of
  # the VM; the VM writes its own OS pid to $RABBITMQ_PID_FILE, which is
  # what halt/kill signal.
  setsid "$RMQ_BIN/rabbitmq-server" </dev/null >>"$dir/log/stdout.log" 2>&1 &
  echo $! >"$dir/wrapper.pid"
  local deadline=$((SECONDS + START_TIMEOUT))
  while ! amqp_ready "$AMQP_PORT"; do
    if ! kill -0 "$(cat "$dir/wrapper.pid")" 2>/dev/null; then
      echo "rabbitmq.sh: the node exited during start; last log lines:" >&2
      tail -n 30 "$dir/log/stdout.log" "$dir/log/rabbit.log" >&2 2>/dev/null || true
      return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "rabbitmq.sh: no AMQP listener on port $AMQP_PORT after ${START_TIMEOUT}s" >&2
      tail -n 30 "$dir/log/stdout.log" >&2 2>/dev/null || true
      return 1
    fi
    sleep 0.1
  done
  cp "$RABBITMQ_PID_FILE" "$dir/node.pid"
}

start() {
  command -v "$RMQ_BIN/rabbitmq-server" >/dev/null 2>&1 || [ -x "$RMQ_BIN/rabbitmq-server" ] \
    || { echo "rabbitmq.sh: rabbitmq-server is not installed ($RMQ_BIN)" >&2; exit 3; }
  command -v epmd >/dev/null 2>&1 || { echo "rabbitmq.sh: epmd (erlang-base) is not installed" >&2; exit 3; }
  local dir; dir=$(mktemp -d /tmp/outbox-rabbitmq.XXXXXX)
  chmod 700 "$dir"
  mkdir -p "$dir/mnesia" "$dir/log"
  local amqp dist ctl epmdp tlsport=""
  amqp=$(free_port); dist=$(free_port); ctl=$(free_port); epmdp=$(free_port)
  [ -n "${RABBITMQ_TLS:-}" ] && tlsport=$(free_port)
  cat >"$dir/ports" <<P
AMQP_PORT=$amqp
DIST_PORT=$dist
CTL_PORT=$ctl
EPMD_PORT=$epmdp
TLS_PORT=$tlsport
P
  cat >"$dir/rabbitmq.conf" <<C
listeners.tcp.default = 127.0.0.1:$amqp
loopback_users = none
disk_free_limit.absolute = 1MB
vm_memory_high_watermark.relative = 0.8
log.console = false
log.file = rabbit.log
log.file.level = ${RMQ_LOG_LEVEL:-warning}
C
  if [ -n "$tlsport" ]; then
    make_certs "$dir/tls"
    cat >>"$dir/rabbitmq.conf" <<C
listeners.ssl.default = 127.0.0.1:$tlsport
ssl_options.cacertfile = $dir/tls/ca.pem
ssl_options.certfile = $dir/tls/server.pem
ssl_options.keyfile = $dir/tls/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
C
  fi
  echo "[]." >"$dir/advanced.config"
  echo "[]." >"$dir/enabled_plugins"
  : >"$dir/rabbitmq-env.conf"
  # A fixed cookie in our own HOME: root's ~/.erlang.cookie is never touched.
  head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/.erlang.cookie"
  chmod 400 "$dir/.erlang.cookie"
  if ! launch "$dir"; then
    stop "$dir"
    exit 1
  fi
  # RABBITMQ_OWNER_PID: stop the node when that process is gone (a test
  # killed by a CTest timeout must not leave a broker behind).
  if [ -n "${RABBITMQ_OWNER_PID:-}" ]; then
    setsid bash -c 'while kill -0 "$1" 2>/dev/null && [ -d "$2" ]; do sleep 1; done; [ -d "$2" ] && "$3" stop "$2"' \
      watch "$RABBITMQ_OWNER_PID" "$dir" "$(readlink -f "$0")" </dev/null >/dev/null 2>&1 &
  fi
  cat <<ENV
export RABBITMQ_DIR='$dir'
export OUTBOX_TEST_AMQP='amqp://guest:guest@127.0.0.1:$amqp/'
export OUTBOX_TEST_AMQP_PORT='$amqp'
ENV
  if [ -n "$tlsport" ]; then
    cat <<ENV
export OUTBOX_TEST_AMQPS='amqps://guest:guest@localhost:$tlsport/'
export OUTBOX_TEST_AMQPS_PORT='$tlsport'
export OUTBOX_TEST_AMQP_CA='$dir/tls/ca.pem'
ENV
  fi
}

# A throwaway CA and a server certificate for "localhost" / 127.0.0.1.
make_certs() {
  local d=$1
  mkdir -p "$d"
  (
    cd "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=outbox-test-ca" \
      -keyout ca.key -out ca.pem
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >ext.cnf
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf \
      -out server.pem
    chmod 644 ./*.pem ./*.key
  ) >"$d/openssl.log" 2>&1 || { echo "rabbitmq.sh: openssl failed:" >&2; cat "$d/openssl.log" >&2; return 1; }
}

node_pid() { cat "$1/node.pid" 2>/dev/null || cat "$1/rabbit.pid" 2>/dev/null || true; }

wait_gone() { # pid seconds
  local pid=$1 n=$(( $2 * 10 ))
  while [ $n -gt 0 ] && kill -0 "$pid" 2>/dev/null; do sleep 0.1; n=$((n - 1)); done
  ! kill -0 "$pid" 2>/dev/null
}

halt() { # graceful: SIGTERM makes the Erlang VM run init:stop()
  local dir=$1 pid; pid=$(node_pid "$dir")
  [ -n "$pid" ] || { reap_wrapper "$dir"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_gone "$pid" 30; then kill -KILL "$pid" 2>/dev/null || true; wait_gone "$pid" 5 || true; fi
  reap_wrapper "$dir"
}

reap_wrapper() { # the wrapper shell exits once the VM is gone
  local dir=$1 w; w=$(cat "$dir/wrapper.pid" 2>/dev/null || true)
  [ -n "$w" ] && { wait_gone "$w" 5 || kill -KILL "$w" 2>/dev/null || true; }
  rm -f "$dir/node.pid" "$dir/wrapper.pid" "$dir/rabbit.pid"
}

crash() {
  local dir=$1 pid; pid=$(node_pid "$dir")
  [ -n "$pid" ] || return 0
  kill -KILL "$pid" 2>/dev/null || true
  wait_gone "$pid" 10 || true
  reap_wrapper "$dir"
}

stop() {
  local dir=$1
  [ -n "$dir" ] && [ -d "$dir" ] && [ -f "$dir/ports" ] || return 0
  halt "$dir"
  # shellcheck disable=SC1091
  . "$dir/ports"
  epmd -port "$EPMD_PORT" -kill >/dev/null 2>&1 || true
  rm -rf "$dir"
}

need_dir() {
  local dir=${1:-${RABBITMQ_DIR:-}}
  [ -n "$dir" ] && [ -f "$dir/ports" ] || { echo "rabbitmq.sh: no such node dir: '$dir'" >&2; exit 2; }
  echo "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:-${RABBITMQ_DIR:-}}" ;;
  halt) halt "$(need_dir "${2:-}")" ;;
  kill) crash "$(need_dir "${2:-}")" ;;
  restart)
    d=$(need_dir "${2:-}")
    [ -n "$(node_pid "$d")" ] && halt "$d"
    launch "$d" ;;
  *) echo "usage: $0 start | stop|halt|kill|restart [DIR]" >&2; exit 2 ;;
esac
