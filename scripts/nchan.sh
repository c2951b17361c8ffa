#!/usr/bin/env bash
# Start and stop a self-contained Nchan (nginx + ngx_nchan_module) peer for `herald bench`.
#
#   scripts/nchan.sh start PORT DIR   render bench/nchan/nginx.conf.template into DIR, start nginx
#                                     in the background, wait for the port, print the base URL
#   scripts/nchan.sh stop DIR         stop exactly the nginx whose master PID is in DIR/nchan.pid
#
# PORT is a port (binds 127.0.0.1) or HOST:PORT.
#
# Environment:
#   NGINX_BIN      nginx binary        (default: nginx on PATH, else /usr/sbin/nginx)
#   NCHAN_MODULE   nchan module .so    (default: /usr/lib/nginx/modules/ngx_nchan_module.so)
#   NCHAN_CPUS     if set, pin nginx with `taskset -c "$NCHAN_CPUS"`
#   NCHAN_WORKERS  worker_processes    (default: 1)
#   NCHAN_NOFILE   worker_rlimit_nofile wanted (default: 65536; capped at the hard limit)
#
# Exit codes: 0 ok, 1 failure, 2 usage, 3 nginx or the nchan module is not installed.
# Debian packages: apt-get install nginx-light libnginx-mod-nchan
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TEMPLATE="${NCHAN_TEMPLATE:-$HERE/../bench/nchan/nginx.conf.template}"
START_TIMEOUT=10   # seconds to wait for the port
STOP_TIMEOUT=10    # seconds to wait after SIGQUIT (and again after SIGTERM)

usage() {
    echo "usage: $0 start PORT|HOST:PORT DIR" >&2
    echo "       $0 stop DIR" >&2
    exit 2
}

log() { echo "nchan.sh: $*" >&2; }

# 0 when something accepts TCP connections on $1:$2.
port_open() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# 0 when PID $1 is alive and is an nginx process.
is_nginx_pid() {
    local pid=$1 comm
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
    [[ -z "$comm" || "$comm" == nginx ]]
}

