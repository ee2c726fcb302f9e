#!/usr/bin/env bash
# A local Prometheus for the dev stack (optional): scrapes every daemon's GET /metrics on the
# loopback ports scripts/daemons.sh gives them, with the alerts the hosts get
# (ansible/roles/monitoring/files/quoteloop-rules.yml).
#
#   scripts/prometheus.sh up|down|status
#
# up      start Debian's prometheus (`make deps` installs it) on 127.0.0.1:$QL_PROMETHEUS_PORT
#         (default 19090), data in $QL_STACK_DIR/prometheus, log $QL_STACK_DIR/logs/prometheus.log;
#         a no-op if running. Alerts: http://127.0.0.1:19090/alerts
# down    stop it; a no-op if not running
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROG="prometheus.sh"
die() { echo "$PROG: error: $*" >&2; exit 1; }

STACK_DIR="${QL_STACK_DIR:-$REPO/.local/stack}"
mkdir -p "$STACK_DIR" && STACK_DIR="$(cd "$STACK_DIR" && pwd -P)"
DIR="$STACK_DIR/prometheus"
PIDFILE="$DIR/prometheus.pid"
PORT="${QL_PROMETHEUS_PORT:-19090}"
RULES="$REPO/ansible/roles/monitoring/files/quoteloop-rules.yml"

running() {
    local pid
    pid="$(cat "$PIDFILE" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "prometheus.*$DIR" \
        && echo "$pid"
}

case "${1:-}" in
    up)
        if pid="$(running)"; then echo "prometheus: already running (pid $pid, http://127.0.0.1:$PORT)"; exit 0; fi
        command -v prometheus >/dev/null || die "prometheus not found: make deps (scripts/stack.sh deps prometheus)"
        mkdir -p "$DIR/data" "$STACK_DIR/logs"
        {
            echo "global: {scrape_interval: 5s, evaluation_interval: 5s}"
            echo "rule_files: ['$RULES']"
            echo "scrape_configs:"
            echo "  - job_name: quoteloop"
            echo "    honor_labels: true"
            echo "    static_configs:"
            "$REPO/scripts/daemons.sh" metrics-ports | while read -r name port; do
                echo "      - targets: ['127.0.0.1:$port']"
                echo "        labels: {daemon: $name}"
            done
        } >"$DIR/prometheus.yml"
        setsid prometheus --config.file="$DIR/prometheus.yml" --storage.tsdb.path="$DIR/data" \
            --web.listen-address="127.0.0.1:$PORT" </dev/null >>"$STACK_DIR/logs/prometheus.log" 2>&1 &
        echo $! >"$PIDFILE"
        echo "prometheus: started (pid $!, http://127.0.0.1:$PORT/alerts, log $STACK_DIR/logs/prometheus.log)"
        ;;
    down)
        if pid="$(running)"; then kill -TERM "$pid"; rm -f "$PIDFILE"; echo "prometheus: stopped"; else echo "prometheus: not running"; fi
        ;;
    status)
        if pid="$(running)"; then echo "prometheus: up (pid $pid, http://127.0.0.1:$PORT)"; else echo "prometheus: DOWN"; exit 1; fi
        ;;
    *) echo "usage: $PROG up|down|status" >&2; exit 2 ;;
esac
