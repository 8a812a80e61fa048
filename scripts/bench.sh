#!/usr/bin/env bash
# Benchmark resilient-amqp against rabbitmq-c (librabbitmq), same broker, same work:
#
#   bash scripts/bench.sh            full: 3 runs of each (medians, min/max), 200,000 messages
#   bash scripts/bench.sh --quick    1 run of each with small counts (a build + correctness check)
#   bash scripts/bench.sh --runs=5   more runs per case
#
# What it does:
#   1. installs what is missing (scripts/deps.sh: rabbitmq-server, librabbitmq-dev, gcc),
#      cargo build --release, builds the C drivers bench/ours.c and bench/rmqc.c with gcc -O2
#   2. starts a private RabbitMQ node (scripts/broker.sh, port $RA_BROKER_PORT, default 31750)
#      with a TLS listener on PORT+3 (certificates by scripts/tls-certs.sh into
#      target/bench/certs) and stops it at the end if it started it
#   3. runs every case ALTERNATING ours, rabbitmq-c, ours, rabbitmq-c, ... each run on a fresh
#      queue; after each run the broker's count (rabbitmqctl list_queues) is checked against
#      what the driver says it did, and the queue is deleted
#        pub_transient_64   confirmed publish, N x 64 B, non-durable queue, transient messages
#        pub_durable_64     the same, durable queue + persistent messages
#        pub_durable_64_nomandatory  the same without the mandatory flag (both clients)
#                           (every other publish case: mandatory, our default, on both sides)
#        pub_props_64       the first with 5 string properties (content_type, correlation_id,
#                           message_id per message, type, app_id) and 3 headers (traceparent,
#                           tenant, attempt) per message (ours: amqp_publish_message)
#        pub_transient_64_vs_stream   pub_transient_64 (ours: defaults, mandatory on) against
#                           rabbitmq-c's best streaming usage: no in-flight limit, confirms
#                           drained without blocking, mandatory off
#        pub_transient_64_nomandatory_vs_stream  the same with ours' mandatory off too
#                           (every publish case also logs the broker's CPU per message:
#                           utime+stime of its beam process, a "broker_cpu" line)
#        pub_transient_4k   the same as the first with 4 KiB bodies
#        pub_tls_64         the first over TLS (amqps://, the node's TLS listener on PORT+3;
#                           ours: rustls, rabbitmq-c: amqp_ssl_socket, OpenSSL; both verify
#                           the certificate and host name against the test CA)
#        pub_spool_64       ours only: pub_transient_64 in memory (client ours) against the
#                           same with the on-disk spool (queue option spool_dir, client
#                           ours-spool-batch: spool_sync=batch; ours-spool-always with
#                           RA_BENCH_N_ALWAYS messages: fdatasync per publish), rotating
#                           the order each run; the spool in target/bench/spool
#        consume_64         consume + ack (prefetch 500) a queue pre-filled with N x 64 B
#                           (also context switches per delivery, getrusage of the process)
#        consume_pull_64    the same, ours in pull mode (amqp_poll batches, amqp_settle_many)
#        consume_tls_64     consume_64 over TLS
#        latency_1t/_8t     the time of each publish call from 1 and from 8 threads
#        threads_8x1/_8x8/_32x1/_32x8   8 or 32 producer threads on ONE connection, to 1 or 8
#                           queues: rate and call p99/p99.9 (rabbitmq-c: the connection
#                           shared under a mutex, a confirm channel per queue)
#        e2e_10k            publish -> consume latency at 10,000 msg/s, same process
#        e2e_1k, e2e_100    the same at 1,000 and 100 msg/s (an idle service's latency)
#        many_q10/_q100/_q1000  10, 100, 1,000 queues on one connection, one consumer each:
#                           aggregate publish (until confirmed) and consume rates, threads and
#                           RSS while consuming (RA_BENCH_ONLY=many_queues runs all three)
#        memory_1m          (ours only) RSS growth with 1,000,000 buffered 64 B messages
#                           while the broker is unreachable
#        bindings           every language binding's publish and consume against the C
#                           driver, same broker, same run (scripts/bench-bindings.sh;
#                           target/bench/bindings.md)
#   4. bench/aggregate.py writes target/bench/results.md, results.json and results.svg
#      from target/bench/raw.jsonl (one JSON line per run)
#
# It never fails on a speed; it fails (exit 1) when a run did not do all its work
# (a message not confirmed, not consumed, or a broker count that does not match).
#
# Settings (environment):
#   RA_BROKER_PORT        broker port (default 31750; the node also uses PORT+1, PORT+2 and
#                         PORT+3 for TLS)
#   RA_BENCH_RUNS         runs per case (default 3; --quick: 1)
#   RA_BENCH_N            messages for the publish/consume/latency cases (default 200000)
#   RA_BENCH_N_4K         messages for the 4 KiB case (default 200000 = 800 MiB of bodies)
#   RA_BENCH_N_ALWAYS     messages for pub_spool_64's spool_sync=always runs (default N/20)
#   RA_BENCH_N_MANY       messages for the many-queues cases, over all queues (default 100000)
#   RA_BENCH_E2E_SECONDS  length of the end-to-end run (default 5)
#   RA_BENCH_SETTLE       seconds of pause between runs (default 1; --quick: 0)
#   RA_BENCH_ONLY         space-separated case names to run (default: all)
#   RA_BENCH_NOTE         a sentence copied into the results (e.g. "machine busy")
#   RA_BENCH_SKIP_BUILD=1 do not run cargo build / deps (use what is built)
#   RA_BENCH_WARMUP       untimed publishes before ours' latency cases (default 0: cold)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SCRIPT=bench.sh
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

