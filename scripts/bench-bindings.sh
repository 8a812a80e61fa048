#!/usr/bin/env bash
# The language bindings against the C path, in the same run:
#
#   bash scripts/bench-bindings.sh            3 rounds, 100,000 x 64 B
#   RA_BENCH_RUNS=5 RA_BENCH_N=200000 bash scripts/bench-bindings.sh
#
# Each round runs, one after the other on fresh queues of one private RabbitMQ
# node (port $RA_BROKER_PORT, default 31750; started and stopped here unless
# RA_BENCH_BROKER=running): the C driver bench/ours.c (publish N confirmed,
# then consume + ack them with callbacks, and again in pull mode), then every
# binding's bench program (bindings/<lang>/bench.*: the same publish, then its
# fastest honest consume). The order of the bindings rotates each round. The
# table gives medians of msg/s and each binding's consume and publish as a
# ratio to the C callback consumer / C publisher of the same round (median of
# the per-round ratios). Written to target/bench/bindings.md.
#
# Goals (issue 14): Go and C++ consume at least 0.8x the C consumer; Python,
# Node and Ruby at least 0.5x. Nothing is asserted; a run that fails to do all
# its work fails the script.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SCRIPT=bench-bindings.sh
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
use_cargo_env
export RA_BROKER_PORT=${RA_BROKER_PORT:-31750}
export_test_broker "$RA_BROKER_PORT"
URI=$RESILIENT_AMQP_TEST_URI
export RESILIENT_AMQP_LIB_DIR=${RESILIENT_AMQP_LIB_DIR:-$ROOT/target/release}
export RESILIENT_AMQP_INCLUDE_DIR=${RESILIENT_AMQP_INCLUDE_DIR:-$ROOT/include}
RUNS=${RA_BENCH_RUNS:-3}
N=${RA_BENCH_N:-100000}
OUT=$ROOT/target/bench
mkdir -p "$OUT"
RAW=$OUT/bindings.raw
: >"$RAW"
STARTED=0
CHILD=""

finish() {
    local rc=$?
    trap - EXIT
    if ((STARTED)); then bash scripts/broker.sh stop >/dev/null 2>&1 || true; fi
    exit "$rc"
}
install_traps

cargo build --release >/dev/null
BIN=$OUT/drivers
build_bench_drivers "$BIN"
if [[ ${RA_BENCH_BROKER:-} != running ]]; then
    STARTED=1
    bash scripts/broker.sh start >/dev/null
fi

# The bindings present, each with its deps and a command taking URI QUEUE N SIZE.
declare -A CMD
for lang in cpp go node python ruby; do
    [[ -f bindings/$lang/deps.sh ]] || continue
    bash "bindings/$lang/deps.sh" >/dev/null
    case $lang in
        cpp)
            b=$ROOT/target/bindings/cpp-bench
            cmake -S bindings/cpp -B "$b" -DCMAKE_BUILD_TYPE=Release \
                -DRESILIENT_AMQP_LIB_DIR="$RESILIENT_AMQP_LIB_DIR" \
                -DRESILIENT_AMQP_INCLUDE_DIR="$RESILIENT_AMQP_INCLUDE_DIR" >/dev/null
            cmake --build "$b" -j2 --target bench_cpp >/dev/null
            CMD[cpp]="$b/bench_cpp"
            ;;
        go)
            if [[ -f bindings/go/bench.sh ]]; then CMD[go]="bash $ROOT/bindings/go/bench.sh"; fi
            ;;
        node) CMD[node]="node $ROOT/bindings/node/bench.js" ;;
        python) CMD[python]="python3 $ROOT/bindings/python/bench.py" ;;
        ruby) CMD[ruby]="ruby $ROOT/bindings/ruby/bench.rb" ;;
    esac
done
LANGS=("${!CMD[@]}")
echo "$SCRIPT: bindings: ${LANGS[*]}; $RUNS rounds of $N x 64 B"

json_field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

