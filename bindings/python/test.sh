#!/usr/bin/env bash
# Runs every test of the Python binding against the broker given by:
#   RESILIENT_AMQP_TEST_URI      amqp URI (required)
#   RESILIENT_AMQP_TEST_CTL      command prefix running rabbitmqctl (the fault test needs it)
#   RESILIENT_AMQP_LIB_DIR       directory of libresilient_amqp.so (default <repo>/target/release)
#   RESILIENT_AMQP_INCLUDE_DIR   the header (default <repo>/include): the layout test compiles
#                                the ctypes structs against it with gcc
# Exits non-zero on any failure. Installs nothing outside a temporary directory.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
: "${RESILIENT_AMQP_TEST_URI:?set RESILIENT_AMQP_TEST_URI to the amqp URI of the broker}"
export RESILIENT_AMQP_LIB_DIR=${RESILIENT_AMQP_LIB_DIR:-$repo/target/release}
export RESILIENT_AMQP_INCLUDE_DIR=${RESILIENT_AMQP_INCLUDE_DIR:-$repo/include}
unset RESILIENT_AMQP_LIB
if [[ ! -f $RESILIENT_AMQP_LIB_DIR/libresilient_amqp.so ]]; then
    echo "bindings/python/test.sh: no $RESILIENT_AMQP_LIB_DIR/libresilient_amqp.so (cargo build --release)" >&2
    exit 1
fi
if [[ -z ${RESILIENT_AMQP_TEST_CTL:-} ]]; then
    echo "bindings/python/test.sh: RESILIENT_AMQP_TEST_CTL is not set: the fault test is required" >&2
    exit 1
fi
export PYTHONDONTWRITEBYTECODE=1

# The package installs with pip (into a temporary target, no network) and
# finds the library through RESILIENT_AMQP_LIB as well.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [[ -d $here/.deps ]]; then
    (cd "$here" && PYTHONPATH="$here/.deps" python3 -m pip install --disable-pip-version-check --quiet --no-build-isolation --no-deps --no-index \
        --target "$tmp/site" . >"$tmp/pip.log" 2>&1) || { cat "$tmp/pip.log" >&2; exit 1; }
    rm -rf "$here/build" "$here"/*.egg-info
    (cd "$tmp" && PYTHONPATH="$tmp/site" RESILIENT_AMQP_LIB="$RESILIENT_AMQP_LIB_DIR/libresilient_amqp.so" \
        python3 -c "import resilient_amqp, sys; assert resilient_amqp.__file__.startswith('$tmp/site'), resilient_amqp.__file__; print('pip install: ok, ABI', resilient_amqp.abi_version())")
else
    echo "bindings/python/test.sh: run deps.sh first (the pip-install check needs .deps/)" >&2
    exit 1
fi

cd "$here"
timeout 220 python3 -m unittest discover -s tests -t tests -v
