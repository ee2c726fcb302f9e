#!/usr/bin/env bash
# Run quoteloop daemons in the background against the local stack.
#
#   scripts/daemons.sh start|stop|status NAME...|all
#
# NAME is a package under daemons/ (history-writer or history_writer), or
# 'simulators' (every venue simulator in one process: python -m simulators,
# writing $QL_STACK_DIR/sim/env, which daemons started after it source too);
# 'all' = every daemons/<pkg>/__main__.py except core.
# start   .venv/bin/python -m daemons.<pkg> with $QL_STACK_DIR/env sourced and
#         QL_CONTROL_DIR=$QL_STACK_DIR/run; log $QL_STACK_DIR/logs/NAME.log,
#         pid $QL_STACK_DIR/run/NAME.pid; a no-op if already running
#         Each daemon also serves GET /metrics on 127.0.0.1:$(metrics_port NAME)
#         (QL_METRICS_TCP_PORT; QL_METRICS_PORT_BASE, default 19470, plus the daemon's
#         place in METRICS_ORDER; QL_METRICS_PORT_BASE=off: none), which
#         scripts/prometheus.sh scrapes
# stop    SIGTERM, wait up to 30 s, then SIGKILL; a no-op if not running
# status  one line per daemon; exit 1 if any is down
set -euo pipefail
umask 022

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROG="daemons.sh"
die()  { echo "$PROG: error: $*" >&2; exit 1; }
note() { echo "$PROG: $*" >&2; }

STACK_DIR="${QL_STACK_DIR:-$REPO/.local/stack}"
mkdir -p "$STACK_DIR" && STACK_DIR="$(cd "$STACK_DIR" && pwd -P)"
RUN_DIR="$STACK_DIR/run"
LOG_DIR="$STACK_DIR/logs"
PYTHON="$REPO/.venv/bin/python"
STOP_TIMEOUT="${QL_DAEMON_STOP_TIMEOUT:-30}"

usage() { echo "usage: $PROG start|stop|status NAME...|all|metrics-ports" >&2; exit 2; }

# the local metrics ports: QL_METRICS_PORT_BASE + 1.. in this order (scripts/prometheus.sh reads them)
METRICS_ORDER=(near-intents-ingest market-reference-ingest inventory-sync liquidity-manager history-writer
    strategy-engine trade-executor)
METRICS_PORT_BASE="${QL_METRICS_PORT_BASE:-19470}"
metrics_port() { # metrics_port NAME: its loopback metrics port, else fail (off, or not a daemon)
    local i
    [[ "$METRICS_PORT_BASE" =~ ^[0-9]+$ ]] || return 1
    for i in "${!METRICS_ORDER[@]}"; do
        [[ "${METRICS_ORDER[$i]}" == "$1" ]] && { echo $((METRICS_PORT_BASE + i + 1)); return 0; }
    done
    return 1
}

all_daemons() { # the seven in their start order (daemons/core/startup_order.py), which a test
    # checks against the daemons/<pkg>/__main__.py packages
    (cd "$REPO" && "$PYTHON" -c 'from daemons.core.startup_order import START_ORDER; print(*START_ORDER, sep="\n")')
}

pid_alive() {
    local st=""
    [[ "$1" =~ ^[0-9]+$ ]] || return 1
    read -r st 2>/dev/null <"/proc/$1/stat" || return 1
    st="${st##*) }"
    [[ "${st:0:1}" != Z ]]
}

module_of() { # module_of NAME: the python -m module that runs it
    if [[ "$1" == simulators ]]; then echo simulators; else echo "daemons.${1//-/_}"; fi
}

daemon_pid() { # daemon_pid NAME: live pid of our daemon, else fail (drops stale pid files)
    local name="$1" f="$RUN_DIR/$1.pid" pid
    [[ -f "$f" ]] || return 1
    pid="$(cat "$f" 2>/dev/null || true)"
    if pid_alive "$pid" \
       && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qE -- "-m $(module_of "$name")( |\$)"; then
        echo "$pid"; return 0
    fi
    pid_alive "$pid" || rm -f "$f"   # stale; a live foreign pid is just ignored
    return 1
}

