#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ (docs/FUZZING.md):   bash scripts/fuzz.sh
#   frames   every codec parser on arbitrary bytes
#   reader   the reader's state machine (channels 1..=3 with a consumer each)
# Each runs RA_FUZZ_SECONDS (default 60) on a scratch copy of its committed
# corpus (fuzz/corpus/TARGET, copied to target/fuzz-run/TARGET/corpus, so the
# run never changes the committed one), with AddressSanitizer, the AMQP
# dictionary fuzz/amqp.dict, and a 64 MiB limit on any single allocation.
# A crash (panic, sanitizer report, stack overflow, timeout, allocation over
# the limit) fails the script, which prints the artifact's path.
#
# Works on the stable toolchain: cargo-fuzz needs nightly features, enabled
# with RUSTC_BOOTSTRAP=1. Installs cargo-fuzz (cargo install --locked) when it
# is missing. Longer run:   RA_FUZZ_SECONDS=3600 bash scripts/fuzz.sh
# Settings: RA_FUZZ_SECONDS, RA_FUZZ_TARGETS (default "frames reader").
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SCRIPT=fuzz.sh
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
use_cargo_env

SECS=${RA_FUZZ_SECONDS:-60}
TARGETS=${RA_FUZZ_TARGETS:-frames reader}
CARGO_FUZZ_VERSION=0.13.2
TARGET_DIR=$ROOT/target/fuzz
RUN_DIR=$ROOT/target/fuzz-run
export RUSTC_BOOTSTRAP=1

finish() {
    local rc=$?
    trap - EXIT
    exit "$rc"
}
install_traps

if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz $CARGO_FUZZ_VERSION"
    limited 1200 cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

say "building the fuzz targets"
limited 1800 cargo fuzz build --target-dir "$TARGET_DIR"

failed=()
for t in $TARGETS; do
    dir=$RUN_DIR/$t
    rm -rf "$dir"
    mkdir -p "$dir/corpus" "$dir/artifacts"
    cp fuzz/corpus/"$t"/* "$dir/corpus/"
    say "[$t] fuzzing for $SECS s (log: $dir/fuzz.log)"
    rc=0
    limited $((SECS + 300)) cargo fuzz run --target-dir "$TARGET_DIR" "$t" "$dir/corpus" -- \
        -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=64 \
        -dict=fuzz/amqp.dict -artifact_prefix="$dir/artifacts/" -print_final_stats=1 \
        >"$dir/fuzz.log" 2>&1 || rc=$?
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done )' "$dir/fuzz.log" || true
    if ((rc != 0)); then
        tail -n 60 "$dir/fuzz.log"
        echo "$SCRIPT: [$t] FAILED (exit $rc); artifacts:" >&2
        ls -1 "$dir"/artifacts/* >&2 2>/dev/null || echo "  (none)" >&2
        echo "$SCRIPT: reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run $t ARTIFACT;" \
            "minimize: RUSTC_BOOTSTRAP=1 cargo fuzz tmin $t ARTIFACT;" \
            "then keep it as fuzz/regressions/$t/NAME.bin (tests/reader_fuzz.rs replays it)" >&2
        failed+=("$t")
    else
        echo "==> [$t] no crash in $SECS s"
    fi
done
if ((${#failed[@]})); then
    echo "$SCRIPT: crashes found by: ${failed[*]}" >&2
    exit 1
fi
