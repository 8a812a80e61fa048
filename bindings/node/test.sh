#!/usr/bin/env bash
# Runs the Node binding's tests (node --test) against the broker given by
#   RESILIENT_AMQP_TEST_URI   amqp URI (required)
#   RESILIENT_AMQP_TEST_CTL   command prefix that runs rabbitmqctl (the fault test)
#   RESILIENT_AMQP_LIB_DIR    directory of libresilient_amqp.so (default <repo>/target/release)
# Exits non-zero on any failure. Needs `bash deps.sh` first (node_modules).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
: "${RESILIENT_AMQP_TEST_URI:?set RESILIENT_AMQP_TEST_URI}"
export RESILIENT_AMQP_LIB_DIR="${RESILIENT_AMQP_LIB_DIR:-$(cd ../.. && pwd)/target/release}"
if [ ! -f "$RESILIENT_AMQP_LIB_DIR/libresilient_amqp.so" ]; then
    echo "node test.sh: no libresilient_amqp.so in $RESILIENT_AMQP_LIB_DIR (cargo build --release)" >&2
    exit 1
fi
if [ ! -d node_modules/koffi ]; then
    echo "node test.sh: koffi is missing: run bash bindings/node/deps.sh" >&2
    exit 1
fi
# One test file at a time (--test-concurrency=1): the machine is small and
# the fault test closes every connection of the broker.
exec timeout 220 node --test --test-concurrency=1 test/*.test.js
