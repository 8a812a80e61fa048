#!/usr/bin/env bash
# The language bindings' tests:   bash scripts/bindings.sh [LANG ...]
#
# Runs bindings/<lang>/deps.sh (installs what the binding needs, if missing)
# and bindings/<lang>/test.sh for every binding (or those named), against the
# broker of the caller (RESILIENT_AMQP_TEST_URI, RESILIENT_AMQP_TEST_CTL,
# RA_BROKER_PORT: scripts/test.sh sets them) and the library of
# target/release (built first if missing). Runs them one after the other, all
# of them even when one fails, and fails if any failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
: "${RESILIENT_AMQP_TEST_URI:?set RESILIENT_AMQP_TEST_URI (scripts/test.sh does)}"
: "${RESILIENT_AMQP_TEST_CTL:?set RESILIENT_AMQP_TEST_CTL (scripts/test.sh does)}"
export RESILIENT_AMQP_LIB_DIR=${RESILIENT_AMQP_LIB_DIR:-$ROOT/target/release}
export RESILIENT_AMQP_INCLUDE_DIR=${RESILIENT_AMQP_INCLUDE_DIR:-$ROOT/include}
if [[ ! -f $RESILIENT_AMQP_LIB_DIR/libresilient_amqp.so ]]; then
    cargo build --release
fi
langs=("$@")
if ((${#langs[@]} == 0)); then
    for d in bindings/*/; do
        [[ -f $d/test.sh ]] && langs+=("$(basename "$d")")
    done
fi
failed=()
for lang in "${langs[@]}"; do
    t=$SECONDS
    echo "==> bindings/$lang"
    if bash "bindings/$lang/deps.sh" && bash "bindings/$lang/test.sh"; then
        echo "==> bindings/$lang ok ($((SECONDS - t)) s)"
    else
        echo "==> bindings/$lang FAILED ($((SECONDS - t)) s)" >&2
        failed+=("$lang")
    fi
done
if ((${#failed[@]})); then
    echo "bindings.sh: failed: ${failed[*]}" >&2
    exit 1
fi
echo "bindings.sh: ok (${langs[*]})"