use_cargo_env

QUICK=0
RUNS=${RA_BENCH_RUNS:-3}
for arg in "$@"; do
    case $arg in
        --quick) QUICK=1 ;;
        --runs=*) RUNS=${arg#--runs=} ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "bench.sh: unknown argument '$arg' (try --help)" >&2
            exit 2
            ;;
    esac
done

if ((QUICK)); then
    RUNS=1
    N=${RA_BENCH_N:-20000}
    N_4K=${RA_BENCH_N_4K:-5000}
    E2E_SECONDS=${RA_BENCH_E2E_SECONDS:-2}
    SETTLE=${RA_BENCH_SETTLE:-0}
else
    N=${RA_BENCH_N:-200000}
    N_4K=${RA_BENCH_N_4K:-200000}
    E2E_SECONDS=${RA_BENCH_E2E_SECONDS:-5}
    SETTLE=${RA_BENCH_SETTLE:-1}
fi
N_MEM=1000000
N_ALWAYS=${RA_BENCH_N_ALWAYS:-$((N / 20))}
N_MANY=${RA_BENCH_N_MANY:-100000}
((QUICK)) && N_MANY=${RA_BENCH_N_MANY:-10000}
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || {
    echo "bench.sh: runs must be a positive number (got '$RUNS')" >&2
    exit 2
}
ONLY=" ${RA_BENCH_ONLY:-} "
wanted() { [[ $ONLY == "  " || $ONLY == *" $1 "* ]]; }

export RA_BROKER_PORT=${RA_BROKER_PORT:-31750}
URI="amqp://guest:guest@127.0.0.1:$RA_BROKER_PORT/%2f"
OUT=$ROOT/target/bench
BIN=$OUT/bin
RAW=$OUT/raw.jsonl
LOG=$OUT/bench.log
mkdir -p "$BIN"
: >"$RAW"
: >"$LOG"

BROKER_STARTED=0
finish() {
    local rc=$?
    trap - EXIT
    trap "" INT TERM HUP
    set +e
    if ((BROKER_STARTED)); then
        say "stopping the private RabbitMQ node (port $RA_BROKER_PORT)"
        bash "$ROOT/scripts/broker.sh" stop >>"$LOG" 2>&1 || echo "bench.sh: WARNING: could not stop the broker" >&2
    fi
    exit "$rc"
}
install_traps

# ---- build --------------------------------------------------------------------------------

if [[ ${RA_BENCH_SKIP_BUILD:-0} != 1 ]]; then
    if [[ ! -f /usr/include/amqp.h || ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]] || ! command -v gcc >/dev/null; then
        say "installing dependencies (scripts/deps.sh)"
        bash scripts/deps.sh
    fi
    say "cargo build --release"
    cargo build --release
fi
say "building the C drivers (gcc -O2) into $BIN"
build_bench_drivers "$BIN"

# ---- broker --------------------------------------------------------------------------------

CERTS=$OUT/certs
TLS_PORT=$((RA_BROKER_PORT + 3))
if bash scripts/broker.sh status >/dev/null 2>&1; then
    say "using the private RabbitMQ node already running on port $RA_BROKER_PORT"
else
    say "starting a private RabbitMQ node on port $RA_BROKER_PORT (TLS on $TLS_PORT)"
    BROKER_STARTED=1
    bash scripts/tls-certs.sh "$CERTS" >>"$LOG" 2>&1
    RA_BROKER_TLS_DIR=$CERTS RA_BROKER_TLS_PORT=$TLS_PORT bash scripts/broker.sh start >>"$LOG" 2>&1 || {
        tail -20 "$LOG" >&2
        exit 1
    }
fi
# The TLS cases' URI (the certificate is for localhost); empty when the node has no TLS
# listener (a node that was already running): those cases are skipped.
TLS_URI=""
if [[ -r $CERTS/ca.pem ]] && (exec 3<>"/dev/tcp/127.0.0.1/$TLS_PORT") 2>/dev/null; then
    TLS_URI="amqps://guest:guest@localhost:$TLS_PORT/%2f?cacertfile=$CERTS/ca.pem"
fi

# ---- runs ------------------------------------------------------------------------------------

FAILS=0
MODE_NAME=full
((QUICK)) && MODE_NAME=quick
python3 bench/aggregate.py meta --mode "$MODE_NAME" --runs "$RUNS" --n "$N" --n-4k "$N_4K" \
    --e2e-seconds "$E2E_SECONDS" --port "$RA_BROKER_PORT" --rmqc "$BIN/rmqc" \
    --note "${RA_BENCH_NOTE:-}" >>"$RAW"


# run CLIENT TEST RUN MODE key=value...: one driver run, its JSON line appended to $RAW
run() {
    local client=$1 test=$2 run=$3 mode=$4 bin rc=0 line
    shift 4
    bin=$BIN/ours
    [[ $client == rabbitmq-c ]] && bin=$BIN/rmqc
    limited 900 "$bin" "$mode" "uri=${RUN_URI:-$URI}" "test=$test" "run=$run" "$@" >"$OUT/line.json" 2>>"$LOG" || rc=$?
    line=$(tail -n 1 "$OUT/line.json")
    if [[ -z $line ]]; then
        line="{\"kind\":\"run\",\"client\":\"$client\",\"mode\":\"$mode\",\"test\":\"$test\",\"run\":$run,\"ok\":false,\"error\":\"driver exited with $rc and no output (see $LOG)\"}"
    fi
    echo "$line" >>"$RAW"
    python3 bench/aggregate.py line "$line"
    if ((rc != 0)); then
        FAILS=$((FAILS + 1))
    fi
    return 0
}

# verify CLIENT TEST RUN QUEUE EXPECTED: the broker's own count (rabbitmqctl list_queues) must
# reach EXPECTED ready messages and 0 unacknowledged within 20 s; then the queue is deleted
verify() {
    local client=$1 test=$2 run=$3 queue=$4 expected=$5 row="" messages=-1 unacked=-1 ok=false
    local deadline=$((SECONDS + 20))
    while :; do
        row=$(bash scripts/broker.sh ctl -q list_queues --no-table-headers name messages messages_unacknowledged 2>>"$LOG" |
            awk -v q="$queue" '$1 == q {print $2, $3}') || true
        if [[ -n $row ]]; then
            read -r messages unacked <<<"$row"
            if [[ $messages == "$expected" && $unacked == 0 ]]; then
                ok=true
                break
            fi
        fi
        ((SECONDS >= deadline)) && break
        sleep 1
    done
    echo "{\"kind\":\"verify\",\"client\":\"$client\",\"test\":\"$test\",\"run\":$run,\"queue\":\"$queue\",\"method\":\"rabbitmqctl list_queues\",\"expected_messages\":$expected,\"messages\":$messages,\"unacked\":$unacked,\"ok\":$ok}" >>"$RAW"
    if [[ $ok == true ]]; then
        printf '    broker check: %s has %s messages, %s unacked (expected %s): ok\n' "$queue" "$messages" "$unacked" "$expected"
    else
        printf '    broker check: FAILED: %s has %s messages, %s unacked (expected %s)\n' "$queue" "$messages" "$unacked" "$expected"
        FAILS=$((FAILS + 1))
    fi
    "$BIN/rmqc" delete "uri=$URI" "queue=$queue" >/dev/null 2>>"$LOG" || true
}

# verify_set CLIENT TEST RUN QUEUE=EXPECTED...: verify for several queues with one
# rabbitmqctl call per try (it costs seconds on a loaded machine)
verify_set() {
    local client=$1 test=$2 run=$3 listing pair queue expected row messages unacked ok all
    shift 3
    local deadline=$((SECONDS + 20))
    while :; do
        listing=$(bash scripts/broker.sh ctl -q list_queues --no-table-headers name messages messages_unacknowledged 2>>"$LOG") || true
        all=true
        for pair in "$@"; do
            queue=${pair%=*} expected=${pair##*=}
            row=$(awk -v q="$queue" '$1 == q {print $2, $3}' <<<"$listing")
            [[ $row == "$expected 0" ]] || all=false
        done
        [[ $all == true ]] && break
        ((SECONDS >= deadline)) && break
        sleep 1
    done
    for pair in "$@"; do
        queue=${pair%=*} expected=${pair##*=} messages=-1 unacked=-1 ok=false
        row=$(awk -v q="$queue" '$1 == q {print $2, $3}' <<<"$listing")
        [[ -n $row ]] && read -r messages unacked <<<"$row"
        [[ $messages == "$expected" && $unacked == 0 ]] && ok=true
        echo "{\"kind\":\"verify\",\"client\":\"$client\",\"test\":\"$test\",\"run\":$run,\"queue\":\"$queue\",\"method\":\"rabbitmqctl list_queues\",\"expected_messages\":$expected,\"messages\":$messages,\"unacked\":$unacked,\"ok\":$ok}" >>"$RAW"
        if [[ $ok != true ]]; then
            printf '    broker check: FAILED: %s has %s messages, %s unacked (expected %s)\n' "$queue" "$messages" "$unacked" "$expected"
            FAILS=$((FAILS + 1))
        fi
        "$BIN/rmqc" delete "uri=$URI" "queue=$queue" >/dev/null 2>>"$LOG" || true
    done
    [[ $all == true ]] && printf '    broker check: %s queues hold what was published, 0 unacked: ok\n' "$#"
    return 0
}

settle() { if [[ $SETTLE != 0 ]]; then sleep "$SETTLE"; fi; }

# Odd runs: ours first; even runs: rabbitmq-c first. Whoever runs first after a case starts
# pays the broker's warm-up (e.g. growing its heap for 800 MB of 4 KiB bodies), so the order
# alternates too (ABBA), not just the clients.
order() {
    if (($1 % 2 == 1)); then echo "ours rabbitmq-c"; else echo "rabbitmq-c ours"; fi
}

qname() { echo "bench.$1.$2.r$3"; } # qname TEST CLIENT RUN

# The broker's CPU time so far (utime + stime of its beam process) in clock ticks; empty when
# its pid file is not there (a node started some other way).
BEAM_PID_FILE=$ROOT/target/rabbitmq/node-$RA_BROKER_PORT/rabbitmq.pid
CLK_TCK=$(getconf CLK_TCK)
beam_ticks() {
    local pid
    pid=$(cat "$BEAM_PID_FILE" 2>/dev/null) || return 0
    [[ -r /proc/$pid/stat ]] || return 0
    # fields 14 and 15 after the command name (which may hold spaces)
    sed -e 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}'
}

# broker_cpu CLIENT TEST RUN N TICKS_BEFORE: the broker's CPU per message of the run just done
broker_cpu() {
    local client=$1 test=$2 run=$3 n=$4 before=$5 after us
    after=$(beam_ticks)
    [[ -n $before && -n $after ]] || return 0
    us=$(awk -v a="$after" -v b="$before" -v t="$CLK_TCK" -v n="$n" 'BEGIN {printf "%.3f", (a - b) / t * 1e6 / n}')
    echo "{\"kind\":\"broker_cpu\",\"client\":\"$client\",\"test\":\"$test\",\"run\":$run,\"n\":$n,\"ticks\":$((after - before)),\"clk_tck\":$CLK_TCK,\"broker_cpu_us_per_msg\":$us}" >>"$RAW"
    printf '    broker CPU: %s µs/msg (%s ticks of 1/%s s for %s messages)\n' "$us" "$((after - before))" "$CLK_TCK" "$n"
}

# publish_case TEST N SIZE DURABLE MANDATORY [PROPS [RMQC_WINDOW [RMQC_MANDATORY]]]
# (both clients publish with the same flags unless RMQC_MANDATORY is given; rabbitmq-c keeps at
# most RMQC_WINDOW publishes in flight, default 512; 0: no limit, confirms drained without
# blocking every 64 publishes)
publish_case() {
    local test=$1 n=$2 size=$3 durable=$4 mandatory=$5 props=${6:-0} window=${7:-512} r client q
    local rmqc_mandatory=${8:-$5} m w ticks
    wanted "$test" || return 0
    w=$window
    ((w == 0)) && w=1000000000
    say "$test: confirmed publish, $n x $size B, durable=$durable mandatory=$mandatory (rabbitmq-c: mandatory=$rmqc_mandatory window=${window/#0/unlimited}) ($RUNS runs each, alternating, ABBA)"
    for ((r = 1; r <= RUNS; r++)); do
        for client in $(order "$r"); do
            q=$(qname "$test" "$client" "$r")
            "$BIN/rmqc" delete "uri=$URI" "queue=$q" >/dev/null 2>>"$LOG" || true
            settle
            m=$mandatory
            [[ $client == rabbitmq-c ]] && m=$rmqc_mandatory
            ticks=$(beam_ticks)
            run "$client" "$test" "$r" publish "queue=$q" "n=$n" "size=$size" "durable=$durable" \
                "mandatory=$m" "props=$props" "window=$w"
            broker_cpu "$client" "$test" "$r" "$n" "$ticks"
            verify "$client" "$test" "$r" "$q" "$n"
        done
    done
}

# spool_case TEST: ours in memory against ours with the on-disk spool (batch, and always with
# N_ALWAYS messages); the order rotates each run (the first after a pause pays the warm-up)
spool_case() {
    local test=$1 r variant q n dir variants
    wanted "$test" || return 0
    say "$test: confirmed publish, 64 B, transient: in memory vs spool_sync=batch ($N) and always ($N_ALWAYS) ($RUNS runs each, rotating)"
    for ((r = 1; r <= RUNS; r++)); do
        case $((r % 3)) in
            1) variants="ours ours-spool-batch ours-spool-always" ;;
            2) variants="ours-spool-batch ours-spool-always ours" ;;
            *) variants="ours-spool-always ours ours-spool-batch" ;;
        esac
        for variant in $variants; do
            q=$(qname "$test" "$variant" "$r")
            dir=$OUT/spool/$q
            rm -rf "$dir"
            "$BIN/rmqc" delete "uri=$URI" "queue=$q" >/dev/null 2>>"$LOG" || true
            settle
            n=$N
            case $variant in
                ours) run ours "$test" "$r" publish "queue=$q" "n=$n" size=64 durable=0 mandatory=1 ;;
                ours-spool-batch)
                    run ours "$test" "$r" publish "queue=$q" "n=$n" size=64 durable=0 mandatory=1 \
                        "client=$variant" "spool=$dir" spool_sync=batch
                    ;;
                ours-spool-always)
                    n=$N_ALWAYS
                    run ours "$test" "$r" publish "queue=$q" "n=$n" size=64 durable=0 mandatory=1 \
                        "client=$variant" "spool=$dir" spool_sync=always
                    ;;
            esac
            verify "$variant" "$test" "$r" "$q" "$n"
            rm -rf "$dir"
        done
    done
}

