#!/usr/bin/env bash
# Manage a PRIVATE RabbitMQ node for the tests and the demo of resilient-amqp.
#
#   scripts/broker.sh start          start the node (idempotent), wait until it is ready
#   scripts/broker.sh stop           stop it (idempotent), kill what is left, free the ports
#   scripts/broker.sh status         exit 0 if running, 3 if not
#   scripts/broker.sh ctl ARGS...    rabbitmqctl against the private node
#                                    (e.g. `ctl stop_app`, `ctl start_app`,
#                                    `ctl close_all_connections`,
#                                    `ctl list_queues name messages messages_unacknowledged`)
#   scripts/broker.sh kill           crash the node: SIGKILL its Erlang VM (beam) at once, no
#                                    shutdown, and wait until it is gone (epmd stays; `start`
#                                    or `stop` clean up). Restart it with its data:
#                                    RA_BROKER_KEEP_DATA=1 scripts/broker.sh start
#   scripts/broker.sh uri            print the AMQP URI
#   scripts/broker.sh env            print the environment (export lines)
#
# The node never touches a default RabbitMQ installation:
#   node name   resilient-amqp-test@localhost
#   AMQP        127.0.0.1:$RA_BROKER_PORT        (default 31720)
#   dist port   127.0.0.1:$RA_BROKER_PORT+1
#   epmd        127.0.0.1:$RA_BROKER_PORT+2      (its own epmd, started and killed by us)
#   rabbitmqctl listens on an ephemeral loopback port (no fixed range)
#   files       target/rabbitmq/node-$RA_BROKER_PORT/ (HOME with a private Erlang
#               cookie, config, mnesia, logs, pid files)
# It runs the scripts in /usr/lib/rabbitmq/bin directly (not the /usr/sbin
# wrappers, which `su rabbitmq` when run as root), so the files are ours.
#
# Settings (environment):
#   RA_BROKER_PORT           AMQP port (default 31720: below the kernel's ephemeral range
#                            32768-60999, so a client connecting while the broker is down
#                            can never be given the broker's port and connect to itself)
#   RA_BROKER_START_TIMEOUT  seconds to wait for startup (default 60)
#   RA_BROKER_STOP_TIMEOUT   seconds for a graceful stop before SIGTERM/SIGKILL (default 30)
#   RA_BROKER_KEEP_DATA=1    keep the mnesia directory between starts (default: wiped
#                            at every start, so each run sees an empty broker)
#   RA_RABBITMQ_BIN          directory of rabbitmq-server/rabbitmqctl (default
#                            /usr/lib/rabbitmq/bin)
#   RA_BROKER_TLS_DIR        optional: a directory with ca.pem, server.pem and server.key
#                            (PEM); the node then also listens for TLS (amqps) on
#                            127.0.0.1:$RA_BROKER_TLS_PORT, asks for a client certificate
#                            (verified against ca.pem, not required), and offers the EXTERNAL
#                            mechanism (user = the certificate's CN) when RabbitMQ has the
#                            rabbitmq_auth_mechanism_ssl plugin. Unset: no TLS (the default).
#                            scripts/tls-certs.sh makes such a directory.
#   RA_BROKER_TLS_PORT       the TLS port (default RA_BROKER_PORT+3)
# For a cluster of private nodes (scripts/cluster.sh sets these):
#   RA_BROKER_NODENAME       the node name (default resilient-amqp-test@localhost)
#   RA_BROKER_EPMD_PORT      a SHARED epmd's port (Erlang nodes find each other through one
#                            epmd): it must be running already; this script neither starts
#                            nor stops it (default: its own epmd on RA_BROKER_PORT+2)
#   RA_BROKER_COOKIE         the Erlang cookie (all nodes of a cluster share it; default: a
#                            random one per node, kept in its HOME)
#   RA_BROKER_EXTRA_CONF     lines appended to rabbitmq.conf (e.g.
#                            "cluster_partition_handling = pause_minority")
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

