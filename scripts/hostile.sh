#!/usr/bin/env bash
# The LONG hostile-broker suite of resilient-amqp (issue 19):   bash scripts/hostile.sh
#
# Starts its own private RabbitMQ node (scripts/broker.sh, fresh data) and stops it again when
# this script ends -- passed, failed or interrupted -- then runs every scenario of
# tests/hostile_broker.rs (a proxy between the library and the real broker sends what a broken
# broker, a proxy or an attacker could: oversized/undersized frames, absurd body sizes and
# delivery tags, forged acks, nack storms, rewritten tune, 1,400-deep field arrays, random
# mutation, ...) ONE AT A TIME, each in its own process: a scenario that aborts the process
# (the failure this suite exists to find) does not hide the others. The random mutation runs
# RA_HOSTILE_ITERATIONS mutations (default here 2000; 150 in the normal `cargo test`).
# Prints one line per scenario and a summary; the logs are in target/hostile/.
#
# Settings (environment):
#   RA_BROKER_PORT          AMQP port of the private node (default 31780; the node also uses
#                           PORT+1 and PORT+2). It must not be running already: this script
#                           stops the node it started.
#   RA_HOSTILE_ITERATIONS   random mutations (default 2000)
#   RA_HOSTILE_SEED         replay the random mutation of a seed (printed by every run)
#   RA_HOSTILE_ONLY         e.g. "body_size_2_pow_62 nack_storm": only those scenarios
#   RA_HOSTILE_TIMEOUT      seconds per scenario (default 300; the random mutation gets
#                           60 + 2 s a mutation more)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SCRIPT=hostile.sh
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

use_cargo_env

export_test_broker 31780
export RA_HOSTILE_ITERATIONS=${RA_HOSTILE_ITERATIONS:-2000}
TIMEOUT=${RA_HOSTILE_TIMEOUT:-300}
unset RA_BROKER_KEEP_DATA

T0=$SECONDS
BROKER_STARTED=0
LOGS=$ROOT/target/hostile
PASSED=()
FAILED=()

# shellcheck disable=SC2317 # invoked by the EXIT trap
finish() {
    local rc=$?
    stop_child_and_broker
    echo
    echo "hostile.sh: ${#PASSED[@]} passed, ${#FAILED[@]} failed in $((SECONDS - T0)) s (logs: $LOGS/)"
    if ((${#FAILED[@]})); then
        printf '  failed: %s\n' "${FAILED[@]}"
        ((rc == 0)) && rc=1
    fi
    exit "$rc"
}
install_traps

bash scripts/deps.sh

require_no_running_broker

say "building tests/hostile_broker.rs"
limited 1800 cargo test --release --test hostile_broker --no-run
BIN=$(cargo test --release --test hostile_broker --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*hostile_broker[^"]*\)".*/\1/p' | tail -1)
[[ -x $BIN ]] || {
    echo "hostile.sh: cannot find the test binary" >&2
    exit 1
}

say "starting a private RabbitMQ node on 127.0.0.1:$RA_BROKER_PORT"
BROKER_STARTED=1
bash scripts/broker.sh start >/dev/null

mkdir -p "$LOGS"
if [[ -n ${RA_HOSTILE_ONLY:-} ]]; then
    read -r -a TESTS <<<"$RA_HOSTILE_ONLY"
else
    mapfile -t TESTS < <("$BIN" --list 2>/dev/null | sed -n 's/: test$//p')
fi
for t in "${TESTS[@]}"; do
    secs=$TIMEOUT
    [[ $t == random_mutation ]] && secs=$((TIMEOUT + 60 + 2 * RA_HOSTILE_ITERATIONS))
    s=$SECONDS
    rc=0
    limited "$secs" "$BIN" --exact "$t" --test-threads=1 --nocapture >"$LOGS/$t.log" 2>&1 || rc=$?
    if ((rc == 0)); then
        PASSED+=("$t")
        printf 'ok      %-45s %4d s\n' "$t" "$((SECONDS - s))"
    else
        why=$(grep -m1 -E 'FAILED CHECK|panicked|memory allocation|overflow|SIG' "$LOGS/$t.log" || true)
        FAILED+=("$t (exit $rc) ${why:0:160}")
        printf 'FAILED  %-45s %4d s  exit %d  %s\n' "$t" "$((SECONDS - s))" "$rc" "${why:0:120}"
    fi
done