# many_case QUEUES: QUEUES queues on one connection, one consumer each, N_MANY x 64 B spread
# over them: publish until confirmed, then consume + ack (prefetch 100 per consumer). Ours:
# amqp_consume per queue (callbacks on the connection's bounded pool of threads); rabbitmq-c:
# a channel per queue, one thread, streaming confirms, basic.consume no-wait. The broker's
# count: queue.delete's message_count of every queue must be 0.
many_case() {
    local queues=$1 test=many_q$1 n=$N_MANY r client q out
    wanted "$test" || wanted many_queues || return 0
    say "$test: $queues queues on one connection, one consumer each, $n x 64 B ($RUNS runs each, alternating, ABBA)"
    for ((r = 1; r <= RUNS; r++)); do
        for client in $(order "$r"); do
            q=$(qname "$test" "$client" "$r")
            "$BIN/rmqc" delete_many "uri=$URI" "queue=$q" "queues=$queues" >/dev/null 2>>"$LOG" || true
            settle
            run "$client" "$test" "$r" many "queue=$q" "queues=$queues" "n=$n" size=64 prefetch=100
            out=$("$BIN/rmqc" delete_many "uri=$URI" "queue=$q" "queues=$queues" 2>>"$LOG") || true
            echo "$out" >>"$RAW"
            if [[ $out == *"\"deleted\":$queues,\"messages\":0,"* ]]; then
                echo "    broker check: $queues queues $q.* held 0 messages: ok"
            else
                echo "    broker check: FAILED: $out"
                FAILS=$((FAILS + 1))
            fi
        done
    done
}

