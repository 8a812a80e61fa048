#!/usr/bin/env bash
# The cluster fault tests of resilient-amqp:   bash scripts/cluster-test.sh [short|full]
#
# Starts a private 3-node RabbitMQ cluster (scripts/cluster.sh, fresh data, loopback ports
# RA_CLUSTER_PORT+10/+20/+30, default 31810/31820/31830) and stops it again when this script
# ends -- passed, failed or interrupted -- then runs
#   cargo test --release --test cluster_faults -- --nocapture
# (tests/cluster_faults.rs: quorum queues, publish + consume through the host list while
# a) the client's node is killed with SIGKILL, b) the 3 nodes restart one by one, c) the client's
# node is partitioned from the others; zero loss required). Prints the table and writes
# target/cluster-faults.md.
#
#   short (default)  500 msg/s published per scenario (8-17k), 5,000 consumed; ~2-3 minutes
#   full             2,000 msg/s (46-107k), 50,000 consumed; ~3.5 minutes
#
# Settings (environment):
#   RA_CLUSTER_PORT       base port (default 31800; the cluster uses BASE+10..BASE+39)
#   CLUSTER_FAULTS_ONLY   e.g. "a,c": only those scenarios
#   RA_CLUSTER_TIMEOUT    seconds for build + tests (default 900)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SCRIPT=cluster-test.sh
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

use_cargo_env

MODE=${1:-short}
case $MODE in
    short | full) ;;
    *)
        echo "usage: $0 [short|full]" >&2
        exit 2
        ;;
esac
export CLUSTER_FAULTS=$MODE
export RA_CLUSTER_PORT=${RA_CLUSTER_PORT:-31800}
TIMEOUT=${RA_CLUSTER_TIMEOUT:-900}
T0=$SECONDS
STARTED=0

# shellcheck disable=SC2317 # invoked by the EXIT trap
finish() {
    local rc=$?
    trap - EXIT
    trap "" INT TERM HUP # let the cluster stop finish (it is bounded)
    set +e
    if [[ -n $CHILD ]]; then
        kill -TERM "$CHILD" 2>/dev/null
        wait "$CHILD" 2>/dev/null
    fi
    if ((STARTED)); then
        say "stopping the private cluster"
        bash "$ROOT/scripts/cluster.sh" stop || echo "$SCRIPT: WARNING: could not stop the cluster" >&2
    fi
    echo
    if ((rc == 0)); then
        echo "$SCRIPT: PASSED ($MODE, $((SECONDS - T0)) s) -- target/cluster-faults.md"
    else
        echo "$SCRIPT: FAILED (exit $rc, $((SECONDS - T0)) s) -- broker logs: $ROOT/target/rabbitmq/node-*/log/"
    fi
    exit "$rc"
}
install_traps

say "building the test (before the cluster starts)"
limited "$TIMEOUT" cargo test --release --test cluster_faults --no-run

say "starting a private 3-node RabbitMQ cluster (base port $RA_CLUSTER_PORT)"
STARTED=1
bash scripts/cluster.sh stop >/dev/null 2>&1 || true
eval "$(bash scripts/cluster.sh env)"
bash scripts/cluster.sh start >/dev/null
export RESILIENT_AMQP_TEST_URI
RESILIENT_AMQP_TEST_URI=$(bash scripts/cluster.sh uri 1)
export RESILIENT_AMQP_TEST_CTL="$ROOT/scripts/cluster.sh ctl 1"
export RA_BROKER_PORT=$((RA_CLUSTER_PORT + 10))

say "CLUSTER_FAULTS=$MODE cargo test --release --test cluster_faults"
limited "$TIMEOUT" cargo test --release --test cluster_faults -- --nocapture
