#!/usr/bin/env bash
# THE test command of resilient-amqp:   bash scripts/test.sh
#
# Starts a private RabbitMQ node (scripts/broker.sh; never the default one) and
# stops it again when this script ends -- passed, failed or interrupted -- then:
#   deps     bash scripts/deps.sh (installs what is missing; apt-get update once)
#   fmt      cargo fmt --check
#   clippy   cargo clippy --all-targets -- -D warnings
#   build    cargo build --release
#   header   the generated include/resilient_amqp.h equals the committed one
#   test     cargo test --release --no-fail-fast -- --test-threads=2
#            (unit tests, tests/broker_*.rs, and tests/c_programs.rs, which
#            compiles and runs the C tests in tests/c and the C examples;
#            tests/broker_tls.rs on the node's TLS listener, PORT+3, with
#            certificates by scripts/tls-certs.sh; its expired-certificate
#            test needs a node restart and runs in scripts/tls-test.sh)
#   handoff  the consume suites again with every test connection on
#            inline_delivery=false (the network thread reads the consume
#            link and hands deliveries to the callback threads; the default
#            is that the callback threads read it): broker_consume,
#            broker_consume_pool, broker_pull, broker_settle, broker_release,
#            broker_faults, hostile_broker
#   bench    the benchmark drivers (bench/ours.c, bench/rmqc.c) build, and a
#            2,000-message publish with each confirms everything (a smoke run
#            that keeps them working; no speed is asserted anywhere)
#   memcheck bash scripts/memcheck.sh asan: the C tests and examples again,
#            built with AddressSanitizer + UndefinedBehaviorSanitizer and run
#            with LeakSanitizer, on the same broker (about a minute; the
#            valgrind mode is `bash scripts/memcheck.sh valgrind`)
#   install  bash scripts/install-test.sh: install into a temporary prefix and
#            build the C examples there with pkg-config alone and CMake alone
#            (run against the broker), the .debs installed with apt-get and
#            removed again, the export list checked
#   bindings every bindings/<lang>/test.sh (C++, Go, Node, Python, Ruby: each
#            binding's own tests against the same broker, through the C ABI
#            of target/release; scripts/bindings.sh, a few minutes)
#   cluster  bash scripts/cluster-test.sh short: a private 3-node RabbitMQ
#            cluster (scripts/cluster.sh, ports 31810-31839) with quorum queues;
#            the client's node SIGKILLed, a rolling restart, a partition; 0
#            missing (about 2.5 minutes; `full` in docs/cluster.md)
#   fuzz     bash scripts/fuzz.sh with RA_FUZZ_SECONDS=30: the cargo-fuzz
#            targets frames and reader, 30 s each on the committed corpus
#            (about 2.5 minutes with the build; docs/FUZZING.md)
# and prints one summary line at the end.
#
# Tests find the broker through:
#   RESILIENT_AMQP_TEST_URI=amqp://guest:guest@127.0.0.1:$RA_BROKER_PORT/%2f
#   RESILIENT_AMQP_TEST_CTL="<repo>/scripts/broker.sh ctl"   (run via `sh -c`,
#       e.g. "$RESILIENT_AMQP_TEST_CTL stop_app", "... start_app",
#       "... close_all_connections", "... list_queues name messages")
#
# Settings: RA_BROKER_PORT (default 31720), RA_TEST_SKIP="fmt clippy ..." (steps
# to skip), RA_TEST_TIMEOUT (seconds for the test step, default 1200),
# 
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SCRIPT=test.sh
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

use_cargo_env

export_test_broker 31720
TEST_TIMEOUT=${RA_TEST_TIMEOUT:-1200}
SKIP_LIST=${RA_TEST_SKIP:-}
SKIP=" ${SKIP_LIST//,/ } "

T0=$SECONDS
PASSED=()
SKIPPED=()
CURRENT=""
BROKER_STARTED=0

