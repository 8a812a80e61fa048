#!/usr/bin/env bash
# Runs the Ruby binding's minitest suite against the broker in
# RESILIENT_AMQP_TEST_URI; the fault test runs
# "$RESILIENT_AMQP_TEST_CTL close_all_connections test" every 0.5 s.
#
#   RESILIENT_AMQP_TEST_URI      amqp URI of the broker (required)
#   RESILIENT_AMQP_TEST_CTL      command prefix that runs rabbitmqctl (required: fault test)
#   RESILIENT_AMQP_LIB_DIR       directory with libresilient_amqp.so (default <repo>/target/release)
#   RESILIENT_AMQP_INCLUDE_DIR   unused (FFI needs no header), accepted for symmetry
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
: "${RESILIENT_AMQP_TEST_URI:?RESILIENT_AMQP_TEST_URI is not set}"
: "${RESILIENT_AMQP_TEST_CTL:?RESILIENT_AMQP_TEST_CTL is not set}"
export RESILIENT_AMQP_LIB_DIR=${RESILIENT_AMQP_LIB_DIR:-$ROOT/target/release}
cd "$HERE"
# -w: warnings on; every test file in one process (minitest/autorun), exit 1 on any failure.
ruby -w -Ilib -Itest -e 'Dir[File.join("test", "test_*.rb")].sort.each { |f| require File.expand_path(f) }' -- "$@"
echo "ruby/test.sh: all passed"