PORT=${RA_BROKER_PORT:-31720}
if ! [[ $PORT =~ ^[0-9]+$ ]] || ((PORT < 1024 || PORT > 65000)); then
    echo "broker.sh: RA_BROKER_PORT must be a number in 1024..65000 (got '$PORT')" >&2
    exit 2
fi
DIST_PORT=$((PORT + 1))
EPMD_PORT=${RA_BROKER_EPMD_PORT:-$((PORT + 2))}
EPMD_SHARED=0
[[ -z ${RA_BROKER_EPMD_PORT:-} ]] || EPMD_SHARED=1
TLS_DIR=${RA_BROKER_TLS_DIR:-}
TLS_PORT=${RA_BROKER_TLS_PORT:-$((PORT + 3))}
if [[ -n $TLS_DIR ]]; then
    if ! [[ $TLS_PORT =~ ^[0-9]+$ ]] || ((TLS_PORT < 1024 || TLS_PORT > 65535)); then
        echo "broker.sh: RA_BROKER_TLS_PORT must be a number in 1024..65535 (got '$TLS_PORT')" >&2
        exit 2
    fi
    TLS_DIR=$(cd "$TLS_DIR" 2>/dev/null && pwd) || {
        echo "broker.sh: RA_BROKER_TLS_DIR '${RA_BROKER_TLS_DIR}' is not a directory" >&2
        exit 2
    }
fi
CTL_PORT_MIN=0 # 0..0: rabbitmqctl listens on an ephemeral port (no fixed range to collide)
CTL_PORT_MAX=0
NODENAME=${RA_BROKER_NODENAME:-resilient-amqp-test@localhost}
START_TIMEOUT=${RA_BROKER_START_TIMEOUT:-60}
STOP_TIMEOUT=${RA_BROKER_STOP_TIMEOUT:-30}
RMQ_BIN=${RA_RABBITMQ_BIN:-/usr/lib/rabbitmq/bin}

BASE=$REPO_ROOT/target/rabbitmq/node-$PORT
LOG_DIR=$BASE/log
SERVER_OUT=$LOG_DIR/server.out        # stdout/stderr of rabbitmq-server
EPMD_OUT=$LOG_DIR/epmd.out
SERVER_PID_FILE=$BASE/server.pid      # pid (= process group) of the rabbitmq-server wrapper
EPMD_PID_FILE=$BASE/epmd.pid
BEAM_PID_FILE=$BASE/rabbitmq.pid      # written by RabbitMQ itself (RABBITMQ_PID_FILE)
LOCK_FILE=$REPO_ROOT/target/rabbitmq/node-$PORT.lock
# Every process we start carries this in its environment; `stop` uses it to
# find leftovers (e.g. after the pid files were lost). Not printed by `env`.
TAG="resilient-amqp-broker:$BASE"

URI="amqp://guest:guest@127.0.0.1:$PORT/%2f"
# The server certificate of scripts/tls-certs.sh is for the name localhost.
TLS_URI="amqps://guest:guest@localhost:$TLS_PORT/%2f"

