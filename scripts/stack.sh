#!/usr/bin/env bash
# Local/test stack: a real PostgreSQL and a real single-node Kafka (KRaft).
#
#   scripts/stack.sh up|down|status|deps [all|pg|kafka]      (default: all)
#
#   up      start (idempotent; a fast no-op when already up), wait until ready,
#           write $QL_STACK_DIR/env
#   down    graceful stop; a no-op when not running
#   status  one line per component; exit 1 if something is down
#   deps    make sure PostgreSQL binaries exist (apt-get when root) and the
#           Kafka jars are in the cache, and (all|prometheus) Prometheus, promtool and
#           amtool for the alert tests (apt-get, Debian's `prometheus` and
#           `prometheus-alertmanager`); starts nothing
#
# Knobs (defaults):
#   QL_STACK_DIR  $REPO/.local/stack   pg/, kafka/, logs/, *.pid, env
#   QL_CACHE_DIR  $REPO/.cache         kafka-<ver>/libs (fetched once via Maven)
#   QL_PG_PORT    24329
#   QL_KAFKA_PORT 19092                controller listener on QL_KAFKA_PORT+1
#   QL_PG_BINDIR  autodetected         PostgreSQL bin dir (initdb, pg_ctl, ...)
#   QL_STACK_TIMEOUT 60                seconds to wait for readiness
set -euo pipefail
umask 022

KAFKA_VERSION=4.3.1

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROG="stack.sh"

die()  { echo "$PROG: error: $*" >&2; exit 1; }
note() { echo "$PROG: $*" >&2; }

abspath() { # abspath DIR  (creates it)
    mkdir -p "$1" && (cd "$1" && pwd -P)
}

is_port() { [[ "$1" =~ ^[0-9]+$ ]] && (( $1 > 0 && $1 < 65535 )); }

STACK_DIR="$(abspath "${QL_STACK_DIR:-$REPO/.local/stack}")" \
    || die "cannot create stack dir ${QL_STACK_DIR:-$REPO/.local/stack}"
CACHE_DIR="$(abspath "${QL_CACHE_DIR:-$REPO/.cache}")" \
    || die "cannot create cache dir ${QL_CACHE_DIR:-$REPO/.cache}"
# default ports lie below the kernel's ephemeral range (32768-60999): an outgoing connection's
# local port there once took the benchmark's PostgreSQL port and the server could not bind
PG_PORT="${QL_PG_PORT:-24329}"
KAFKA_PORT="${QL_KAFKA_PORT:-19092}"
is_port "$PG_PORT" || die "QL_PG_PORT is not a valid port: $PG_PORT"
is_port "$KAFKA_PORT" || die "QL_KAFKA_PORT is not a valid port: $KAFKA_PORT"
KAFKA_CPORT=$((KAFKA_PORT + 1))
TIMEOUT="${QL_STACK_TIMEOUT:-60}"

LOG_DIR="$STACK_DIR/logs"
PG_DIR="$STACK_DIR/pg"
PGDATA="$PG_DIR/data"
PG_LOG="$LOG_DIR/postgres.log"
KAFKA_DIR="$STACK_DIR/kafka"
KAFKA_DATA="$KAFKA_DIR/data"
KAFKA_PROPS="$KAFKA_DIR/server.properties"
KAFKA_LOG="$LOG_DIR/kafka.log"
KAFKA_PID="$STACK_DIR/kafka.pid"
KAFKA_HOME="$CACHE_DIR/kafka-$KAFKA_VERSION"
KAFKA_LIBS="$KAFKA_HOME/libs"
KAFKA_STAMP="$KAFKA_HOME/.fetched"
KAFKA_POM="$REPO/scripts/kafka/pom.xml"
ENV_FILE="$STACK_DIR/env"
# Kafka principals (SASL/SCRAM-SHA-512): one password file each, 0600; admin is the broker's own
# and the super user (tools, tests); each daemon logs in as itself (scripts/daemons.sh)
KAFKA_CRED_DIR="$STACK_DIR/kafka-credentials"
KAFKA_PRINCIPALS=(admin qlctl history-writer market-reference-ingest inventory-sync liquidity-manager
                  near-intents-ingest strategy-engine trade-executor)
