#!/usr/bin/env bash
# The TLS tests of resilient-amqp:   bash scripts/tls-test.sh
#
# Makes the certificates (scripts/tls-certs.sh, into target/tls-test/certs), starts its own
# private RabbitMQ node with a TLS listener (scripts/broker.sh with RA_BROKER_TLS_DIR, fresh
# data) and stops it again when this script ends -- passed, failed or interrupted. Two phases:
#   1. the node serves the good server certificate (for localhost, by the test CA):
#        cargo test --release --test broker_tls -- --skip expired_certificate
#      publish/consume 10,000 over TLS, a wrong CA, the system's roots, a wrong host name and
#      a plain port each failing clearly with bounded retries, tls_insecure_skip_verify (a
#      warning per connect), close_all_connections every 0.5 s over TLS with 0 lost (read
#      back by lapin on the plain listener), EXTERNAL with a client certificate, a client
#      certificate of another CA refused;
#   2. the node restarted with an expired server certificate:
#        RESILIENT_AMQP_TEST_TLS_EXPIRED=1 cargo test --release --test broker_tls expired_certificate
# About 1-2 minutes after the build.
#
# Settings (environment):
#   RA_BROKER_PORT      AMQP port of the private node (default 31770; the node also uses
#                       PORT+1, PORT+2 and PORT+3 for TLS). It must not be running already.
#   RA_TLS_TEST_TIMEOUT seconds per cargo test phase (default 900)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SCRIPT=tls-test.sh
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

use_cargo_env

export_test_broker 31770
export RA_BROKER_TLS_PORT=$((RA_BROKER_PORT + 3))
TIMEOUT=${RA_TLS_TEST_TIMEOUT:-900}
CERTS=$ROOT/target/tls-test/certs
unset RA_BROKER_KEEP_DATA RESILIENT_AMQP_TEST_TLS_EXPIRED

T0=$SECONDS
BROKER_STARTED=0

# shellcheck disable=SC2317 # invoked by the EXIT trap
finish() {
    local rc=$?
    stop_child_and_broker
    echo
    if ((rc == 0)); then
        echo "$SCRIPT: PASSED ($((SECONDS - T0)) s)"
    else
        echo "$SCRIPT: FAILED (exit $rc, $((SECONDS - T0)) s); broker logs: $ROOT/target/rabbitmq/node-$RA_BROKER_PORT/log/"
    fi
    exit "$rc"
}
install_traps

bash scripts/deps.sh

require_no_running_broker

say "certificates (scripts/tls-certs.sh) into $CERTS"
rm -rf "$CERTS"
bash scripts/tls-certs.sh "$CERTS"

say "cargo build --release --test broker_tls"
limited "$TIMEOUT" cargo test --release --test broker_tls --no-run

# start_node DIR: (re)starts the node with the TLS listener serving DIR's certificate
start_node() {
    BROKER_STARTED=1
    RA_BROKER_TLS_DIR=$1 bash scripts/broker.sh start >/dev/null
}

export RESILIENT_AMQP_TEST_TLS_URI="amqps://guest:guest@localhost:$RA_BROKER_TLS_PORT/%2f"
export RESILIENT_AMQP_TEST_TLS_DIR=$CERTS

say "phase 1: a TLS listener on 127.0.0.1:$RA_BROKER_TLS_PORT with the good certificate"
start_node "$CERTS"
limited "$TIMEOUT" cargo test --release --test broker_tls -- --skip expired_certificate

say "phase 2: the node restarted with an expired server certificate"
bash scripts/broker.sh stop >/dev/null
start_node "$CERTS/expired"
export RESILIENT_AMQP_TEST_TLS_EXPIRED=1
limited "$TIMEOUT" cargo test --release --test broker_tls expired_certificate
