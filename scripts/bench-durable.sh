#!/usr/bin/env bash
# Durable storage A/B: the same release build of Herald with and without --data-dir, runs
# alternating, then start-up with 1M retained publications (clean, and after kill -9).
#
#   scripts/bench-durable.sh            three runs per case
#   RUNS=1 scripts/bench-durable.sh     one
#
# Server pinned to CPU 0, load generator to CPU 1; loopback only; stops by itself. Prints
# one line per run and a Markdown summary at the end (results also in bench/results/durable.jsonl).
set -euo pipefail

RUNS="${RUNS:-3}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
cd "$ROOT"
OUT="$ROOT/bench/results"
mkdir -p "$OUT"
RESULTS="$OUT/durable.jsonl"
: > "$RESULTS"
WORK="$(mktemp -d "${BENCH_DIR:-/tmp}/herald-durable-bench.XXXXXX")"
PORT=7611
ulimit -n "$(ulimit -Hn)" || true

cargo build --release -q -p herald
HERALD="$ROOT/target/release/herald"

cat > "$WORK/config.toml" <<'EOF'
[server]
max_connections = 50000
max_connections_per_ip = 50000
[channels.defaults]
history_size = 1000
history_ttl = "1h"
EOF

SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
trap 'stop_server; rm -rf "$WORK"' EXIT

# start MODE: memory or durable (on a fresh directory unless KEEP=1). Sets SERVER_PID and
# STARTUP_MS (spawn to listening).
start() {
  local mode="$1" flags=() fsync=true
  if [ "$mode" != memory ]; then
    [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK/data"
    flags=(--data-dir "$WORK/data")
  fi
  [ "$mode" = nofsync ] && fsync=false
  rm -f "$WORK/out"
  local t0
  t0=$(date +%s%N)
  HERALD_ENGINE__FSYNC=$fsync HERALD_LOG=warn taskset -c 0 "$HERALD" serve --listen "127.0.0.1:$PORT" --config "$WORK/config.toml" \
    "${flags[@]}" > "$WORK/out" 2>> "$WORK/server.log" &
  SERVER_PID=$!
  for _ in $(seq 2000); do
    if grep -q "^Listening on" "$WORK/out" 2>/dev/null; then
      STARTUP_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
      return
    fi
    sleep 0.005
  done
  echo "server did not start:" >&2
  tail -5 "$WORK/server.log" >&2
  exit 1
}

bench() {
  local case="$1" mode="$2"
  shift 2
  local line
  line=$(taskset -c 1 "$HERALD" bench "$@" --url "http://127.0.0.1:$PORT" --server-pid "$SERVER_PID" --json)
  echo "{\"case\":\"$case\",\"mode\":\"$mode\",\"result\":$line}" >> "$RESULTS"
  echo "$case [$mode]: $(echo "$line" | python3 -c 'import json,sys; r=json.load(sys.stdin); print({k: r.get(k) for k in ("publishes_per_sec","delivered_per_sec","lost","server_cpu_seconds") if k in r}, "p99", r.get("latency",{}).get("p99_ms",""))')" >&2
}

for run in $(seq "$RUNS"); do
  for mode in memory durable; do
    start "$mode"; bench publish-32 "$mode" publish --concurrency 32 --duration 5s; stop_server
    start "$mode"; bench publish-1 "$mode" publish --concurrency 1 --duration 5s; stop_server
    for t in sse ws; do
      start "$mode"
      bench "saturation-10000-$t" "$mode" fanout --transport "$t" --subscribers 10000 --messages 300 \
        --rate 0 --window 200 --publishers 1
      stop_server
    done
  done
  # Durable without fsync (engine.fsync = false): publishing only.
  start nofsync; bench publish-32 nofsync publish --concurrency 32 --duration 5s; stop_server
  start nofsync; bench publish-1 nofsync publish --concurrency 1 --duration 5s; stop_server
done

# Start-up with 1M retained publications: 1,000 channels keeping 1,000 each.
start durable

while :; do
  taskset -c 1 "$HERALD" bench publish --url "http://127.0.0.1:$PORT" --concurrency 32 --duration 10s \
    --channels 1000 --json > /dev/null

  total=$(for c in 0 500 999; do curl -s "http://127.0.0.1:$PORT/api/history?channel=bench_$c&limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["position"]["offset"])'; done | sort -n | head -1)
  [ "$total" -ge 1000 ] && break
done
stop_server
size=$(du -sm "$WORK/data" | cut -f1)
for i in 1 2 3; do
  KEEP=1 start durable
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status")
  echo "{\"case\":\"startup-1m-clean\",\"mode\":\"durable\",\"result\":{\"startup_ms\":$STARTUP_MS,\"rss_kib\":$rss,\"disk_mb\":$size}}" >> "$RESULTS"
  echo "startup 1M clean: ${STARTUP_MS} ms, RSS ${rss} KiB, ${size} MB on disk" >&2
  stop_server
done
for i in 1 2 3; do
  KEEP=1 start durable
  taskset -c 1 "$HERALD" bench publish --url "http://127.0.0.1:$PORT" --concurrency 32 --duration 3s \
    --channels 1000 --json > /dev/null &
  gen=$!
  sleep 1.5
  kill -9 "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
  wait "$gen" 2>/dev/null || true
  KEEP=1 start durable
  echo "{\"case\":\"startup-1m-kill9\",\"mode\":\"durable\",\"result\":{\"startup_ms\":$STARTUP_MS}}" >> "$RESULTS"
  echo "startup 1M after kill -9: ${STARTUP_MS} ms" >&2
  stop_server
done

python3 - "$RESULTS" <<'PY'
import json, sys, collections
rows = [json.loads(l) for l in open(sys.argv[1])]
by = collections.defaultdict(list)
for r in rows:
    by[(r["case"], r["mode"])].append(r["result"])
def fmt(case, mode):
    out = []
    for r in by[(case, mode)]:
        if "publishes_per_sec" in r:
            out.append(f'{r["publishes_per_sec"]/1000:.1f}k/s')
        elif "delivered_per_sec" in r:
            out.append(f'{r["delivered_per_sec"]/1e6:.2f} M/s (p99 {r["latency"]["p99_ms"]:.0f} ms, lost {r["lost"]})')
        else:
            out.append(f'{r["startup_ms"]} ms')
    return ", ".join(out)
print("| case | without data_dir | with data_dir | with data_dir, fsync = false |")
print("|---|---|---|---|")
for case in ["publish-32", "publish-1", "saturation-10000-sse", "saturation-10000-ws"]:
    print(f"| {case} | {fmt(case, 'memory')} | {fmt(case, 'durable')} | {fmt(case, 'nofsync')} |")
for case in ["startup-1m-clean", "startup-1m-kill9"]:
    print(f"| {case} | | {fmt(case, 'durable')} | |")
PY