wait_gone() {  # PID SECONDS
    local pid=$1 deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

cmd_start() {
    [[ $# -eq 2 ]] || usage
    local spec=$1 dir=$2 host port
    if [[ "$spec" == *:* ]]; then
        host=${spec%:*}
        port=${spec##*:}
    else
        host=127.0.0.1
        port=$spec
    fi
    [[ "$port" =~ ^[0-9]+$ ]] || { log "bad port: $spec"; exit 2; }

    local nginx="${NGINX_BIN:-}"
    if [[ -z "$nginx" ]]; then
        nginx="$(command -v nginx 2>/dev/null || true)"
        [[ -n "$nginx" ]] || nginx=/usr/sbin/nginx
    fi
    local module="${NCHAN_MODULE:-/usr/lib/nginx/modules/ngx_nchan_module.so}"
    if [[ ! -x "$nginx" ]]; then
        log "nginx not found (looked for ${NGINX_BIN:-nginx on PATH and /usr/sbin/nginx})."
        log "install it with: apt-get install nginx-light libnginx-mod-nchan (or set NGINX_BIN)"
        exit 3
    fi
    if [[ ! -f "$module" ]]; then
        log "nchan module not found at $module."
        log "install it with: apt-get install libnginx-mod-nchan (or set NCHAN_MODULE)"
        exit 3
    fi
    [[ -f "$TEMPLATE" ]] || { log "template not found: $TEMPLATE"; exit 1; }

    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    if [[ -f "$dir/nchan.pid" ]] && is_nginx_pid "$(cat "$dir/nchan.pid")"; then
        log "already running in $dir (pid $(cat "$dir/nchan.pid")); stop it first"
        exit 1
    fi
    if port_open "$host" "$port"; then
        log "$host:$port already accepts connections; refusing to start on it"
        exit 1
    fi
    mkdir -p "$dir/logs" "$dir/tmp"
    : >"$dir/logs/error.log"

    # Raise the soft fd limit as far as allowed; nginx raises the workers' to @NOFILE@.
    local hard want nofile
    hard="$(ulimit -Hn)"
    ulimit -n "$hard" 2>/dev/null || true
    want="${NCHAN_NOFILE:-65536}"
    nofile=$want
    if [[ "$hard" != unlimited ]] && ((hard < want)); then
        if [[ $EUID -eq 0 ]] && (ulimit -Hn "$want") 2>/dev/null; then
            ulimit -Hn "$want"
            ulimit -n "$want"
        else
            nofile=$hard
            log "warning: hard open-files limit is $hard (< $want); nchan is capped near $hard connections"
        fi
    fi

    local user_line=""
    if [[ $EUID -eq 0 ]]; then
        user_line="user $(id -un) $(id -gn);"
    fi

    # Substitute on non-comment lines only (the template's comments name the placeholders).
    sed -e "/^[[:space:]]*#/!{
            s|@PREFIX@|$dir|g
            s|@LISTEN@|$host:$port|g
            s|@MODULE@|$module|g
            s|@WORKERS@|${NCHAN_WORKERS:-1}|g
            s|@NOFILE@|$nofile|g
            s|@USER@|$user_line|g
        }" "$TEMPLATE" >"$dir/nginx.conf"
    if grep -v '^[[:space:]]*#' "$dir/nginx.conf" | grep -q '@[A-Z]*@'; then
        log "unsubstituted placeholder left in $dir/nginx.conf"
        exit 1
    fi

    local args=(-p "$dir/" -c "$dir/nginx.conf" -e "$dir/logs/error.log")
    if ! "$nginx" -t -q "${args[@]}" >"$dir/logs/configtest.log" 2>&1; then
        log "nginx -t failed:"
        cat "$dir/logs/configtest.log" >&2
        exit 1
    fi

    local launcher=()
    if [[ -n "${NCHAN_CPUS:-}" ]]; then
        command -v taskset >/dev/null || { log "NCHAN_CPUS is set but taskset is missing"; exit 1; }
        launcher=(taskset -c "$NCHAN_CPUS")
    fi
    # `daemon off`: the background process is the master itself (taskset execs into nginx).
    # Detach stdio so callers capturing this script's output are not held open by nginx.
    "${launcher[@]}" "$nginx" "${args[@]}" </dev/null >>"$dir/logs/stdout.log" 2>&1 &
    local pid=$!
    echo "$pid" >"$dir/nchan.pid"

    local deadline=$((SECONDS + START_TIMEOUT))
    until port_open "$host" "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "nginx exited during startup; last log lines:"
            tail -n 20 "$dir/logs/error.log" "$dir/logs/stdout.log" >&2 2>/dev/null || true
            rm -f "$dir/nchan.pid"
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            log "port $host:$port not open after ${START_TIMEOUT}s; stopping pid $pid"
            kill -QUIT "$pid" 2>/dev/null || true
            wait_gone "$pid" "$STOP_TIMEOUT" || kill -KILL "$pid" 2>/dev/null || true
            rm -f "$dir/nchan.pid"
            exit 1
        fi
        sleep 0.05
    done
    echo "http://$host:$port"
}

cmd_stop() {
    [[ $# -eq 1 ]] || usage
    local dir=$1 pidfile="$1/nchan.pid" pid
    if [[ ! -f "$pidfile" ]]; then
        log "no $pidfile; nothing to stop"
        return 0
    fi
    pid="$(cat "$pidfile")"
    if ! is_nginx_pid "$pid"; then
        log "pid ${pid:-?} from $pidfile is not a running nginx; removing the stale pid file"
        rm -f "$pidfile"
        return 0
    fi
    # Remember the master's workers in case it has to be killed outright.
    local workers
    workers="$(ps -o pid= --ppid "$pid" 2>/dev/null | tr -s ' \n' ' ' || true)"

    kill -QUIT "$pid" 2>/dev/null || true          # graceful shutdown
    if ! wait_gone "$pid" "$STOP_TIMEOUT"; then
        log "pid $pid still running ${STOP_TIMEOUT}s after SIGQUIT; sending SIGTERM"
        kill -TERM "$pid" 2>/dev/null || true      # fast shutdown
        if ! wait_gone "$pid" "$STOP_TIMEOUT"; then
            log "pid $pid still running; sending SIGKILL to it and its workers ($workers)"
            local w
            for w in $pid $workers; do kill -KILL "$w" 2>/dev/null || true; done
            wait_gone "$pid" 5 || { log "pid $pid did not exit"; exit 1; }
        fi
    fi
    rm -f "$pidfile"
    log "stopped nginx (pid $pid)"
}

[[ $# -ge 1 ]] || usage
case "$1" in
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    *) usage ;;
esac
