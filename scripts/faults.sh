#!/usr/bin/env bash
# The FULL fault suite of resilient-amqp:   bash scripts/faults.sh
#
# Starts its own private RabbitMQ node (scripts/broker.sh, fresh data) and stops
# it again when this script ends -- passed, failed or interrupted -- then runs
#   FAULT_SUITE=full cargo test --release --test fault_suite
# (tests/fault_suite.rs: close_all_connections every 0.5 s, stop_app 3 s, SIGKILL
# of the broker + restart with its data, a silent network blackhole, a memory
# alarm; publishers and consumers; zero loss required). It prints the table and
# writes target/fault-suite.md and target/fault-suite.json. Then the cluster
# scenarios: bash scripts/cluster-test.sh (a private 3-node cluster, quorum
# queues: a node SIGKILLed, a rolling restart, a partition; target/cluster-faults.md).
# Under ~15 minutes.
#
# The SHORT suite runs as part of `bash scripts/test.sh` (cargo test).
#
# Settings (environment):
#   RA_BROKER_PORT      AMQP port of the private node (default 31730; the node also
#                       uses PORT+1 and PORT+2). It must not be running already:
#                       this script stops the node it started. The default lies below
#                       the kernel's ephemeral range (32768-60999): while the broker is
#                       down, a client connect to a port inside that range can pick the
#                       port itself as source port (TCP self-connect), and the TIME_WAIT
#                       it leaves blocks the broker's listener for 60 s.
#   FAULT_SUITE         full (default) or short
#   FAULT_SUITE_ONLY    e.g. "2,5": only those scenarios
#   FAULT_SUITE_TRACE=1 the library's timeline (100 ms steps) on stderr
#   FAULT_SUITE_CLUSTER=0  skip the cluster scenarios (scripts/cluster-test.sh, run after
#                       the single-node suite unless FAULT_SUITE_ONLY is set)
#   RA_FAULTS_TIMEOUT   seconds for build + suite (default 1200)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SCRIPT=faults.sh
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

use_cargo_env

export_test_broker 31730
export FAULT_SUITE=${FAULT_SUITE:-full}
TIMEOUT=${RA_FAULTS_TIMEOUT:-1200}
unset RA_BROKER_KEEP_DATA # a fresh node; the SIGKILL scenario restarts it with its data itself

T0=$SECONDS
BROKER_STARTED=0

# shellcheck disable=SC2317 # invoked by the EXIT trap
finish() {
    local rc=$?
    stop_child_and_broker
    echo
    if ((rc == 0)); then
        echo "faults.sh: PASSED ($FAULT_SUITE suite, $((SECONDS - T0)) s) -- target/fault-suite.md, target/fault-suite.json"
    else
        echo "faults.sh: FAILED (exit $rc, $((SECONDS - T0)) s) -- target/fault-suite.md, target/fault-suite.json; broker logs: $ROOT/target/rabbitmq/node-$RA_BROKER_PORT/log/"
    fi
    exit "$rc"
}
install_traps

# rabbitmq-server etc. when missing (a no-op when all is there)
bash scripts/deps.sh

require_no_running_broker

say "starting a private RabbitMQ node on 127.0.0.1:$RA_BROKER_PORT"
BROKER_STARTED=1
bash scripts/broker.sh start >/dev/null

say "FAULT_SUITE=$FAULT_SUITE cargo test --release --test fault_suite"
# in the background, so that a signal reaches our traps at once
timeout -k 20 "$TIMEOUT" cargo test --release --test fault_suite &
CHILD=$!
rc=0
wait "$CHILD" || rc=$?
CHILD=""
if ((rc == 124)); then
    echo "faults.sh: the suite timed out after $TIMEOUT s" >&2
fi
# The cluster scenarios (quorum queues on a private 3-node cluster) complete the suite; they
# start and stop their own nodes (ports 31810-31839).
if [[ ${FAULT_SUITE_CLUSTER:-1} == 1 && -z ${FAULT_SUITE_ONLY:-} ]]; then
    say "the cluster scenarios: bash scripts/cluster-test.sh $FAULT_SUITE"
    crc=0
    bash scripts/cluster-test.sh "$FAULT_SUITE" || crc=$?
    ((rc == 0)) && rc=$crc
fi
exit "$rc"