# consume_case TEST OURS_MODE: ours consumes with OURS_MODE (consume: callbacks; consume_pull:
# amqp_poll batches settled with amqp_settle_many), rabbitmq-c as always
consume_case() {
    local test=$1 ours_mode=$2 n=$N r client q fill mode
    wanted "$test" || return 0
    say "$test: consume + ack ($ours_mode), $n x 64 B pre-filled, prefetch 500 ($RUNS runs each, alternating, ABBA)"
    for ((r = 1; r <= RUNS; r++)); do
        for client in $(order "$r"); do
            q=$(qname "$test" "$client" "$r")
            "$BIN/rmqc" delete "uri=$URI" "queue=$q" >/dev/null 2>>"$LOG" || true
            # pre-fill (untimed): rabbitmq-c, every message confirmed or the fill fails
            fill=$("$BIN/rmqc" fill "uri=$URI" "queue=$q" "n=$n" size=64 durable=0 "test=$test" "run=$r" 2>>"$LOG") || true
            [[ -n $fill ]] || fill='{"kind":"run","mode":"fill","ok":false,"error":"no output"}'
            echo "$fill" >>"$RAW"
            if [[ $fill != *'"ok":true'* ]]; then
                echo "    pre-fill of $q FAILED: $fill"
                FAILS=$((FAILS + 1))
                continue
            fi
            settle
            mode=consume
            [[ $client == ours ]] && mode=$ours_mode
            run "$client" "$test" "$r" "$mode" "queue=$q" "n=$n" size=64 prefetch=500
            verify "$client" "$test" "$r" "$q" 0
        done
    done
}

