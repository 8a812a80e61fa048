#!/usr/bin/env bash
# A PRIVATE 3-node RabbitMQ cluster on this machine (loopback only), for the
# cluster fault tests of resilient-amqp (scripts/cluster-test.sh, tests/cluster_faults.rs).
#
#   scripts/cluster.sh start            start the 3 nodes (fresh data), join nodes 2 and 3 to
#                                       node 1 (rabbitmqctl join_cluster), enable every
#                                       feature flag (quorum queues); prints the cluster URI
#   scripts/cluster.sh stop             stop every node and the shared epmd (idempotent)
#   scripts/cluster.sh status           cluster_status as node 1 (or the first node up) sees it
#   scripts/cluster.sh ctl N ARGS...    rabbitmqctl against node N (1..3)
#   scripts/cluster.sh kill N           SIGKILL node N's Erlang VM (a crash)
#   scripts/cluster.sh start-node N     (re)start node N with its data: it rejoins the cluster
#   scripts/cluster.sh stop-node N      stop node N gracefully (rabbitmqctl shutdown)
#   scripts/cluster.sh partition N      cut node N off from the other two (see below)
#   scripts/cluster.sh heal N           undo `partition N`
#   scripts/cluster.sh uri [N]          the cluster URI (all three hosts), or node N's alone
#   scripts/cluster.sh port N           node N's AMQP port
#   scripts/cluster.sh env              export lines for the tests
#
# Layout (base port RA_CLUSTER_PORT, default 31800; all below the ephemeral range 32768+):
#   node N (1..3)  ra-cluster-N@localhost, AMQP 127.0.0.1:BASE+10*N, distribution BASE+10*N+1,
#                  files target/rabbitmq/node-<AMQP port>/ (scripts/broker.sh's layout)
#   epmd           one shared epmd on 127.0.0.1:BASE+39 (nodes find each other through it),
#                  started and stopped by this script
#   cookie         one shared cookie, target/rabbitmq/cluster-BASE/cookie
#   config         cluster_partition_handling = pause_minority (a node cut off from the
#                  majority pauses: it closes its client connections and listeners until the
#                  partition heals -- what a production cluster with quorum queues runs)
#
# A partition without root tools (iptables, namespaces): `partition N` makes node N use a
# wrong cookie for the other two nodes (erlang:set_cookie/2 through rabbitmqctl eval) and
# drops its links to them: every distribution handshake between N and the others then fails,
# both ways, while rabbitmqctl (its own hidden node, the real cookie) still reaches every
# node. `heal N` restores the cookie and pings the others.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

BASE_PORT=${RA_CLUSTER_PORT:-31800}
if ! [[ $BASE_PORT =~ ^[0-9]+$ ]] || ((BASE_PORT < 1024 || BASE_PORT > 32700)); then
    echo "cluster.sh: RA_CLUSTER_PORT must be a number in 1024..32700 (got '$BASE_PORT')" >&2
    exit 2
fi
NODES=(1 2 3)
EPMD_PORT=$((BASE_PORT + 39))
DIR=$REPO_ROOT/target/rabbitmq/cluster-$BASE_PORT
COOKIE_FILE=$DIR/cookie
EPMD_PID_FILE=$DIR/epmd.pid
TAG="resilient-amqp-cluster-epmd:$DIR"

