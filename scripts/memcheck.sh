#!/usr/bin/env bash
# Memory checks of the C programs:   bash scripts/memcheck.sh [asan|valgrind|both]
#
# Runs every program of tests/c and examples-c (through tests/c_programs.rs,
# so exactly the programs, flags and PASS/FAIL checks of `cargo test`):
#   asan      built with gcc -fsanitize=address,undefined, run with
#             ASAN_OPTIONS=detect_leaks=1 (LeakSanitizer) and
#             UBSAN_OPTIONS=halt_on_error=1. The Rust library is not
#             instrumented (no nightly toolchain), but ASan's malloc/free
#             interceptors serve its allocations too, so leaks, double frees
#             and invalid frees are seen on both sides; buffer overflows only
#             in the C code. Suppressions: tests/lsan.supp.
#   valgrind  every program runs under valgrind memcheck with
#             --error-exitcode=99 --leak-check=full
#             --errors-for-leak-kinds=definite --show-leak-kinds=definite
#             (Rust and C both checked). Suppressions: tests/valgrind.supp.
#   both      asan, then valgrind (the default)
# A program passes only with all its checks passing AND zero sanitizer /
# valgrind errors and zero bytes definitely lost in every one of its
# processes (forked children included). Time limits, alarm() and the tests'
# waits are scaled (RA_C_TIME_SCALE, default 2 for asan, 8 for valgrind).
#
# Broker: when RESILIENT_AMQP_TEST_URI and RESILIENT_AMQP_TEST_CTL are set
# (scripts/test.sh sets them), that broker is used and left running.
# Otherwise a private node is started with scripts/broker.sh on
# RA_BROKER_PORT (default 31760; the node also uses PORT+1 and PORT+2) and
# stopped when this script ends, passed, failed or interrupted.
#
# Settings: RA_BROKER_PORT, RA_C_TIME_SCALE, RA_MEMCHECK_ASAN_TIMEOUT (seconds,
# default 600), RA_MEMCHECK_VALGRIND_TIMEOUT (default 480: the whole valgrind
# run stays under 8 minutes), ASAN_OPTIONS / LSAN_OPTIONS / UBSAN_OPTIONS
# (appended to ours, so they win).
# Output: a summary table; per-program lines and the cargo output are kept in
# target/memcheck/.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SCRIPT=memcheck.sh
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

MODE=${1:-both}
case $MODE in
    asan | valgrind | both) ;;
    -h | --help | help)
        usage
        exit 0
        ;;
    *)
        usage >&2
        exit 2
        ;;
esac

use_cargo_env
command -v cargo >/dev/null || {
    echo "memcheck.sh: cargo not found (install Rust)" >&2
    exit 1
}

OUT=$ROOT/target/memcheck
mkdir -p "$OUT"
T0=$SECONDS
OWN_BROKER=0
RESULTS=()

# shellcheck disable=SC2317 # (runs from the EXIT trap)
finish() {
    local rc=$?
    trap - EXIT
    trap "" INT TERM HUP
    set +e
    if ((OWN_BROKER)); then
        say "stopping the private RabbitMQ node (port $RA_BROKER_PORT)"
        bash "$ROOT/scripts/broker.sh" stop || echo "memcheck.sh: WARNING: could not stop the broker" >&2
    fi
    if ((${#RESULTS[@]})); then
        echo
        printf '%s\n' "${RESULTS[@]}"
    fi
    if ((rc == 0)); then
        echo "memcheck.sh: PASSED ($MODE, $((SECONDS - T0)) s)"
    else
        echo "memcheck.sh: FAILED ($MODE, exit $rc, $((SECONDS - T0)) s); logs in $OUT/"
    fi
    exit "$rc"
}
install_traps


# --- tools -------------------------------------------------------------------

need_asan() {
    local d
    d=$(mktemp -d)
    printf 'int main(void){return 0;}\n' >"$d/t.c"
    if ! gcc -fsanitize=address,undefined "$d/t.c" -o "$d/t" 2>"$d/err" || ! "$d/t"; then
        cat "$d/err" >&2
        rm -rf "$d"
        echo "memcheck.sh: gcc cannot build with -fsanitize=address,undefined (libasan/libubsan missing?); run: bash scripts/deps.sh" >&2
        exit 1
    fi
    rm -rf "$d"
}
need_valgrind() {
    command -v valgrind >/dev/null || {
        echo "memcheck.sh: valgrind not found; run: bash scripts/deps.sh (or apt-get install valgrind)" >&2
        exit 1
    }
}
case $MODE in
    asan) need_asan ;;
    valgrind) need_valgrind ;;
    both)
        need_asan
        need_valgrind
        ;;