log() { printf 'broker.sh: %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

# The environment of the node and of rabbitmqctl. Everything RabbitMQ would
# otherwise read from /etc/rabbitmq or /var/lib/rabbitmq is redirected.
node_env_lines() {
    cat <<EOF
HOME=$BASE/home
RABBITMQ_NODENAME=$NODENAME
RABBITMQ_USE_LONGNAME=false
RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
RABBITMQ_NODE_PORT=$PORT
RABBITMQ_DIST_PORT=$DIST_PORT
ERL_EPMD_PORT=$EPMD_PORT
ERL_EPMD_ADDRESS=127.0.0.1
RABBITMQ_CTL_DIST_PORT_MIN=$CTL_PORT_MIN
RABBITMQ_CTL_DIST_PORT_MAX=$CTL_PORT_MAX
RABBITMQ_CONF_ENV_FILE=$BASE/rabbitmq-env.conf
RABBITMQ_CONFIG_FILE=$BASE/rabbitmq.conf
RABBITMQ_CONFIG_FILES=$BASE/conf.d
RABBITMQ_ADVANCED_CONFIG_FILE=$BASE/advanced.config
RABBITMQ_ENABLED_PLUGINS_FILE=$BASE/enabled_plugins
RABBITMQ_MNESIA_BASE=$BASE/mnesia
RABBITMQ_LOG_BASE=$LOG_DIR
RABBITMQ_PID_FILE=$BEAM_PID_FILE
RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}
RABBITMQ_CTL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}
ERL_CRASH_DUMP=$LOG_DIR/erl_crash.dump
EOF
}

setup_env() {
    # Drop whatever RabbitMQ/Erlang settings the caller's environment has.
    local v
    for v in $(compgen -e); do
        case $v in
            RABBITMQ_* | ERL_*) unset "$v" ;;
        esac
    done
    local line
    while IFS= read -r line; do
        export "${line%%=*}=${line#*=}"
    done < <(node_env_lines)
    export RA_BROKER_TAG=$TAG
}

require_rabbitmq() {
    if [[ ! -x $RMQ_BIN/rabbitmq-server || ! -x $RMQ_BIN/rabbitmqctl ]]; then
        die "rabbitmq-server is not installed ($RMQ_BIN/rabbitmq-server not found).
    Install it with:  bash scripts/deps.sh   (or: apt-get install -y rabbitmq-server)"
    fi
    command -v erl >/dev/null || die "erl (Erlang) not found in PATH; install rabbitmq-server with its dependencies"
    command -v epmd >/dev/null || die "epmd not found in PATH; install erlang-base"
    command -v setsid >/dev/null || die "setsid not found (util-linux)"
}

# --- process helpers ---------------------------------------------------------

# Does process $1 carry our tag in its environment?
has_tag() {
    grep -qszxF "RA_BROKER_TAG=$TAG" "/proc/$1/environ" 2>/dev/null
}

# Does process $1 exist and carry our tag?
is_ours() {
    local pid=$1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    has_tag "$pid"
}

read_pid() { if [[ -s $1 ]]; then tr -dc '0-9' <"$1"; fi; }