log() { printf 'cluster.sh: %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

node_port() { echo $((BASE_PORT + 10 * $1)); }
node_name() { echo "ra-cluster-$1@localhost"; }
check_n() { [[ ${1:-} =~ ^[123]$ ]] || die "node number must be 1, 2 or 3 (got '${1:-}')"; }

cookie() {
    mkdir -p "$DIR"
    if [[ ! -s $COOKIE_FILE ]]; then
        (
            umask 077
            head -c 30 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$COOKIE_FILE"
        )
    fi
    cat "$COOKIE_FILE"
}

# broker.sh for node N with the cluster's settings.
node() {
    local n=$1
    shift
    RA_BROKER_PORT=$(node_port "$n") \
        RA_BROKER_NODENAME=$(node_name "$n") \
        RA_BROKER_EPMD_PORT=$EPMD_PORT \
        RA_BROKER_COOKIE=$(cookie) \
        RA_BROKER_EXTRA_CONF="cluster_partition_handling = pause_minority" \
        RA_BROKER_TLS_DIR='' \
        bash "$SCRIPT_DIR/broker.sh" "$@"
}

ctl() {
    local n=$1
    shift
    node "$n" ctl "$@"
}

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

epmd_ours() {
    local pid
    pid=$(tr -dc '0-9' 2>/dev/null <"$EPMD_PID_FILE" || true)
    [[ -n $pid ]] && grep -qszxF "RA_CLUSTER_TAG=$TAG" "/proc/$pid/environ" 2>/dev/null
}

start_epmd() {
    mkdir -p "$DIR"
    if epmd_ours; then return 0; fi
    port_open "$EPMD_PORT" && die "port $EPMD_PORT (the cluster's epmd) is in use by another program"
    (
        for fd in "/proc/$BASHPID/fd/"*; do
            fd=${fd##*/}
            if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
        done
        RA_CLUSTER_TAG=$TAG exec setsid epmd -port "$EPMD_PORT" -address 127.0.0.1
    ) </dev/null >>"$DIR/epmd.out" 2>&1 &
    echo $! >"$EPMD_PID_FILE"
    local i
    for ((i = 0; i < 50; i++)); do
        epmd -port "$EPMD_PORT" -names >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "epmd did not start on port $EPMD_PORT"
}

stop_epmd() {
    if epmd_ours; then
        kill -TERM "$(tr -dc '0-9' <"$EPMD_PID_FILE")" 2>/dev/null || true
    fi
    rm -f "$EPMD_PID_FILE"
}

uri() {
    local hosts=() n
    for n in "${NODES[@]}"; do hosts+=("127.0.0.1:$(node_port "$n")"); done
    local IFS=,
    echo "amqp://guest:guest@${hosts[*]}/%2f"
}

cmd_start() {
    start_epmd
    local n pids=() rc=0
    # node 1 first (the others join it), then 2 and 3 side by side
    RA_BROKER_KEEP_DATA=0 node 1 start >/dev/null
    for n in 2 3; do
        RA_BROKER_KEEP_DATA=0 node "$n" start >/dev/null &
        pids+=($!)
    done
    for n in "${pids[@]}"; do wait "$n" || rc=1; done
    ((rc == 0)) || die "a node did not start (logs: target/rabbitmq/node-*/log/)"
    for n in 2 3; do
        ctl "$n" -q stop_app
        ctl "$n" -q join_cluster "$(node_name 1)"
        ctl "$n" -q start_app
        ctl "$n" -q await_startup
    done
    ctl 1 -q enable_feature_flag all >/dev/null 2>&1 || log "enable_feature_flag all failed (old RabbitMQ?)"
    local running
    running=$(ctl 1 -q eval 'length(rabbit_nodes:all_running()).' 2>/dev/null || echo '?')
    log "cluster of $running running nodes: $(uri)"
    uri
}

cmd_stop() {
    local n
    for n in "${NODES[@]}"; do node "$n" stop || true; done
    stop_epmd
}

cmd_status() {
    local n
    for n in "${NODES[@]}"; do
        if node "$n" status >/dev/null 2>&1; then
            ctl "$n" cluster_status
            return 0
        fi
    done
    echo "no node of the cluster is running"
    return 3
}

# The other two nodes' names as an Erlang list.
others() {
    local n=$1 m list=()
    for m in "${NODES[@]}"; do ((m == n)) || list+=("'$(node_name "$m")'"); done
    local IFS=,
    echo "[${list[*]}]"
}

cmd_partition() {
    local n=$1
    ctl "$n" -q eval "
        Others = $(others "$n"),
        [erlang:set_cookie(O, 'resilient_amqp_partitioned') || O <- Others],
        [erlang:disconnect_node(O) || O <- Others],
        ok."
    log "node $n cut off from $(others "$n")"
}

cmd_heal() {
    local n=$1
    ctl "$n" -q eval "
        Others = $(others "$n"),
        [erlang:set_cookie(O, erlang:get_cookie()) || O <- Others],
        [net_adm:ping(O) || O <- Others]."
    log "node $n reconnected to $(others "$n")"
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    ctl)
        check_n "${2:-}"
        n=$2
        shift 2
        ctl "$n" "$@"
        ;;
    kill | start-node | stop-node | partition | heal | port)
        check_n "${2:-}"
        case $1 in
            kill) node "$2" kill ;;
            start-node)
                start_epmd
                # Once (of ~10 restarts after a SIGKILL) a restarted node got a SIGTERM from
                # an unknown sender seconds into its boot ("SIGTERM received" in
                # server.out): start it again once, loudly.
                if ! RA_BROKER_KEEP_DATA=1 node "$2" start >/dev/null; then
                    log "WARNING: node $2 did not start (server.out: $(tail -c 300 "$REPO_ROOT/target/rabbitmq/node-$(node_port "$2")/log/server.out" 2>/dev/null | tr '\n' ' ')); trying once more"
                    RA_BROKER_KEEP_DATA=1 node "$2" start >/dev/null
                fi
                ;;
            stop-node) node "$2" stop ;;
            partition) cmd_partition "$2" ;;
            heal) cmd_heal "$2" ;;
            port) node_port "$2" ;;
        esac
        ;;
    uri)
        if [[ -n ${2:-} ]]; then
            check_n "$2"
            echo "amqp://guest:guest@127.0.0.1:$(node_port "$2")/%2f"
        else
            uri
        fi
        ;;
    env)
        printf 'export RESILIENT_AMQP_CLUSTER_URI=%q\n' "$(uri)"
        printf 'export RESILIENT_AMQP_CLUSTER_SH=%q\n' "$SCRIPT_DIR/cluster.sh"
        printf 'export RA_CLUSTER_PORT=%q\n' "$BASE_PORT"
        ;;
    -h | --help | help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' ;;
    *)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
        exit 2
        ;;
esac