KAFKA_AUTH_STAMP="$KAFKA_DATA/.quoteloop-scram-v1"

# Unix socket inside the stack dir, unless the path would exceed sun_path
# (107 bytes); then fall back to a short per-stack-dir path under /tmp.
PG_SOCK_DIR="$PG_DIR/sock"
if (( ${#PG_SOCK_DIR} + 20 > 100 )); then
    PG_SOCK_DIR="/tmp/quoteloop-pg-$(printf '%s' "$STACK_DIR" | cksum | cut -d' ' -f1)"
fi

# ----------------------------------------------------------------- helpers

pid_alive() { # pid_alive PID: exists and is not a zombie (our pid 1 may reap late)
    local st=""
    [[ "$1" =~ ^[0-9]+$ ]] || return 1
    read -r st 2>/dev/null <"/proc/$1/stat" || return 1
    st="${st##*) }"
    [[ "${st:0:1}" != Z ]]
}

port_open() { # port_open PORT: something accepts TCP on 127.0.0.1:PORT
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

last_log_lines() { # last_log_lines FILE [OFFSET]
    local f="$1" off="${2:-0}"
    [[ -f "$f" ]] || return 0
    echo "---- last 30 lines of $f ----" >&2
    tail -c "+$((off + 1))" "$f" | tail -n 30 >&2
    echo "----" >&2
}

have_root() { [[ "$(id -u)" -eq 0 ]]; }
chown_pg() { if have_root; then chown postgres: "$@"; fi; }

apt_install() { # apt_install PKG...
    have_root || die "missing $*; install it (apt-get install -y $*) or run as root"
    command -v apt-get >/dev/null || die "missing $* and no apt-get to install it"
    note "installing $* via apt-get ..."
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -q && apt-get install -y -q --no-install-recommends "$@"; } \
        </dev/null >"$LOG_DIR/apt-install.log" 2>&1 || {
            last_log_lines "$LOG_DIR/apt-install.log"
            die "apt-get install $* failed (full log: $LOG_DIR/apt-install.log)"
        }
}

# --------------------------------------------------------------- Prometheus

# promtool (`check rules`, `test rules`) and the server the alert integration test starts on a
# free port of its own: Debian's package, like PostgreSQL's (its own service, if systemd starts
# one, is not used by anything here)
prom_deps() {
    command -v promtool >/dev/null && command -v prometheus >/dev/null && command -v amtool >/dev/null && return 0
    apt_install prometheus prometheus-alertmanager
    command -v promtool >/dev/null || die "prometheus installed but no promtool found"
    command -v amtool >/dev/null || die "prometheus-alertmanager installed but no amtool found"
}

# --------------------------------------------------------------- PostgreSQL

find_pg_bindir() {
    local d
    for d in "${QL_PG_BINDIR:-}" \
             "$(pg_config --bindir 2>/dev/null || true)" \
             "$( (ls -d /usr/lib/postgresql/*/bin 2>/dev/null || true) | sort -V | tail -1)" \
             "$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/x)")"; do
        if [[ -n "$d" && -x "$d/initdb" && -x "$d/pg_ctl" ]]; then
            echo "$d"; return 0
        fi
    done
    return 1
}

PG_BIN=""
pg_deps() {
    [[ -n "$PG_BIN" ]] && return 0
    if ! PG_BIN="$(find_pg_bindir)"; then
        apt_install postgresql
        PG_BIN="$(find_pg_bindir)" || die "PostgreSQL installed but no initdb found"
    fi
    if have_root; then
        id -u postgres >/dev/null 2>&1 \
            || die "running as root but there is no 'postgres' system user to run PostgreSQL as"
    fi
}

as_pg() { # run a PostgreSQL server-side command as the right user
    if have_root; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

pg_pid() { # pid of the live postmaster owning $PGDATA, else fail
    local f="$PGDATA/postmaster.pid" pid comm=""
    [[ -f "$f" ]] || return 1
    pid="$(head -n1 "$f" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    pid_alive "$pid" || return 1
    read -r comm 2>/dev/null <"/proc/$pid/comm" || return 1
    [[ "$comm" == postgres* ]] || return 1
    # a reused pid may belong to another cluster's postgres: the postmaster's
    # cwd is its data dir
    [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" == "$PGDATA" ]] || return 1
    echo "$pid"
}

pg_ready() {
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -d postgres -U quoteloop -t 2 >/dev/null 2>&1
}

pg_write_conf() {
    local conf="$PGDATA/quoteloop.conf" tmp
    tmp="$(mktemp "$PGDATA/.quoteloop.conf.XXXXXX")"
    cat >"$tmp" <<EOF
# Written by scripts/stack.sh on every 'up'; edits are overwritten.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK_DIR'
max_connections = 200
# durability test bed: keep crash safety on
fsync = on
synchronous_commit = on
full_page_writes = on
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'
EOF
    chmod 0600 "$tmp"
    chown_pg "$tmp"
    mv -f "$tmp" "$conf"
    grep -q "^include_if_exists = 'quoteloop.conf'" "$PGDATA/postgresql.conf" \
        || echo "include_if_exists = 'quoteloop.conf'" >>"$PGDATA/postgresql.conf"
}

pg_reach() { # pg_reach DIR: as root, let the postgres user traverse every parent of DIR
    # (a clone in a `mktemp -d` directory is 0700: postgres could not reach its own data dir).
    # Only the search bit for others is added, only where postgres lacks it; said once per dir.
    have_root || return 0
    local d dirs=() i
    d="$(dirname "$1")"
    while [[ "$d" != "/" ]]; do
        dirs+=("$d")
        d="$(dirname "$d")"
    done
    for ((i = ${#dirs[@]} - 1; i >= 0; i--)); do # from the top down: the first blocked one first
        if ! as_pg test -x "${dirs[i]}"; then
            note "pg: ${dirs[i]}: adding o+x so the postgres user can reach its data dir"
            chmod o+x "${dirs[i]}"
        fi
    done
}

pg_init() {
    [[ -f "$PGDATA/PG_VERSION" ]] && return 0
    note "pg: initdb in $PGDATA"
    rm -rf "$PGDATA"
    mkdir -p "$PGDATA"
    chmod 0700 "$PGDATA"
    chown_pg "$PGDATA"
    pg_reach "$PGDATA"
    as_pg test -w "$PGDATA" \
        || die "pg: user $(if have_root; then echo postgres; else id -un; fi) cannot write $PGDATA (is a parent dir not traversable?)"
    as_pg "$PG_BIN/initdb" -D "$PGDATA" -U quoteloop --auth=trust \
        --encoding=UTF8 --locale=C >"$LOG_DIR/initdb.log" 2>&1 || {
            last_log_lines "$LOG_DIR/initdb.log"
            rm -rf "$PGDATA"
            die "pg: initdb failed (log: $LOG_DIR/initdb.log)"
        }
    # trust, loopback only (the server listens on 127.0.0.1 only anyway)
    cat >"$PGDATA/pg_hba.conf" <<'EOF'
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 trust
host    all       all   127.0.0.1/32  trust
host    all       all   ::1/128       trust
EOF
    chown_pg "$PGDATA/pg_hba.conf"
}

pg_up() {
    pg_deps
    if pg_pid >/dev/null && pg_ready; then
        pg_ensure_db
        return 0
    fi
    if pg_pid >/dev/null; then
        # running but not answering on our port (starting, or other port)
        local i
        for ((i = 0; i < TIMEOUT * 2; i++)); do
            pg_ready && { pg_ensure_db; return 0; }
            pg_pid >/dev/null || break
            sleep 0.5
        done
        pg_pid >/dev/null && {
            last_log_lines "$PG_LOG"
            die "pg: postmaster $(pg_pid) runs on $PGDATA but does not answer on 127.0.0.1:$PG_PORT (port changed? run '$PROG down pg' first)"
        }
    fi
    port_open "$PG_PORT" && die "pg: port 127.0.0.1:$PG_PORT is already in use by another process (set QL_PG_PORT)"

    pg_init
    # stale pid file (crash, kill -9, reboot, pid reused): postgres would
    # refuse to start if the recorded pid now belongs to someone else
    if [[ -f "$PGDATA/postmaster.pid" ]] && ! pg_pid >/dev/null; then
        note "pg: removing stale $PGDATA/postmaster.pid"
        rm -f "$PGDATA/postmaster.pid"
    fi
    mkdir -p "$PG_SOCK_DIR"
    chown_pg "$PG_SOCK_DIR"
    chmod 0755 "$PG_SOCK_DIR"
    rm -f "$PG_SOCK_DIR/.s.PGSQL.$PG_PORT" "$PG_SOCK_DIR/.s.PGSQL.$PG_PORT.lock"
    pg_write_conf
    touch "$PG_LOG"
    chown_pg "$PG_LOG"
    local off
    off="$(stat -c %s "$PG_LOG")"
    # A restart right after a stop can find the port still held by sockets of the old server's
    # connections that the kernel has not released yet ("could not bind ... Address already in
    # use" although nothing listens): wait a moment and try again, a few times, for that only.
    local try
    for ((try = 1; ; try++)); do
        as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PG_LOG" -w -t "$TIMEOUT" start >/dev/null 2>&1 8>&- 9>&- && break
        if ((try < 5)) && tail -c +"$((off + 1))" "$PG_LOG" | grep -q "could not bind .*Address already in use" \
            && ! port_open "$PG_PORT"; then
            note "pg: port $PG_PORT not released yet; retrying ($try)"
            off="$(stat -c %s "$PG_LOG")"
            sleep 1
            continue
        fi
        last_log_lines "$PG_LOG" "$off"
        die "pg: failed to start (log: $PG_LOG)"
    done
    local i
    for ((i = 0; i < TIMEOUT * 2; i++)); do
        pg_ready && break
        sleep 0.5
    done
    pg_ready || { last_log_lines "$PG_LOG" "$off"; die "pg: not ready after ${TIMEOUT}s"; }
    pg_ensure_db
    note "pg: up on 127.0.0.1:$PG_PORT"
}

pg_ensure_db() {
    local psql=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U quoteloop -d postgres -tA)
    local have
    have="$("${psql[@]}" -c "select 1 from pg_database where datname = 'quoteloop'" 2>&1)" \
        || die "pg: cannot query server: $have"
    if [[ "$have" != 1 ]]; then
        "${psql[@]}" -c 'create database quoteloop' >/dev/null 2>&1 \
            || die "pg: create database quoteloop failed"
        note "pg: created database quoteloop"
    fi
}

pg_down() {
    local pid
    if ! pid="$(pg_pid)"; then
        [[ -f "$PGDATA/postmaster.pid" ]] && rm -f "$PGDATA/postmaster.pid"
        return 0
    fi
    pg_deps
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w -t "$TIMEOUT" stop >/dev/null 2>&1 || {
        pg_pid >/dev/null || return 0
        die "pg: pg_ctl stop failed (postmaster $pid still running; log: $PG_LOG)"
    }
    note "pg: stopped"
}

pg_status() {
    local pid
    if pid="$(pg_pid)"; then
        if PG_BIN="$(find_pg_bindir)" && pg_ready; then
            echo "pg     up    pid $pid  127.0.0.1:$PG_PORT  $PGDATA"
            return 0
        fi
        echo "pg     DOWN  pid $pid alive but not answering on 127.0.0.1:$PG_PORT"
        return 1
    fi
    echo "pg     DOWN  (127.0.0.1:$PG_PORT, $PGDATA)"
    return 1
}

# -------------------------------------------------------------------- Kafka

need_cmd_or_install() { # need_cmd_or_install CMD APT_PKG
    command -v "$1" >/dev/null 2>&1 || apt_install "$2"
    command -v "$1" >/dev/null 2>&1 || die "$1 not found after installing $2"
}

kafka_deps() {
    need_cmd_or_install java openjdk-17-jre-headless
    local want
    want="$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)"
    [[ -f "$KAFKA_STAMP" && "$(cat "$KAFKA_STAMP")" == "$want" ]] && return 0
    need_cmd_or_install mvn maven
    mkdir -p "$KAFKA_HOME"
    # one fetch at a time per cache (parallel stacks share it)
    exec 8>"$KAFKA_HOME/.lock"
    flock 8
    if [[ -f "$KAFKA_STAMP" && "$(cat "$KAFKA_STAMP")" == "$want" ]]; then
        exec 8>&-; return 0
    fi
    note "kafka: fetching Kafka $KAFKA_VERSION jars into $KAFKA_LIBS (once) ..."
    local tmp="$KAFKA_HOME/libs.tmp.$$" mlog="$KAFKA_HOME/fetch.log"
    rm -rf "$tmp"
    (cd "$(dirname "$KAFKA_POM")" && mvn -q -B -f "$KAFKA_POM" \
        dependency:copy-dependencies -DoutputDirectory="$tmp" -DincludeScope=runtime) \
        </dev/null >"$mlog" 2>&1 || {
            rm -rf "$tmp"
            last_log_lines "$mlog"
            die "kafka: Maven fetch failed (log: $mlog)"
        }
    ls "$tmp"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null 2>&1 \
        || { rm -rf "$tmp"; die "kafka: Maven fetch produced no kafka_2.13-$KAFKA_VERSION.jar"; }
    rm -rf "$KAFKA_LIBS"
    mv "$tmp" "$KAFKA_LIBS"
    echo "$want" >"$KAFKA_STAMP"
    exec 8>&-
}

is_our_kafka() { # is_our_kafka PID: a live Kafka running our server.properties
    local pid="$1"
    pid_alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "kafka.Kafka $KAFKA_PROPS"
}

kafka_pid() { # pid of our live broker, else fail; fixes stale/missing pid files
    local pid p
    if [[ -f "$KAFKA_PID" ]]; then
        pid="$(cat "$KAFKA_PID" 2>/dev/null || true)"
        if is_our_kafka "$pid"; then echo "$pid"; return 0; fi
        rm -f "$KAFKA_PID"
    fi
    # pid file lost but broker running: adopt it (only java processes are
    # inspected further; 'read' is a builtin, so this scan is cheap)
    local comm
    for p in /proc/[0-9]*; do
        comm=""
        read -r comm 2>/dev/null <"$p/comm" || continue
        [[ "$comm" == java ]] || continue
        p="${p#/proc/}"
        if is_our_kafka "$p"; then echo "$p" >"$KAFKA_PID"; echo "$p"; return 0; fi
    done
    return 1
}

kafka_cluster_id() { # base64url of 16 random bytes, like StorageTool random-uuid
    local id
    while :; do
        id="$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
        [[ "$id" != -* ]] && { echo "$id"; return; }
    done
}

kafka_credentials() { # a random password per principal, made once, kept with the stack
    local p
    mkdir -p "$KAFKA_CRED_DIR"
    chmod 0700 "$KAFKA_CRED_DIR"
    for p in "${KAFKA_PRINCIPALS[@]}"; do
        [[ -s "$KAFKA_CRED_DIR/$p" ]] && continue
        (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$KAFKA_CRED_DIR/$p")
    done
}

kafka_write_props() {
    mkdir -p "$KAFKA_DATA"
    local tmp admin
    admin="$(cat "$KAFKA_CRED_DIR/admin")"
    tmp="$(mktemp "$KAFKA_DIR/.server.properties.XXXXXX")"  # 0600: it holds the admin password
    cat >"$tmp" <<EOF
# Written by scripts/stack.sh on every 'up'; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CPORT
# Every connection logs in: clients and the broker itself with SCRAM-SHA-512 on CLIENT, the
# controller with PLAIN (KRaft controllers cannot use SCRAM: its credentials live in the metadata
# log they serve). Anonymous connections are refused; the authorizer allows only what an ACL
# grants (ACLs: daemons/core/acls.py, made by 'qlctl topics ensure'); admin is the super user.
listeners=CLIENT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CPORT
advertised.listeners=CLIENT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=CLIENT
listener.security.protocol.map=CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.client.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.client.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin";
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$admin" user_admin="$admin";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin
allow.everyone.if.no.acl.found=false
log.dirs=$KAFKA_DATA
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
    mv -f "$tmp" "$KAFKA_PROPS"
}

KAFKA_LOG_OFF=0
kafka_launch() { # start the broker if needed; does not wait
    kafka_pid >/dev/null && return 0
    port_open "$KAFKA_PORT" && die "kafka: port 127.0.0.1:$KAFKA_PORT is already in use by another process (set QL_KAFKA_PORT)"
    port_open "$KAFKA_CPORT" && die "kafka: controller port 127.0.0.1:$KAFKA_CPORT is already in use by another process (set QL_KAFKA_PORT)"
    kafka_deps
    mkdir -p "$KAFKA_DIR"
    kafka_credentials
    kafka_write_props
    touch "$KAFKA_LOG"
    if [[ -f "$KAFKA_DATA/meta.properties" && ! -f "$KAFKA_AUTH_STAMP" ]]; then
        # formatted before the broker required logins: its metadata holds no SCRAM users
        note "kafka: $KAFKA_DATA predates SASL/SCRAM; wiping it to format it again (local data only)"
        rm -rf "$KAFKA_DATA"
        mkdir -p "$KAFKA_DATA"
    fi
    if [[ ! -f "$KAFKA_DATA/meta.properties" ]]; then
        note "kafka: formatting $KAFKA_DATA"
        local scram=() p
        for p in "${KAFKA_PRINCIPALS[@]}"; do
            scram+=(--add-scram "SCRAM-SHA-512=[name=$p,password=$(cat "$KAFKA_CRED_DIR/$p")]")
        done
        java -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format \
            -t "$(kafka_cluster_id)" -c "$KAFKA_PROPS" "${scram[@]}" >>"$KAFKA_LOG" 2>&1 || {
                last_log_lines "$KAFKA_LOG"
                die "kafka: storage format failed (log: $KAFKA_LOG)"
            }
        touch "$KAFKA_AUTH_STAMP"
    fi
    KAFKA_LOG_OFF="$(stat -c %s "$KAFKA_LOG")"
    # The process writes its own pid (exact even through setsid), detached
    # from our session so Ctrl-C in make does not take it down.
    # shellcheck disable=SC2016
    # shellcheck disable=SC2016
    setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' kafka "$KAFKA_PID" \
        java -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dorg.slf4j.simpleLogger.showDateTime=true \
        "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd HH:mm:ss,SSS" \
        -Dorg.slf4j.simpleLogger.showThreadName=false \
        -Dorg.slf4j.simpleLogger.log.org.apache.kafka.clients=warn \
        -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_PROPS" \
        </dev/null >>"$KAFKA_LOG" 2>&1 8>&- 9>&- &
    local i
    for ((i = 0; i < 50; i++)); do [[ -s "$KAFKA_PID" ]] && break; sleep 0.05; done
    KAFKA_STARTING=1
}

KAFKA_STARTING=0
kafka_wait() {
    local pid="" i
    for ((i = 0; i < TIMEOUT * 4; i++)); do
        if ! pid="$(kafka_pid)"; then
            last_log_lines "$KAFKA_LOG" "$KAFKA_LOG_OFF"
            die "kafka: broker exited during startup (log: $KAFKA_LOG)"
        fi
        if port_open "$KAFKA_PORT"; then
            # fresh start: also wait for the "started" line; already-running
            # broker: the open port is enough
            if (( ! KAFKA_STARTING )) \
               || grep -q 'Kafka Server started' < <(tail -c "+$((KAFKA_LOG_OFF + 1))" "$KAFKA_LOG"); then
                (( KAFKA_STARTING )) && note "kafka: up on 127.0.0.1:$KAFKA_PORT"
                return 0
            fi
        fi
        sleep 0.25
    done
    last_log_lines "$KAFKA_LOG" "$KAFKA_LOG_OFF"
    die "kafka: not ready after ${TIMEOUT}s (pid $pid; log: $KAFKA_LOG)"
}

kafka_down() {
    local pid i
    pid="$(kafka_pid)" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 30 * 4; i++)); do
        pid_alive "$pid" || break
        sleep 0.25
    done
    if pid_alive "$pid"; then
        note "kafka: pid $pid ignored SIGTERM for 30s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 40; i++)); do pid_alive "$pid" || break; sleep 0.25; done
    fi
    rm -f "$KAFKA_PID"
    note "kafka: stopped"
}

kafka_status() {
    local pid
    if pid="$(kafka_pid)"; then
        if port_open "$KAFKA_PORT"; then
            echo "kafka  up    pid $pid  127.0.0.1:$KAFKA_PORT  $KAFKA_DATA"
            return 0
        fi
        echo "kafka  DOWN  pid $pid alive but 127.0.0.1:$KAFKA_PORT not accepting"
        return 1
    fi
    echo "kafka  DOWN  (127.0.0.1:$KAFKA_PORT, $KAFKA_DATA)"
    return 1
}

# ---------------------------------------------------------------------- env

write_env() {
    local tmp
    tmp="$(mktemp "$STACK_DIR/.env.XXXXXX")"
    cat >"$tmp" <<EOF
# Written by scripts/stack.sh up ($STACK_DIR)
export QL_DATABASE_URL=postgresql://quoteloop@127.0.0.1:$PG_PORT/quoteloop
export QL_KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT
export QL_CONTROL_DIR=$STACK_DIR/run
export QL_CEILINGS_FILE=$STACK_DIR/ceilings.toml
export QL_KAFKA_USERNAME=admin
export QL_KAFKA_PASSWORD_FILE=$KAFKA_CRED_DIR/admin
EOF
    chmod 0644 "$tmp"
    # the hard ceilings strategy-engine and trade-executor refuse to start without: owned by
    # whoever runs this (root here, as the daemons demand), writable by nobody else
    install -m 0644 "$REPO/config/ceilings.local.toml" "$STACK_DIR/ceilings.toml"
    mv -f "$tmp" "$ENV_FILE"
}

# --------------------------------------------------------------------- main

usage() {
    echo "usage: $PROG up|down|status|deps [all|pg|kafka] (deps also: prometheus)" >&2
    exit 2
}

cmd="${1:-}"
what="${2:-all}"
(( $# <= 2 )) || usage
case "$what" in all|pg|kafka|prometheus) ;; *) usage ;; esac
[[ "$what" != prometheus || "$cmd" == deps ]] || usage
want_pg()    { [[ "$what" == all || "$what" == pg ]]; }
want_kafka() { [[ "$what" == all || "$what" == kafka ]]; }

mkdir -p "$LOG_DIR"

lock_stack() { # serialise up/down on one stack dir
    exec 9>"$STACK_DIR/.lock"
    flock -w "$((TIMEOUT * 2))" 9 || die "another $PROG holds $STACK_DIR/.lock"
}

case "$cmd" in
    up)
        lock_stack
        # launch Kafka first (JVM start is the slow part), start PostgreSQL
        # meanwhile, then wait for Kafka
        if want_kafka; then kafka_launch; fi
        if want_pg; then pg_up; fi
        if want_kafka; then kafka_wait; fi
        write_env
        ;;
    down)
        lock_stack
        if want_kafka; then kafka_down; fi
        if want_pg; then pg_down; fi
        ;;
    status)
        rc=0
        if want_pg; then pg_status || rc=1; fi
        if want_kafka; then kafka_status || rc=1; fi
        exit "$rc"
        ;;
    deps)
        if want_pg; then pg_deps; echo "pg     ok    $PG_BIN"; fi
        if want_kafka; then kafka_deps; echo "kafka  ok    $KAFKA_LIBS"; fi
        if [[ "$what" == all || "$what" == prometheus ]]; then prom_deps; echo "prom   ok    $(command -v promtool)"; fi
        ;;
    *) usage ;;
esac
