#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need, if missing.
# Idempotent and quiet when everything is there. Needs root (or sudo) only
# when something is missing.
set -euo pipefail
PKGS=(
  build-essential cmake pkg-config
  libpq-dev postgresql-15            # store + throwaway test server
  libhiredis-dev redis-server        # Redis sink / consumers + test server
  libjansson-dev libmicrohttpd-dev libcurl4-openssl-dev libsodium-dev
  librdkafka-dev kcat                # Kafka sink; tests use librdkafka's mock cluster
  librabbitmq-dev rabbitmq-server    # AMQP sink + test server
  libnats-dev nats-server            # NATS JetStream sink + test server
  python3 procps util-linux curl
  gnuplot-nox                        # make soak draws its plots (SVG)
  chromium                           # the dashboard test drives it headless (tests/ops)
  git clang-format                   # make format-check (the suite checks the tree's format)
  gdb                                # a chaos test prints the stacks of a process that outlived SIGTERM
  clang libclang-rt-14-dev           # make fuzz and the fuzz smoke tests (libFuzzer, sanitizers)
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# Servers are started by our scripts on loopback ports, never as services.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps: done"