latency_case() {
    local test=$1 threads=$2 n=$N r client q
    wanted "$test" || return 0
    say "$test: publish call latency, $n calls from $threads thread(s) ($RUNS runs each, alternating, ABBA)"
    for ((r = 1; r <= RUNS; r++)); do
        for client in $(order "$r"); do
            q=$(qname "$test" "$client" "$r")
            "$BIN/rmqc" delete "uri=$URI" "queue=$q" >/dev/null 2>>"$LOG" || true
            settle
            # Cold: the timed calls are the first publishes of the process,
            # into a buffer growing from nothing (RA_BENCH_WARMUP=N first
            # publishes N untimed messages and waits for their confirms).
            local warm=0
            [[ $client == ours ]] && warm=${RA_BENCH_WARMUP:-0}
            run "$client" "$test" "$r" latency "queue=$q" "n=$n" "threads=$threads" size=64 "warmup=$warm"
            verify "$client" "$test" "$r" "$q" $(((n + warm) / threads * threads))
        done
    done
}

# threads_case TEST THREADS QUEUES: producer threads on one connection, thread i to queue
# QUEUE.(i % QUEUES) (rabbitmq-c: the connection under a mutex); each queue's count verified
threads_case() {
    local test=$1 threads=$2 queues=$3 n=$N r client q k per
    wanted "$test" || return 0
    per=$((n / threads))
    say "$test: $threads publishing threads, $queues queue(s), one connection, $((per * threads)) x 64 B ($RUNS runs each, alternating, ABBA)"
    for ((r = 1; r <= RUNS; r++)); do
        for client in $(order "$r"); do
            q=$(qname "$test" "$client" "$r")
            for ((k = 0; k < queues; k++)); do
                "$BIN/rmqc" delete "uri=$URI" "queue=$q.$k" >/dev/null 2>>"$LOG" || true
            done
            settle
            run "$client" "$test" "$r" threads "queue=$q" "n=$n" "threads=$threads" "queues=$queues" size=64 mandatory=1
            local pairs=()
            for ((k = 0; k < queues; k++)); do
                pairs+=("$q.$k=$((per * ((threads - 1 - k) / queues + 1)))")
            done
            verify_set "$client" "$test" "$r" "${pairs[@]}"
        done
    done
}