finish() {
    local rc=$?
    trap - EXIT
    trap "" INT TERM HUP # let the broker stop finish (it is bounded)
    set +e
    if ((BROKER_STARTED)); then
        say "stopping the private RabbitMQ node"
        bash "$ROOT/scripts/broker.sh" stop || echo "test.sh: WARNING: could not stop the broker" >&2
    fi
    local took=$((SECONDS - T0)) extra=""
    ((${#SKIPPED[@]})) && extra=", skipped: ${SKIPPED[*]}"
    echo
    if ((rc == 0)); then
        echo "test.sh: PASSED -- ${PASSED[*]:-nothing} ($took s$extra)"
    else
        echo "test.sh: FAILED at step '${CURRENT:-setup}' (exit $rc) after $took s -- passed: ${PASSED[*]:-none}$extra"
        if ((BROKER_STARTED)); then
            echo "test.sh: broker logs: $ROOT/target/rabbitmq/node-$RA_BROKER_PORT/log/"
        fi
    fi
    exit "$rc"
}
# Every long command runs under `timeout` in the background (`limited`, from
# scripts/lib.sh) while this shell
# waits, so Ctrl-C / SIGTERM reach our traps at once; the trap then stops the
# command (timeout forwards the signal to its whole process group: cargo, the
# test binaries, the C programs) before the broker is stopped.
install_traps

# step NAME COMMAND... : run a step unless skipped; a failure ends the script
step() {
    local name=$1
    shift
    if [[ $SKIP == *" $name "* ]]; then
        SKIPPED+=("$name")
        say "[$name] skipped (RA_TEST_SKIP)"
        return 0
    fi
    CURRENT=$name
    if [[ $1 == limited ]]; then
        say "[$name] ${*:3}"
    else
        say "[$name] $*"
    fi
    local t=$SECONDS
    "$@"
    echo "==> [$name] ok ($((SECONDS - t)) s)"
    PASSED+=("$name")
    CURRENT=""
}

header_unchanged() {
    if [[ ! -f include/resilient_amqp.h ]]; then
        echo "include/resilient_amqp.h was not generated by the build" >&2
        return 1
    fi
    if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        echo "not a git checkout; cannot compare the header (skipped)" >&2
        return 0
    fi
    local untracked
    untracked=$(git ls-files --others --exclude-standard -- include/)
    if [[ -n $untracked ]]; then
        echo "generated files under include/ are not committed:" >&2
        echo "$untracked" >&2
        return 1
    fi
    if ! git diff --exit-code -- include/; then
        echo "the build changed include/ (see diff above): regenerate and commit the header" >&2
        return 1
    fi
}

# Make sure the broker application runs (a test may have left it stopped).
broker_app_up() {
    bash scripts/broker.sh ctl -q start_app >/dev/null
    bash scripts/broker.sh ctl -q await_startup --timeout 60 >/dev/null
}

run_cargo_tests() {
    broker_app_up
    limited "$TEST_TIMEOUT" cargo test --release --no-fail-fast -- --test-threads=2 \
        --skip expired_certificate
}

run_handoff_tests() {
    broker_app_up
    RA_TEST_CONNECTION_OPTIONS=inline_delivery=false limited "$TEST_TIMEOUT" \
        cargo test --release --no-fail-fast --test broker_consume --test broker_consume_pool \
        --test broker_pull --test broker_settle --test broker_release --test broker_faults \
        --test hostile_broker -- --test-threads=2
}

bench_smoke() {
    local bin=target/bench-smoke out client
    build_bench_drivers "$bin"
    for client in ours rmqc; do
        out=$(limited 120 "$bin/$client" publish "uri=$RESILIENT_AMQP_TEST_URI" \
            "queue=bench-smoke-$client-$$" n=2000 size=64 durable=0 mandatory=1)
        "$bin/rmqc" delete "uri=$RESILIENT_AMQP_TEST_URI" "queue=bench-smoke-$client-$$" >/dev/null
        if [[ $out != *'"ok":true'* ]]; then
            echo "bench driver $client failed: $out" >&2
            return 1
        fi
    done
}

# Install what is missing (rabbitmq-server, gcc, ...): a no-op when all is there.
CURRENT=deps
bash scripts/deps.sh
CURRENT=""

command -v cargo >/dev/null || {
    CURRENT=setup
    echo "test.sh: cargo not found (install Rust, or run bash scripts/deps.sh)" >&2
    exit 1
}

CURRENT=broker
say "[broker] starting the private RabbitMQ node on 127.0.0.1:$RA_BROKER_PORT"
BROKER_STARTED=1
# with a TLS listener on PORT+3 for tests/broker_tls.rs
export RESILIENT_AMQP_TEST_TLS_DIR=$ROOT/target/test-certs
rm -rf "$RESILIENT_AMQP_TEST_TLS_DIR"
bash scripts/tls-certs.sh "$RESILIENT_AMQP_TEST_TLS_DIR" 2>/dev/null
export RESILIENT_AMQP_TEST_TLS_URI="amqps://guest:guest@localhost:$((RA_BROKER_PORT + 3))/%2f"
# exported: a test that restarts the node (scripts/broker.sh start) keeps the listener
export RA_BROKER_TLS_DIR=$RESILIENT_AMQP_TEST_TLS_DIR
bash scripts/broker.sh start >/dev/null
echo "RESILIENT_AMQP_TEST_URI=$RESILIENT_AMQP_TEST_URI"
echo "RESILIENT_AMQP_TEST_CTL=$RESILIENT_AMQP_TEST_CTL"
echo "RESILIENT_AMQP_TEST_TLS_URI=$RESILIENT_AMQP_TEST_TLS_URI"
CURRENT=""

step fmt limited 600 cargo fmt --check
step clippy limited 1800 cargo clippy --all-targets -- -D warnings
step build limited 1800 cargo build --release
step header header_unchanged
step test run_cargo_tests
step handoff run_handoff_tests
step bench bench_smoke
step memcheck limited 900 bash scripts/memcheck.sh asan
step install limited 600 bash scripts/install-test.sh
step bindings limited 1500 bash scripts/bindings.sh
step cluster limited 900 bash scripts/cluster-test.sh short
step fuzz limited 1200 env RA_FUZZ_SECONDS="${RA_FUZZ_SECONDS:-30}" bash scripts/fuzz.sh