c_round() { # ROUND: C publish, C consume (callbacks), C consume (pull) on the same queue
    local r=$1 q="bench.bindings.c.r$1" out pub con pull
    "$BIN/rmqc" delete "uri=$URI" "queue=$q" >/dev/null 2>&1 || true
    out=$("$BIN/ours" publish "uri=$URI" "queue=$q" "n=$N" size=64 durable=0 mandatory=1 | tail -n 1)
    [[ $out == *'"ok":true'* ]] || { echo "C publish failed: $out" >&2; return 1; }
    pub=$(json_field "$out" msgs_per_s)
    out=$("$BIN/ours" consume "uri=$URI" "queue=$q" "n=$N" size=64 prefetch=500 | tail -n 1)
    [[ $out == *'"ok":true'* ]] || { echo "C consume failed: $out" >&2; return 1; }
    con=$(json_field "$out" msgs_per_s)
    "$BIN/rmqc" fill "uri=$URI" "queue=$q" "n=$N" size=64 durable=0 >/dev/null
    out=$("$BIN/ours" consume_pull "uri=$URI" "queue=$q" "n=$N" size=64 prefetch=500 | tail -n 1)
    [[ $out == *'"ok":true'* ]] || { echo "C pull consume failed: $out" >&2; return 1; }
    pull=$(json_field "$out" msgs_per_s)
    "$BIN/rmqc" delete "uri=$URI" "queue=$q" >/dev/null 2>&1 || true
    echo "$r c $pub $con" >>"$RAW"
    echo "$r c_pull 0 $pull" >>"$RAW"
    echo "  round $r: C publish $pub consume $con (pull $pull)"
}

lang_round() { # ROUND LANG
    local r=$1 lang=$2 q="bench.bindings.$2.r$1" line pub con
    "$BIN/rmqc" delete "uri=$URI" "queue=$q" >/dev/null 2>&1 || true
    line=$(limited 600 ${CMD[$lang]} "$URI" "$q" "$N" 64 | grep '^BENCH ' | tail -n 1) || true
    "$BIN/rmqc" delete "uri=$URI" "queue=$q" >/dev/null 2>&1 || true
    if [[ $line != "BENCH "* ]]; then
        echo "  round $r: $lang FAILED (no BENCH line)" >&2
        return 1
    fi
    read -r _ _ _ pub _ con <<<"$line"
    echo "$r $lang ${pub%.*} ${con%.*}" >>"$RAW"
    echo "  round $r: $line"
}

FAILS=0
for ((r = 1; r <= RUNS; r++)); do
    c_round "$r" || FAILS=$((FAILS + 1))
    # rotate the bindings' order each round
    n=${#LANGS[@]}
    for ((i = 0; i < n; i++)); do
        lang=${LANGS[$(((i + r) % n))]}
        lang_round "$r" "$lang" || FAILS=$((FAILS + 1))
    done
done

python3 - "$RAW" "$OUT/bindings.md" "$N" <<'PY'
import statistics, sys, collections, subprocess
raw, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = collections.defaultdict(dict)
for line in open(raw):
    r, who, pub, con = line.split()
    rows[int(r)][who] = (float(pub), float(con))
goal = {"cpp": 0.8, "go": 0.8, "python": 0.5, "node": 0.5, "ruby": 0.5}
names = {"c": "C (bench/ours.c, callbacks)", "c_pull": "C (bench/ours.c, pull mode)", "cpp": "C++",
         "go": "Go", "node": "Node", "python": "Python", "ruby": "Ruby"}
whos = sorted({w for r in rows.values() for w in r}, key=lambda w: list(names).index(w))
def med(xs): return statistics.median(xs) if xs else float("nan")
lines = ["# Bindings against the C path", "",
         f"`bash scripts/bench-bindings.sh`: {len(rows)} rounds, {n:,} x 64 B per run, one private "
         "RabbitMQ node; each round runs the C driver, then every binding (order rotating). Ratios "
         "are medians of per-round ratios to the C callback consumer / C publisher of the same round.",
         "", f"git {subprocess.run(['git','rev-parse','--short','HEAD'],capture_output=True,text=True).stdout.strip()}, "
         f"load average {open('/proc/loadavg').read().split()[0]}", "",
         "| binding | publish msg/s | consume msg/s | consume / C | publish / C | consume goal |",
         "|---|---:|---:|---:|---:|---|"]
for w in whos:
    pubs = [rows[r][w][0] for r in rows if w in rows[r]]
    cons = [rows[r][w][1] for r in rows if w in rows[r]]
    cr = [rows[r][w][1] / rows[r]["c"][1] for r in rows if w in rows[r] and "c" in rows[r]]
    pr = [rows[r][w][0] / rows[r]["c"][0] for r in rows if w in rows[r] and "c" in rows[r] and rows[r][w][0] > 0]
    g = goal.get(w)
    goal_s = "" if g is None else (f">= {g} " + ("met" if med(cr) >= g else "NOT met"))
    pub_s = f"{med(pubs):,.0f}" if w != "c_pull" else "-"
    pr_s = f"{med(pr):.2f}" if w not in ("c", "c_pull") else "-"
    lines.append(f"| {names[w]} | {pub_s} | {med(cons):,.0f} | {med(cr):.2f} | {pr_s} | {goal_s} |")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo "$SCRIPT: $OUT/bindings.md"
if ((FAILS)); then
    echo "$SCRIPT: FAILED: $FAILS run(s) did not do all their work" >&2
    exit 1
fi