# e2e_case [TEST RATE]: publish -> delivery latency at RATE msg/s (default e2e_10k, 10000)
e2e_case() {
    local test=${1:-e2e_10k} rate=${2:-10000} r client q
    wanted "$test" || return 0
    say "$test: end-to-end latency at $rate msg/s for $E2E_SECONDS s ($RUNS runs each, alternating, ABBA)"
    for ((r = 1; r <= RUNS; r++)); do
        for client in $(order "$r"); do
            q=$(qname "$test" "$client" "$r")
            "$BIN/rmqc" delete "uri=$URI" "queue=$q" >/dev/null 2>>"$LOG" || true
            settle
            run "$client" "$test" "$r" e2e "queue=$q" "rate=$rate" "seconds=$E2E_SECONDS" size=64 prefetch=500
            verify "$client" "$test" "$r" "$q" 0
        done
    done
}

memory_case() {
    local test=memory_1m r
    wanted "$test" || return 0
    say "$test: RSS with $N_MEM buffered 64 B messages, broker unreachable (ours only; rabbitmq-c has no buffer)"
    for ((r = 1; r <= RUNS; r++)); do
        settle
        run ours "$test" "$r" memory "n=$N_MEM" size=64
    done
}

T0=$SECONDS
publish_case pub_transient_64 "$N" 64 0 1
# rabbitmq-c's best streaming usage: no in-flight limit, mandatory off; ours default, then off
publish_case pub_transient_64_vs_stream "$N" 64 0 1 0 0 0
publish_case pub_transient_64_nomandatory_vs_stream "$N" 64 0 0 0 0 0
publish_case pub_durable_64 "$N" 64 1 1
publish_case pub_durable_64_nomandatory "$N" 64 1 0
publish_case pub_props_64 "$N" 64 0 1 1
publish_case pub_transient_4k "$N_4K" 4096 0 1
spool_case pub_spool_64
consume_case consume_64 consume
consume_case consume_pull_64 consume_pull
# over TLS: the timed runs on the TLS listener (RUN_URI); fill, checks and deletes on the plain one
if [[ -n $TLS_URI ]]; then
    RUN_URI=$TLS_URI publish_case pub_tls_64 "$N" 64 0 1
    RUN_URI=$TLS_URI consume_case consume_tls_64 consume
