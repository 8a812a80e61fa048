# shellcheck shell=bash
# Shared by scripts/*.sh. Long commands run in the background under `timeout`
# (`limited`), so Ctrl-C / SIGTERM reach the caller's traps at once; the traps
# stop that command, then the caller's `finish` (the EXIT trap) cleans up,
# e.g. stops the broker it started. The caller sets SCRIPT before sourcing
# this file, defines finish(), and calls install_traps.

CHILD=""

say() { printf '\n==> %s\n' "$*"; }

# limited SECONDS COMMAND...: runs COMMAND with a time limit.
limited() {
    local secs=$1 rc=0
    shift
    timeout -k 20 "$secs" "$@" &
    CHILD=$!
    wait "$CHILD" || rc=$?
    CHILD=""
    if ((rc == 124)); then
        echo "$SCRIPT: '$*' timed out after $secs s" >&2
    fi
    return "$rc"
}

# build_bench_drivers DIR: the benchmark drivers bench/ours.c and bench/rmqc.c
# (gcc -O2) into DIR, ours linked against a copy of target/release's library
# in DIR, so a cargo build while they run does not change what is measured.
build_bench_drivers() {
    local dir=$1
    local cflags=(-std=c11 -O2 -Wall -Wextra -Werror)
    mkdir -p "$dir"
    cp -P target/release/libresilient_amqp.so target/release/libresilient_amqp.so.0 "$dir/"
    gcc "${cflags[@]}" -Iinclude bench/ours.c -L"$dir" -lresilient_amqp \
        -Wl,-rpath,"$(cd "$dir" && pwd)" -lpthread -o "$dir/ours"
    gcc "${cflags[@]}" bench/rmqc.c -lrabbitmq -lpthread -o "$dir/rmqc"
}

# shellcheck disable=SC2317 # invoked by the signal traps
on_signal() {
    trap '' INT TERM HUP
    echo "$SCRIPT: interrupted" >&2
    if [[ -n $CHILD ]]; then
        kill -TERM "$CHILD" 2>/dev/null || true
        wait "$CHILD" 2>/dev/null || true
    fi
    exit "$1"
}

install_traps() {
    trap finish EXIT
    trap 'on_signal 130' INT
    trap 'on_signal 143' TERM
    trap 'on_signal 129' HUP
}

# Puts cargo on PATH from rustup's env file when a fresh shell does not have it yet.
use_cargo_env() {
    if ! command -v cargo >/dev/null && [[ -f $HOME/.cargo/env ]]; then
        # shellcheck source=/dev/null
        . "$HOME/.cargo/env"
    fi
}

# export_test_broker DEFAULT_PORT: the private node's port (RA_BROKER_PORT wins) and how the
# tests reach and drive it.
export_test_broker() {
    export RA_BROKER_PORT=${RA_BROKER_PORT:-$1}
    export RESILIENT_AMQP_TEST_URI="amqp://guest:guest@127.0.0.1:$RA_BROKER_PORT/%2f"
    export RESILIENT_AMQP_TEST_CTL="$ROOT/scripts/broker.sh ctl"
}

# The first half of the EXIT trap of a script that starts its own node: ends
# the running step (CHILD) and stops the node when BROKER_STARTED=1 (bounded).
# The caller saved $? before and prints its verdict after.
stop_child_and_broker() {
    trap - EXIT
    trap "" INT TERM HUP # let the broker stop finish (it is bounded)
    set +e
    if [[ -n ${CHILD:-} ]]; then
        kill -TERM "$CHILD" 2>/dev/null
        wait "$CHILD" 2>/dev/null
    fi
    if ((${BROKER_STARTED:-0})); then
        say "stopping the private RabbitMQ node (port $RA_BROKER_PORT)"
        bash "$ROOT/scripts/broker.sh" stop || echo "$SCRIPT: WARNING: could not stop the broker" >&2
    fi
}

# Refuses to go on when a node already runs on RA_BROKER_PORT: the script
# starts and stops its own.
require_no_running_broker() {
    if bash "$ROOT/scripts/broker.sh" status >/dev/null 2>&1; then
        echo "$SCRIPT: a node is already running on port $RA_BROKER_PORT; this script starts and stops its own." >&2
        echo "$SCRIPT: stop it (RA_BROKER_PORT=$RA_BROKER_PORT bash scripts/broker.sh stop) or set another RA_BROKER_PORT." >&2
        exit 1
    fi
}
