#!/usr/bin/env bash
# Many nodes over Redis: the same load against
#   memory-1   one node on the embedded memory engine,
#   redis-1    one node on the Redis engine,
#   redis-3    three nodes on one Redis, subscribers spread round-robin over the three,
#              every publication sent to the first node.
# Cases (WebSocket subscribers, one channel, 100-byte payloads):
#   hop-10-50hz-ws          10 subscribers, 50 msg/s for 5 s (250 messages): so few deliveries per
#                           message that the latency is the path itself (redis-1 minus memory-1 is
#                           the cost of the hop through Redis)
#   latency-1k-50hz-ws      1,000 subscribers, 50 msg/s for 20 s (1,000 messages)
#   saturation-1k-ws        1,000 subscribers, 2,000 messages published as fast as accepted
#                           (one publisher connection, at most 200 messages of backlog per subscriber)
#
#   scripts/bench_cluster.sh [RUNS]     RUNS per case and setup (default 3; about 5 minutes,
#                                       after waiting up to 3 minutes for a quiet machine)
#
# Core split (2-core machine): every server process (Herald nodes and redis-server) is pinned to
# CPU 0, the load generator to CPU 1 (taskset). server_cpu_seconds is the sum over all of them
# (Herald nodes plus redis-server); the per-process split is in server_cpu_seconds_per_process.
# Starts its own redis-server on 127.0.0.1:7611 (no persistence) and Herald on 7621-7623;
# everything on loopback, bounded in time, and only the processes started here are stopped.
# One JSON line per run goes to bench/results/cluster.jsonl; a summary table goes to stderr.
set -euo pipefail

RUNS="${1:-3}"
case "$RUNS" in '' | *[!0-9]*) echo "usage: $0 [RUNS]" >&2; exit 2 ;; esac

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
cd "$ROOT"
OUT="$ROOT/bench/results"
mkdir -p "$OUT"
RESULTS="$OUT/cluster.jsonl"
: > "$RESULTS"
WORK="$(mktemp -d)"
SERVER_CPU=0
GEN_CPU=1
REDIS_PORT=7611
PORTS=(7621 7622 7623)
HOP_SUBS=10
HOP_MSGS=250
LAT_MSGS=1000
LAT_RATE=50
SAT_MSGS=2000
SUBS=1000
BENCH_TIMEOUT=120

command -v redis-server >/dev/null || { echo "redis-server not found" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)" || true

cargo build --release -q -p herald
HERALD="$ROOT/target/release/herald"

# Wait (at most 3 minutes) for the machine to be quiet: the 1-minute load average below 0.5.
load1() { cut -d' ' -f1 /proc/loadavg; }
for _ in $(seq 36); do
  awk -v l="$(load1)" 'BEGIN { exit !(l < 0.5) }' && break
  echo "load average $(load1), waiting for it to drop below 0.5" >&2
  sleep 5
done
echo "load average at start: $(load1)" >&2

REDIS_PID=""
NODE_PIDS=()
stop_all() {
  local p
  for p in "${NODE_PIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${NODE_PIDS[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  NODE_PIDS=()
  if [ -n "$REDIS_PID" ]; then
    kill -TERM "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=""
  fi
}
cleanup() { stop_all; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1 never opened" >&2
  return 1
}

start_redis() {
  taskset -c "$SERVER_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" \
    --appendonly no --daemonize no --loglevel warning --dir "$WORK" >"$WORK/redis.log" 2>&1 &
  REDIS_PID=$!
  wait_port "$REDIS_PORT"
}

cat >"$WORK/herald.toml" <<TOML
[channels.defaults]
history_size = 100
TOML

# start_nodes ENGINE N: N Herald nodes on ENGINE (memory or redis), ports 7621...
start_nodes() {
  local engine="$1" n="$2" i args
  for ((i = 0; i < n; i++)); do
    args=(serve --config "$WORK/herald.toml" --listen "127.0.0.1:${PORTS[$i]}" --engine "$engine")
    [ "$engine" = redis ] && args+=(--engine-url "redis://127.0.0.1:$REDIS_PORT")
    HERALD_LOG=warn taskset -c "$SERVER_CPU" "$HERALD" "${args[@]}" >>"$WORK/herald-$i.log" 2>&1 &
    NODE_PIDS+=($!)
  done
  for ((i = 0; i < n; i++)); do wait_port "${PORTS[$i]}"; done
}