elif wanted pub_tls_64 || wanted consume_tls_64; then
    say "pub_tls_64, consume_tls_64: skipped (the running node has no TLS listener on $TLS_PORT)"
fi
latency_case latency_1t 1
latency_case latency_8t 8
threads_case threads_8x1 8 1
threads_case threads_8x8 8 8
threads_case threads_32x1 32 1
threads_case threads_32x8 32 8
e2e_case
e2e_case e2e_1k 1000
e2e_case e2e_100 100
memory_case
many_case 10
many_case 100
many_case 1000
if wanted bindings; then
    say "bindings: every language binding against the C path (scripts/bench-bindings.sh)"
    RA_BENCH_BROKER=running RA_BENCH_RUNS=$RUNS RA_BENCH_N=$N bash scripts/bench-bindings.sh ||
        FAILS=$((FAILS + 1))
fi

rm -f "$OUT/line.json"
python3 bench/aggregate.py meta-end >>"$RAW"
say "aggregating ($((SECONDS - T0)) s of runs)"
python3 bench/aggregate.py report "$RAW" "$OUT"
echo
cat "$OUT/results.md"
echo
echo "bench.sh: results in $OUT/results.md, results.json, results.svg (raw: $RAW, log: $LOG)"
if ((FAILS)); then
    echo "bench.sh: FAILED: $FAILS run(s) or broker check(s) did not do all their work (see above)" >&2
    exit 1
fi
echo "bench.sh: every run confirmed/consumed all its messages and the broker counts matched"
