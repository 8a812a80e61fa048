#!/usr/bin/env bash
# THE demo of resilient-amqp:   bash scripts/demo.sh
#
# 1. installs rabbitmq-server and a C compiler when missing (apt-get; sudo when
#    not root),
# 2. starts a private RabbitMQ node (scripts/broker.sh; stopped again on exit),
# 3. builds the library (cargo build --release),
# 4. compiles examples-c/outage_demo.c against include/ and target/release,
# 5. runs it: it publishes and consumes while the demo takes the broker away
#    (through DEMO_CTL, e.g. "$DEMO_CTL stop_app" / "$DEMO_CTL start_app" /
#    "$DEMO_CTL close_all_connections") and exits 0 when every published
#    message was delivered.
#
# Settings: RA_BROKER_PORT (default 31720), RA_DEMO_TIMEOUT (seconds, default 600),
# DEMO_CFLAGS (extra compiler flags).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

say() { printf '\n==> %s\n' "$*"; }

# --- 1. system packages ----------------------------------------------------------
pkgs=(rabbitmq-server)
if ! command -v gcc >/dev/null; then
    pkgs+=(build-essential)
fi
bash scripts/apt-install.sh "${pkgs[@]}"

if ! command -v cargo >/dev/null && [[ -f $HOME/.cargo/env ]]; then
    # shellcheck source=/dev/null
    . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null || {
    echo "demo.sh: cargo not found; install Rust first (https://rustup.rs)" >&2
    exit 1
}
if [[ ! -f examples-c/outage_demo.c ]]; then
    echo "demo.sh: examples-c/outage_demo.c not found" >&2
    exit 1
fi

# --- 2. private broker -------------------------------------------------------------
export RA_BROKER_PORT=${RA_BROKER_PORT:-31720}
export DEMO_URI="amqp://guest:guest@127.0.0.1:$RA_BROKER_PORT/%2f"
export DEMO_CTL="$ROOT/scripts/broker.sh ctl"
BROKER_STARTED=0
CHILD=""
# shellcheck disable=SC2317 # invoked by the EXIT trap
finish() {
    local rc=$?
    trap - EXIT
    trap '' INT TERM HUP
    if [[ -n $CHILD ]]; then
        kill -TERM "$CHILD" 2>/dev/null || true
        wait "$CHILD" 2>/dev/null || true
    fi
    if ((BROKER_STARTED)); then
        say "stopping the private RabbitMQ node"
        bash "$ROOT/scripts/broker.sh" stop || true
    fi
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

say "starting a private RabbitMQ node on 127.0.0.1:$RA_BROKER_PORT"
BROKER_STARTED=1
bash scripts/broker.sh start >/dev/null

# --- 3./4. build -------------------------------------------------------------------
say "cargo build --release"
cargo build --release

say "compiling examples-c/outage_demo.c"
mkdir -p target/examples-c
BIN=target/examples-c/outage_demo
# shellcheck disable=SC2086 # DEMO_CFLAGS is a list of flags
gcc -std=c11 -Wall -Wextra -O2 -g -pthread ${DEMO_CFLAGS:-} -Iinclude \
    examples-c/outage_demo.c -o "$BIN" \
    -Ltarget/release -lresilient_amqp -Wl,-rpath,"$ROOT/target/release"

# --- 5. run ------------------------------------------------------------------------
say "running $BIN"
echo "DEMO_URI=$DEMO_URI"
echo "DEMO_CTL=$DEMO_CTL"
echo
rc=0
# in the background so that Ctrl-C reaches our trap at once
timeout -k 10 "${RA_DEMO_TIMEOUT:-600}" "$BIN" &
CHILD=$!
wait "$CHILD" || rc=$?
CHILD=""

echo
if ((rc == 0)); then
    cat <<'EOF'
==> demo PASSED
What happened: the C program published messages through resilient-amqp while
the broker went away underneath it (the demo stopped the RabbitMQ application
and/or force-closed every connection). amqp_publish returned at once all the
time: messages waited in the library's buffer while the broker was away. The
library reconnected in the background with backoff, declared the queue again,
re-sent every message the broker had not confirmed (publisher confirms), and
restarted the consumer. Every published message was delivered (at-least-once:
duplicates are possible, loss is not), so published == delivered.
EOF
elif ((rc == 124)); then
    echo "==> demo FAILED: timed out after ${RA_DEMO_TIMEOUT:-600} s"
else
    echo "==> demo FAILED (exit $rc): see the program's output above;" \
        "broker logs are in target/rabbitmq/node-$RA_BROKER_PORT/log/"
fi
exit "$rc"