# bench SETUP CASE ARGS...: runs `herald bench fanout ARGS --json` RUNS times on the generator core.
bench() {
  local setup="$1" name="$2" run line
  shift 2
  for run in $(seq "$RUNS"); do
    line=""
    if line="$(timeout "$BENCH_TIMEOUT" taskset -c "$GEN_CPU" "$HERALD" bench fanout "$@" --json 2>>"$WORK/bench.err")"; then :; fi
    if [ -n "$line" ]; then
      echo "{\"case\":\"$name\",\"setup\":\"$setup\",\"run\":$run,\"load1\":$(load1),\"result\":$line}" >>"$RESULTS"
      echo "$setup $name run $run: $(echo "$line" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("delivered/s %.0f p50 %s p99 %s lost %s dup %s reord %s server cpu %s" % (r["delivered_per_sec"], r["latency"].get("p50_ms"), r["latency"].get("p99_ms"), r["lost"], r["duplicated"], r["reordered"], r.get("server_cpu_seconds")))')" >&2
    else
      echo "$setup $name run $run: failed: $(tail -2 "$WORK/bench.err")" >&2
    fi
  done
}

# run_setup SETUP ENGINE NODES
run_setup() {
  local setup="$1" engine="$2" n="$3" i
  [ "$engine" = redis ] && start_redis
  start_nodes "$engine" "$n"
  local target=()
  for ((i = 0; i < n; i++)); do target+=(--url "http://127.0.0.1:${PORTS[$i]}"); done
  for p in "${NODE_PIDS[@]}" $REDIS_PID; do target+=(--server-pid "$p"); done
  bench "$setup" "hop-10-50hz-ws" "${target[@]}" --transport ws --subscribers "$HOP_SUBS" \
    --messages "$HOP_MSGS" --rate "$LAT_RATE"
  bench "$setup" "latency-1k-50hz-ws" "${target[@]}" --transport ws --subscribers "$SUBS" \
    --messages "$LAT_MSGS" --rate "$LAT_RATE"
  bench "$setup" "saturation-1k-ws" "${target[@]}" --transport ws --subscribers "$SUBS" \
    --messages "$SAT_MSGS" --rate 0 --window 200 --publishers 1
  stop_all
}

run_setup memory-1 memory 1
run_setup redis-1 redis 1
run_setup redis-3 redis 3

for f in "$WORK"/herald-*.log "$WORK/redis.log"; do
  [ -s "$f" ] && { echo "--- $(basename "$f") (last lines)" >&2; tail -5 "$f" >&2; }
done

python3 - "$RESULTS" >&2 <<'PY'
import json, statistics, sys
from collections import defaultdict
rows = defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows[(r["case"], r["setup"])].append(r["result"])
def get(r, key):
    for k in key.split("."):
        r = r.get(k) if isinstance(r, dict) else None
    return r
def spread(rs, key, fmt):
    v = sorted(x for x in (get(r, key) for r in rs) if x is not None)
    if not v:
        return "-"
    if len(v) == 1:
        return fmt.format(v[0])
    return " – ".join(fmt.format(x) for x in (v[0], statistics.median(v), v[-1]))
print("| case | setup | delivered msg/s | p50 ms | p99 ms | lost+dup+reordered | server CPU s (all processes) | generator CPU s |")
print("|---|---|---|---|---|---|---|---|")
for case in ("hop-10-50hz-ws", "latency-1k-50hz-ws", "saturation-1k-ws"):
    for setup in ("memory-1", "redis-1", "redis-3"):
        rs = rows.get((case, setup), [])
        if not rs:
            continue
        bad = sum(r["lost"] + r["duplicated"] + r["reordered"] + r["connect_failures"] for r in rs)
        print(f"| {case} | {setup} | {spread(rs, 'delivered_per_sec', '{:,.0f}')} | {spread(rs, 'latency.p50_ms', '{:.2f}')} "
              f"| {spread(rs, 'latency.p99_ms', '{:.2f}')} | {bad} | {spread(rs, 'server_cpu_seconds', '{:.1f}')} "
              f"| {spread(rs, 'generator_cpu_seconds', '{:.1f}')} |")
def med(case, setup, key):
    v = [get(r, key) for r in rows.get((case, setup), [])]
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None
print()
for case in ("hop-10-50hz-ws", "latency-1k-50hz-ws"):
    parts = []
    for q in ("p50", "p99"):
        a, b = med(case, "memory-1", f"latency.{q}_ms"), med(case, "redis-1", f"latency.{q}_ms")
        if a is not None and b is not None:
            parts.append(f"{q} {b - a:+.2f} ms")
    print(f"hop through Redis (redis-1 minus memory-1, medians), {case}: {', '.join(parts)}")
PY
echo "Results: $RESULTS" >&2