esac

# --- broker ------------------------------------------------------------------

if [[ -n ${RESILIENT_AMQP_TEST_URI:-} && -n ${RESILIENT_AMQP_TEST_CTL:-} ]]; then
    say "using the broker of the caller: $RESILIENT_AMQP_TEST_URI"
elif [[ -n ${RESILIENT_AMQP_TEST_URI:-} || -n ${RESILIENT_AMQP_TEST_CTL:-} ]]; then
    echo "memcheck.sh: set both RESILIENT_AMQP_TEST_URI and RESILIENT_AMQP_TEST_CTL, or neither (then a private broker is started)" >&2
    exit 2
else
    export_test_broker 31760
    say "starting a private RabbitMQ node on 127.0.0.1:$RA_BROKER_PORT"
    OWN_BROKER=1
    bash scripts/broker.sh start >/dev/null
fi

# The outage demo stops and starts the broker application; make sure it runs.
broker_app_up() {
    sh -c "$RESILIENT_AMQP_TEST_CTL -q start_app" >/dev/null 2>&1 || true
    sh -c "$RESILIENT_AMQP_TEST_CTL -q await_startup --timeout 60" >/dev/null
}

# --- build ---------------------------------------------------------------------

say "building the library and the C test runner (release, with debug info)"
limited 1800 cargo build --release
limited 1800 cargo test --release --test c_programs --no-run
# The programs link against a private copy of the library: other cargo runs
# in the same tree may rebuild target/release while the checks run.
LIB_DIR=$OUT/lib
rm -rf "$LIB_DIR"
mkdir -p "$LIB_DIR"
cp -P target/release/libresilient_amqp.so target/release/libresilient_amqp.so.0 "$LIB_DIR/"
export RA_C_LIB_DIR=$LIB_DIR

# --- runs ------------------------------------------------------------------------

# summarize MODE REPORT SECONDS: one line for the table
summarize() {
    local mode=$1 report=$2 secs=$3
    awk -v mode="$mode" -v secs="$secs" '
        {
            n++
            for (i = 1; i <= NF; i++) {
                if ($i == "processes") p += $(i + 1) + 0
                if ($i == "errors") e += $(i + 1) + 0
                if ($i == "lost") l += $(i + 1) + 0
                if ($i == "suppressed") s += $(i + 1) + 0
            }
        }
        END {
            printf "memcheck %-8s %2d program runs%s, errors %d, definitely lost %d bytes, suppressed %d, %d s\n",
                mode, n, (mode == "valgrind" ? sprintf(" (%d processes)", p) : ""), e, l, s, secs
        }' "$report"
}

run_mode() {
    local mode=$1 var secs report log rc=0 t
    case $mode in
        asan)
            var=RA_C_SANITIZE
            secs=${RA_MEMCHECK_ASAN_TIMEOUT:-600}
            ;;
        valgrind)
            var=RA_C_VALGRIND
            secs=${RA_MEMCHECK_VALGRIND_TIMEOUT:-480}
            ;;
    esac
    report=$OUT/$mode.report
    log=$OUT/$mode.log
    : >"$report"
    broker_app_up
    say "[$mode] cargo test --release --test c_programs (limit $secs s; log: $log)"
    t=$SECONDS
    limited "$secs" env "$var=1" RA_C_MEMCHECK_REPORT="$report" \
        cargo test --release --test c_programs -- --test-threads=2 \
        > >(tee "$log") 2>&1 || rc=$?
    wait # for tee
    echo
    echo "per program ($report):"
    sed 's/^/  /' "$report"
    grep -E '^test .* \.\.\. ignored' "$log" | sed 's/^test /  not run: /' || true
    if [[ ! -s $report ]]; then
        echo "memcheck.sh: [$mode] no program reported (build or setup failed?)" >&2
        ((rc)) || rc=1
    fi
    RESULTS+=("$(summarize "$mode" "$report" $((SECONDS - t)))$( ((rc)) && echo "  FAILED" || echo "  ok")")
    return "$rc"
}

status=0
case $MODE in
    asan) run_mode asan || status=$? ;;
    valgrind) run_mode valgrind || status=$? ;;
    both)
        run_mode asan || status=$?
        run_mode valgrind || status=$?
        ;;
esac
exit "$status"