start_one() {
    local name="$1" pkg="${1//-/_}" pid log i off args=()
    if [[ "$name" == simulators ]]; then
        args=(--dir "$STACK_DIR/sim")
        rm -f "$STACK_DIR/sim/env"   # a fresh one says the simulators are listening
    else
        [[ -f "$REPO/daemons/$pkg/__main__.py" ]] || die "no such daemon: $name (daemons/$pkg/__main__.py missing)"
    fi
    if pid="$(daemon_pid "$name")"; then
        echo "$name: already running (pid $pid)"
        return 0
    fi
    [[ -x "$PYTHON" ]] || die "$PYTHON missing; run 'make venv'"
    [[ -f "$STACK_DIR/env" ]] || die "$STACK_DIR/env missing; run 'make stack' (scripts/stack.sh up) first"
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    log="$LOG_DIR/$name.log"
    touch "$log"
    off="$(stat -c %s "$log")"
    # env file sourced in the child; the child writes its own pid, then execs
    # shellcheck disable=SC2016
    # (the simulators' env, when they run, points the daemons at them)
    # each daemon logs in to Kafka as itself (its password file from scripts/stack.sh), not as
    # the admin the env file names for tools
    local kcred="$STACK_DIR/kafka-credentials/$name"
    [[ -s "$kcred" ]] || kcred=""
    local mport=""
    mport="$(metrics_port "$name")" || mport=""
    (cd "$REPO" && QL_CONTROL_DIR="$RUN_DIR" QL_METRICS_TCP_PORT="$mport" exec setsid bash -c '
        set -e; . "$1"; if [ -f "$2" ]; then . "$2"; fi; export QL_CONTROL_DIR; echo $$ >"$3"
        if [ -n "$QL_METRICS_TCP_PORT" ]; then export QL_METRICS_TCP_PORT; else unset QL_METRICS_TCP_PORT; fi
        if [ -n "$4" ]; then export QL_KAFKA_USERNAME="$5" QL_KAFKA_PASSWORD_FILE="$4"; fi; shift 5
        exec "$@"' \
        daemon "$STACK_DIR/env" "$STACK_DIR/sim/env" "$RUN_DIR/$name.pid" "$kcred" "$name" \
        "$PYTHON" -m "$(module_of "$name")" "${args[@]+"${args[@]}"}") </dev/null >>"$log" 2>&1 &
    for ((i = 0; i < 40; i++)); do [[ -s "$RUN_DIR/$name.pid" ]] && break; sleep 0.05; done
    # catch an immediate crash (import error, bad config) right here
    sleep 1
    if ! pid="$(daemon_pid "$name")"; then
        echo "---- last 30 lines of $log ----" >&2
        tail -c "+$((off + 1))" "$log" | tail -n 30 >&2
        echo "----" >&2
        die "$name exited right after start (log: $log)"
    fi
    if [[ "$name" == simulators ]]; then
        for ((i = 0; i < 100; i++)); do [[ -s "$STACK_DIR/sim/env" ]] && break; sleep 0.1; done
        [[ -s "$STACK_DIR/sim/env" ]] || die "simulators did not write $STACK_DIR/sim/env (log: $log)"
    fi
    echo "$name: started (pid $pid, log $log)"
}

stop_one() {
    local name="$1" pid i
    pid="$(daemon_pid "$name")" || { echo "$name: not running"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT * 4; i++)); do
        pid_alive "$pid" || break
        sleep 0.25
    done
    if pid_alive "$pid"; then
        note "$name: pid $pid ignored SIGTERM for ${STOP_TIMEOUT}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 40; i++)); do pid_alive "$pid" || break; sleep 0.25; done
    fi
    rm -f "$RUN_DIR/$name.pid"
    echo "$name: stopped"
}

status_one() {
    local name="$1" pid
    if pid="$(daemon_pid "$name")"; then
        echo "$name: up (pid $pid)"
    else
        echo "$name: DOWN"
        return 1
    fi
}

if [[ "${1:-}" == metrics-ports ]]; then # NAME PORT per line, for scripts/prometheus.sh
    for n in "${METRICS_ORDER[@]}"; do p="$(metrics_port "$n")" && echo "$n $p"; done
    exit 0
fi
(( $# >= 2 )) || usage
cmd="$1"; shift
names=()
for n in "$@"; do
    if [[ "$n" == all ]]; then
        if [[ "$cmd" == stop ]]; then # the answerers first, history-writer last
            while read -r d; do names+=("$d"); done < <(all_daemons | tac)
        else
            while read -r d; do names+=("$d"); done < <(all_daemons)
        fi
        if [[ "$cmd" == stop ]]; then # also whatever still has a pid file
            for f in "$RUN_DIR"/*.pid; do
                [[ -f "$f" ]] && names+=("$(basename "$f" .pid)")
            done
        fi
    else
        [[ "$n" =~ ^[A-Za-z0-9_-]+$ ]] || die "bad daemon name: $n"
        names+=("${n//_/-}")
    fi
done
# de-duplicate, keep order
declare -A seen=()
uniq=()
for n in "${names[@]+"${names[@]}"}"; do
    [[ -n "${seen[$n]:-}" ]] && continue
    seen[$n]=1; uniq+=("$n")
done
(( ${#uniq[@]} )) || { echo "$PROG: no daemons (no daemons/*/__main__.py yet)"; exit 0; }

rc=0
case "$cmd" in
    start)  for n in "${uniq[@]}"; do start_one "$n"; done ;;
    stop)   for n in "${uniq[@]}"; do stop_one "$n"; done ;;
    status) for n in "${uniq[@]}"; do status_one "$n" || rc=1; done ;;
    *) usage ;;
esac
exit "$rc"