# The pids of our caller chain, never to be killed.
ancestors() {
    local pid=$$
    while [[ $pid =~ ^[0-9]+$ ]] && ((pid > 1)); do
        echo "$pid"
        pid=$(awk '/^PPid:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    done
}

# All live processes that carry our tag (except this script and its callers).
tagged_pids() {
    local skip d pid
    skip=" $(ancestors | tr '\n' ' ') $BASHPID "
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        [[ $skip == *" $pid "* ]] && continue
        if has_tag "$pid"; then
            # skip zombies and short-lived helpers of this script
            [[ $(awk '{print $3}' "$d/stat" 2>/dev/null) == Z ]] && continue
            echo "$pid"
        fi
    done
}

port_open() { # port_open PORT -> 0 if something accepts on 127.0.0.1:PORT
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

beam_alive() {
    local pid
    pid=$(read_pid "$BEAM_PID_FILE")
    [[ -n $pid ]] && is_ours "$pid"
}

server_alive() {
    local pid
    pid=$(read_pid "$SERVER_PID_FILE")
    [[ -n $pid ]] && is_ours "$pid"
}

epmd_alive() {
    local pid
    pid=$(read_pid "$EPMD_PID_FILE")
    [[ -n $pid ]] && is_ours "$pid"
}

# Start a command fully detached: own session, stdin from /dev/null,
# stdout/stderr to a log file, and no other inherited file descriptor (so it
# never holds a caller's pipe open). Prints its pid.
spawn_detached() {
    local out=$1
    shift
    (
        cd "$BASE"
        for fd in "/proc/$BASHPID/fd/"*; do
            fd=${fd##*/}
            if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
        done
        exec setsid "$@"
    ) </dev/null >>"$out" 2>&1 &
    echo $!
}

# --- files ---------------------------------------------------------------------

prepare_files() {
    mkdir -p "$BASE/home" "$LOG_DIR" "$BASE/conf.d"
    chmod 700 "$BASE/home"
    if [[ $RA_BROKER_KEEP_DATA != 1 ]]; then
        rm -rf "$BASE/mnesia"
        rm -f "$LOG_DIR"/*.log
    fi
    mkdir -p "$BASE/mnesia"
    local cookie=$BASE/home/.erlang.cookie
    if [[ -n ${RA_BROKER_COOKIE:-} ]]; then
        rm -f "$cookie"
        (
            umask 077
            printf '%s' "$RA_BROKER_COOKIE" >"$cookie"
        )
    elif [[ ! -s $cookie ]]; then
        (
            umask 077
            # random alphanumerics; Erlang wants the file readable by its owner only
            head -c 30 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$cookie"
        )
    fi
    chmod 400 "$cookie"
    : >"$BASE/rabbitmq-env.conf" # empty: do not read /etc/rabbitmq/rabbitmq-env.conf
    echo '[].' >"$BASE/enabled_plugins"
    rm -f "$BASE/advanced.config"
    cat >"$BASE/rabbitmq.conf" <<EOF
# Generated by scripts/broker.sh -- private test node of resilient-amqp.
listeners.tcp.1 = 127.0.0.1:$PORT
# guest/guest works from 127.0.0.1 only (default)
loopback_users.guest = true
# Do not block publishers on small CI disks; memory watermark stays at the
# default (40% of RAM).
disk_free_limit.absolute = 16MB
log.file.level = info
log.console = false
EOF
    [[ -z $TLS_DIR ]] || tls_config
    if [[ -n ${RA_BROKER_EXTRA_CONF:-} ]]; then
        printf '# RA_BROKER_EXTRA_CONF\n%s\n' "$RA_BROKER_EXTRA_CONF" >>"$BASE/rabbitmq.conf"
    fi
}

# The TLS listener (RA_BROKER_TLS_DIR set) in rabbitmq.conf, and the EXTERNAL
# mechanism's plugin when this RabbitMQ has it.
tls_config() {
    local f
    for f in ca.pem server.pem server.key; do
        [[ -r $TLS_DIR/$f ]] || die "RA_BROKER_TLS_DIR: $TLS_DIR/$f is missing (see scripts/tls-certs.sh)"
    done
    local external=0
    if compgen -G "$RMQ_BIN/../plugins/rabbitmq_auth_mechanism_ssl-*" >/dev/null ||
        compgen -G "/usr/lib/rabbitmq/lib/*/plugins/rabbitmq_auth_mechanism_ssl-*" >/dev/null; then
        external=1
        echo '[rabbitmq_auth_mechanism_ssl].' >"$BASE/enabled_plugins"
    else
        log "the rabbitmq_auth_mechanism_ssl plugin is not installed: no EXTERNAL mechanism"
    fi
    {
        echo "# TLS listener (RA_BROKER_TLS_DIR=$TLS_DIR)"
        echo "listeners.ssl.1 = 127.0.0.1:$TLS_PORT"
        echo "ssl_options.cacertfile = $TLS_DIR/ca.pem"
        echo "ssl_options.certfile = $TLS_DIR/server.pem"
        echo "ssl_options.keyfile = $TLS_DIR/server.key"
        echo "ssl_options.verify = verify_peer"
        echo "ssl_options.fail_if_no_peer_cert = false"
        if ((external)); then
            echo "auth_mechanisms.1 = PLAIN"
            echo "auth_mechanisms.2 = AMQPLAIN"
            echo "auth_mechanisms.3 = EXTERNAL"
            echo "ssl_cert_login_from = common_name"
        fi
    } >>"$BASE/rabbitmq.conf"
}

# --- commands ------------------------------------------------------------------

cmd_status() {
    if beam_alive && port_open "$PORT"; then
        echo "running: node $NODENAME, pid $(read_pid "$BEAM_PID_FILE"), $URI"
        return 0
    elif beam_alive; then
        echo "starting or app stopped: node $NODENAME, pid $(read_pid "$BEAM_PID_FILE"), AMQP port $PORT closed"
        return 0
    fi
    echo "not running ($NODENAME on port $PORT)"
    return 3
}

ctl() {
    "$RMQ_BIN/rabbitmqctl" -n "$NODENAME" "$@"
}

cmd_ctl() {
    [[ $# -ge 1 ]] || die "usage: broker.sh ctl COMMAND [ARGS...]"
    require_rabbitmq
    setup_env
    # Without our epmd, rabbitmqctl would start an epmd daemon of its own
    # (rabbit_nodes_common:ensure_epmd) that nobody stops; refuse instead.
    if ! { epmd_alive || { ((EPMD_SHARED)) && port_open "$EPMD_PORT"; }; }; then
        die "the private node is not running (start it with: scripts/broker.sh start)"
    fi
    # rabbitmqctl requires an <explanation> for close_all_connections; add one
    # (and --global) when the caller gave only the command.
    local a seen=0 positional=0
    for a in "$@"; do
        if ((seen)); then
            [[ $a == -* ]] || positional=1
        elif [[ $a == close_all_connections ]]; then
            seen=1
        fi
    done
    if ((seen && !positional)); then
        set -- "$@" --global "closed by resilient-amqp tests"
    fi
    exec "$RMQ_BIN/rabbitmqctl" -n "$NODENAME" "$@"
}

cmd_start() {
    require_rabbitmq
    setup_env
    mkdir -p "$REPO_ROOT/target/rabbitmq"
    exec 9>"$LOCK_FILE"
    flock -w 120 9 || die "could not lock $LOCK_FILE"

    local t0=$SECONDS
    if beam_alive; then
        log "node $NODENAME already running (pid $(read_pid "$BEAM_PID_FILE")); waiting until it is ready"
        if ! port_open "$PORT"; then
            log "AMQP port closed (application stopped?): rabbitmqctl start_app"
            timeout 60 "$RMQ_BIN/rabbitmqctl" -n "$NODENAME" -q start_app >&2 || true
        fi
        wait_ready "$t0" || die "the running node is not ready; try: scripts/broker.sh stop"
        echo "$URI"
        return 0
    fi

    # Leftovers of a previous run (crashed node, lost pid files): clean up.
    if [[ -n $(tagged_pids) ]]; then
        log "cleaning up leftover processes of a previous run"
        stop_all
    fi

    local p ports=("$PORT" "$DIST_PORT")
    [[ -z $TLS_DIR ]] || ports+=("$TLS_PORT")
    for p in "${ports[@]}"; do
        if port_open "$p"; then
            die "port $p on 127.0.0.1 is already in use by another program; set RA_BROKER_PORT to another base port (the node uses PORT, PORT+1 and PORT+2)"
        fi
    done

    prepare_files
    rm -f "$BEAM_PID_FILE" "$SERVER_PID_FILE" "$EPMD_PID_FILE"

    # Our own epmd, on our own port, loopback only (or the cluster's shared one).
    if ((EPMD_SHARED)); then
        port_open "$EPMD_PORT" || die "the shared epmd (RA_BROKER_EPMD_PORT=$EPMD_PORT) is not running"
    elif port_open "$EPMD_PORT"; then
        if epmd -port "$EPMD_PORT" -names >/dev/null 2>&1; then
            log "reusing an epmd already listening on port $EPMD_PORT (not started by this script)"
        else
            die "port $EPMD_PORT (epmd) on 127.0.0.1 is in use by another program; set RA_BROKER_PORT"
        fi
    else
        spawn_detached "$EPMD_OUT" epmd -port "$EPMD_PORT" -address 127.0.0.1 >"$EPMD_PID_FILE"
        local i
        for ((i = 0; i < 50; i++)); do
            epmd -port "$EPMD_PORT" -names >/dev/null 2>&1 && break
            epmd_alive || die "epmd failed to start; see $EPMD_OUT"
            sleep 0.1
        done
    fi

    : >"$SERVER_OUT"
    spawn_detached "$SERVER_OUT" "$RMQ_BIN/rabbitmq-server" >"$SERVER_PID_FILE"
    log "starting $NODENAME on 127.0.0.1:$PORT (logs: $LOG_DIR)"

    if ! wait_ready "$t0"; then
        log "startup failed; last lines of $SERVER_OUT and the node log:"
        tail -n 30 "$SERVER_OUT" >&2 || true
        tail -n 30 "$LOG_DIR/$NODENAME.log" >&2 2>/dev/null || true
        stop_all
        exit 1
    fi
    log "node ready in $((SECONDS - t0)) s"
    echo "$URI"
}

# Wait until the AMQP port accepts connections and rabbitmqctl await_startup
# succeeds, at most START_TIMEOUT seconds after $1.
wait_ready() {
    local t0=$1
    while :; do
        if port_open "$PORT" && beam_alive && { [[ -z $TLS_DIR ]] || port_open "$TLS_PORT"; }; then
            break
        fi
        if [[ -f $SERVER_PID_FILE ]] && ! server_alive && ! beam_alive; then
            log "rabbitmq-server exited during startup"
            return 1
        fi
        if ((SECONDS - t0 >= START_TIMEOUT)); then
            log "timed out after ${START_TIMEOUT} s waiting for the node"
            return 1
        fi
        sleep 0.25
    done
    local left=$((START_TIMEOUT - (SECONDS - t0)))
    ((left < 5)) && left=5
    if ! timeout "$((left + 5))" "$RMQ_BIN/rabbitmqctl" -n "$NODENAME" -q await_startup --timeout "$left" >/dev/null 2>"$LOG_DIR/await_startup.err"; then
        log "rabbitmqctl await_startup failed:"
        cat "$LOG_DIR/await_startup.err" >&2 || true
        return 1
    fi
}

# Send signal $1 to the process group of our server and to every tagged process.
signal_all() {
    local sig=$1 spid pid
    spid=$(read_pid "$SERVER_PID_FILE")
    if [[ -n $spid ]] && is_ours "$spid"; then
        kill "-$sig" -- "-$spid" 2>/dev/null || true
    fi
    for pid in $(tagged_pids); do
        kill "-$sig" "$pid" 2>/dev/null || true
    done
}

wait_gone() { # wait_gone SECONDS -> 0 when no tagged process is left
    local deadline=$((SECONDS + $1))
    while [[ -n $(tagged_pids) ]]; do
        ((SECONDS >= deadline)) && return 1
        sleep 0.2
    done
}

stop_all() {
    # 1. graceful: rabbitmqctl shutdown waits until the VM has exited
    if beam_alive; then
        log "stopping $NODENAME (pid $(read_pid "$BEAM_PID_FILE"))"
        timeout "$STOP_TIMEOUT" "$RMQ_BIN/rabbitmqctl" -n "$NODENAME" -q shutdown >/dev/null 2>&1 ||
            log "graceful shutdown failed or timed out; terminating"
    fi
    # 2. our epmd (and anything else left): SIGTERM, then SIGKILL
    local epid
    epid=$(read_pid "$EPMD_PID_FILE")
    if [[ -n $epid ]] && is_ours "$epid"; then
        kill -TERM "$epid" 2>/dev/null || true
    fi
    if [[ -n $(tagged_pids) ]]; then
        signal_all TERM
        if ! wait_gone 10; then
            log "processes still alive after SIGTERM; sending SIGKILL"
            signal_all KILL
            wait_gone 5 || log "WARNING: could not kill: $(tagged_pids | tr '\n' ' ')"
        fi
    fi
    rm -f "$BEAM_PID_FILE" "$SERVER_PID_FILE" "$EPMD_PID_FILE"
    # 3. the ports should be free now
    local deadline=$((SECONDS + 10)) p ports=("$PORT" "$DIST_PORT")
    ((EPMD_SHARED)) || ports+=("$EPMD_PORT")
    for p in "${ports[@]}"; do
        while port_open "$p"; do
            if ((SECONDS >= deadline)); then
                log "WARNING: port $p is still in use"
                break
            fi
            sleep 0.2
        done
    done
}

cmd_stop() {
    setup_env
    # (no early return when $BASE is missing: `cargo clean` may have removed
    # it under a running node; the tag scan below still finds the processes)
    mkdir -p "$REPO_ROOT/target/rabbitmq"
    exec 9>"$LOCK_FILE"
    flock -w 120 9 || die "could not lock $LOCK_FILE"
    if ! beam_alive && [[ -z $(tagged_pids) ]]; then
        rm -f "$BEAM_PID_FILE" "$SERVER_PID_FILE" "$EPMD_PID_FILE"
        log "not running"
        return 0
    fi
    local t0=$SECONDS
    stop_all
    log "stopped in $((SECONDS - t0)) s"
}

# SIGKILL the beam process (a crash: no shutdown, no flush). Its wrapper shell
# and port programs end on their own; pid files stay for `start`/`stop`.
cmd_kill() {
    setup_env
    mkdir -p "$REPO_ROOT/target/rabbitmq"
    exec 9>"$LOCK_FILE"
    flock -w 120 9 || die "could not lock $LOCK_FILE"
    local pid
    pid=$(read_pid "$BEAM_PID_FILE")
    if [[ -z $pid ]] || ! is_ours "$pid"; then
        die "the private node is not running (nothing to kill)"
    fi
    log "killing $NODENAME: SIGKILL to beam pid $pid"
    kill -KILL "$pid"
    local deadline=$((SECONDS + 15))
    # gone, or a zombie waiting for its parent
    while [[ -d /proc/$pid && $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]; do
        ((SECONDS >= deadline)) && die "beam pid $pid still alive 15 s after SIGKILL"
        sleep 0.05
    done
    # (no connect to the AMQP port here: with nothing listening, a connect may pick the
    # port itself as its source port, connect to itself, and its TIME_WAIT would then
    # block the restarted node's listener for 60 s; the kernel closed beam's sockets)
    log "killed"
}

cmd_env() {
    echo "# private RabbitMQ node of resilient-amqp (scripts/broker.sh); note: sets HOME"
    node_env_lines | while IFS= read -r line; do
        printf 'export %s=%q\n' "${line%%=*}" "${line#*=}"
    done
    printf 'export %s=%q\n' RA_BROKER_PORT "$PORT"
    printf 'export %s=%q\n' RESILIENT_AMQP_TEST_URI "$URI"
    printf 'export %s=%q\n' RESILIENT_AMQP_TEST_CTL "$SCRIPT_DIR/broker.sh ctl"
    if [[ -n $TLS_DIR ]]; then
        printf 'export %s=%q\n' RESILIENT_AMQP_TEST_TLS_URI "$TLS_URI"
        printf 'export %s=%q\n' RESILIENT_AMQP_TEST_TLS_DIR "$TLS_DIR"
    fi
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

RA_BROKER_KEEP_DATA=${RA_BROKER_KEEP_DATA:-0}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    kill) cmd_kill ;;
    ctl)
        shift
        cmd_ctl "$@"
        ;;
    uri) echo "$URI" ;;
    env) cmd_env ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
esac
