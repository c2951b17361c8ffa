#!/usr/bin/env bash
# Regenerates the results in BENCHMARKS.md.
#
#   scripts/bench.sh short         one run per case, smaller loads (under 5 minutes)
#   scripts/bench.sh full          three runs per case, the whole scaling table (under an hour)
#   scripts/bench.sh MODE idle     only the idle-memory cases, replacing those rows of MODE's results
#
# The server under test is pinned to CPU 0 and the load generator to CPU 1 (taskset), so the
# generator never competes with the server for a core; each result reports both processes'
# CPU time. Everything runs on loopback and stops by itself.
set -euo pipefail

MODE="${1:-short}"
ONLY="${2:-all}"
case "$MODE" in short) RUNS=1 ;; full) RUNS=3 ;; *) echo "usage: $0 short|full [idle]" >&2; exit 2 ;; esac
case "$ONLY" in all|idle) ;; *) echo "usage: $0 short|full [idle]" >&2; exit 2 ;; esac

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
cd "$ROOT"
OUT="$ROOT/bench/results"
mkdir -p "$OUT"
RESULTS="$OUT/$MODE.jsonl"
if [ "$ONLY" = all ]; then
  : > "$RESULTS"
else
  # Keep every other case's rows; this run rewrites the idle ones.
  touch "$RESULTS"
  grep -v '"case":"idle-' "$RESULTS" > "$RESULTS.keep" || true
  mv "$RESULTS.keep" "$RESULTS"
fi
WORK="$(mktemp -d)"
SERVER_CPU=0
GEN_CPU=1
HERALD_PORT=7601
CEILING_PORT=7602
NCHAN_PORT=7603

ulimit -n "$(ulimit -Hn)" || true
echo "fd limit: $(ulimit -n)" >&2

cargo build --release -q -p herald
HERALD="$ROOT/target/release/herald"

SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
  if [ -f "$WORK/nchan/nchan.pid" ]; then
    scripts/nchan.sh stop "$WORK/nchan" >/dev/null 2>&1 || true
  fi
}
cleanup() { stop_server; rm -rf "$WORK"; }
trap cleanup EXIT

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1 never opened" >&2; return 1
}

start_herald() {
  cat > "$WORK/herald.toml" <<TOML
[server]
listen = "127.0.0.1:$HERALD_PORT"
drain_window = "0s"
[channels.defaults]
history_size = 100
TOML
  HERALD_LOG=warn taskset -c "$SERVER_CPU" "$HERALD" serve --config "$WORK/herald.toml" >/dev/null &
  SERVER_PID=$!
  wait_port "$HERALD_PORT"
}

start_ceiling() {
  taskset -c "$SERVER_CPU" "$HERALD" bench ceiling-server --listen "127.0.0.1:$CEILING_PORT" >/dev/null &
  SERVER_PID=$!
  wait_port "$CEILING_PORT"
}

start_nchan() {
  mkdir -p "$WORK/nchan"
  if NCHAN_CPUS="$SERVER_CPU" scripts/nchan.sh start "$NCHAN_PORT" "$WORK/nchan" >/dev/null 2>"$WORK/nchan.err"; then
    # The worker does the work; measure it.
    SERVER_PID=""
    NCHAN_WORKER="$(pgrep -P "$(cat "$WORK/nchan/nchan.pid")" | head -1)"
    return 0
  fi
  echo "Nchan unavailable ($(tail -1 "$WORK/nchan.err")); skipping its rows." >&2
  return 1
}

# bench NAME TARGET-LABEL ARGS... : runs `herald bench ARGS --json` once (run number $RUN) and
# tags the line.
RUN=1
bench() {
  local name="$1" label="$2"; shift 2
  local line
  if line="$(taskset -c "$GEN_CPU" "$HERALD" bench "$@" --json 2>>"$WORK/bench.err")"; then :; fi
  if [ -n "$line" ]; then
    echo "{\"case\":\"$name\",\"server\":\"$label\",\"run\":$RUN,\"result\":$line}" >> "$RESULTS"
    echo "$name [$label] run $RUN: $(echo "$line" | python3 -c 'import json,sys; r=json.load(sys.stdin); print({k: r.get(k) for k in ("delivered_per_sec","publishes_per_sec","server_rss_per_connection_bytes","connects_per_sec","lost","ok") if k in r}, r.get("latency",{}).get("p99_ms",""))')" >&2
  else
    echo "$name [$label] run $RUN: failed: $(tail -2 "$WORK/bench.err")" >&2
  fi
}

if [ "$MODE" = short ]; then
  SAT_SUBS=10000; SAT_MSGS=300; SCALE_SUBS="1000 10000"; SCALE_SIZES="100"; IDLE_CONNS=10000
else
  SAT_SUBS=10000; SAT_MSGS=1000; SCALE_SUBS="1000 10000 18000"; SCALE_SIZES="100 1024 16384"; IDLE_CONNS=18000
fi

# The servers taking part: label, --target, URL, the PID whose CPU is measured.
SERVERS=()
add_server() { SERVERS+=("$1 $2 $3 $4"); }

# One case, once, on every server in turn, so that a drift of the machine's speed during the
# script touches Herald, the ceiling and Nchan alike. Extra arguments go to `herald bench`.
each_server() {
  local name="$1"; shift
  local entry label target url pid
  for entry in "${SERVERS[@]}"; do
    read -r label target url pid <<< "$entry"
    if [ "$label" = nchan ] && [ "${NCHAN_ONCE:-0}" = 1 ] && [ "$RUN" -gt 1 ]; then continue; fi
    bench "$name" "$label" "$@" --target "$target" --url "$url" --server-pid "$pid"
  done
}

# Idle memory is measured on a fresh process for every run: a server that has just carried a
# load (or a previous run) keeps freed memory in its allocator and would hide the cost of new
# connections.
idle_cases() {
  for t in ws sse; do
    for RUN in $(seq "$RUNS"); do
      stop_server; start_herald
      bench "idle-$IDLE_CONNS-$t" herald idle --url "http://127.0.0.1:$HERALD_PORT" --transport "$t" \
        --connections "$IDLE_CONNS" --hold 3s --server-pid "$SERVER_PID"
    done
  done
  stop_server
  if start_nchan; then
    stop_server
    for t in ws sse; do
      for RUN in $(seq "$RUNS"); do
        start_nchan
        bench "idle-$IDLE_CONNS-$t" nchan idle --target nchan --url "http://127.0.0.1:$NCHAN_PORT" --transport "$t" \
          --connections "$IDLE_CONNS" --hold 3s --server-pid "$NCHAN_WORKER"
        stop_server
      done
    done
  fi
}

if [ "$ONLY" = idle ]; then
  idle_cases
  python3 "$HERE/bench_tables.py" "$RESULTS" "$ROOT/BENCHMARKS.md"
  exit 0
fi

# Fan-out, publish and connect cases: the three servers run side by side (all pinned to CPU 0;
# an idle one costs nothing) and every case is run on each in turn before the next case.
start_herald; HERALD_PID=$SERVER_PID; SERVER_PID=""
add_server herald herald "http://127.0.0.1:$HERALD_PORT" "$HERALD_PID"
start_ceiling; CEILING_PID=$SERVER_PID; SERVER_PID=""
add_server ceiling ceiling "http://127.0.0.1:$CEILING_PORT" "$CEILING_PID"
if start_nchan; then
  add_server nchan nchan "http://127.0.0.1:$NCHAN_PORT" "$NCHAN_WORKER"
fi
stop_all() {
  for pid in ${HERALD_PID:-} ${CEILING_PID:-}; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  HERALD_PID=""; CEILING_PID=""
  stop_server
}
trap 'stop_all; rm -rf "$WORK"' EXIT

for RUN in $(seq "$RUNS"); do
  for t in ws sse; do
    each_server "latency-1k-50hz-$t" fanout --transport "$t" --subscribers 1000 --messages 500 --rate 50
    each_server "saturation-${SAT_SUBS}-$t" fanout --transport "$t" \
      --subscribers "$SAT_SUBS" --messages "$SAT_MSGS" --rate 0 --window 200 --publishers 1
  done
  bench "connect-5000-ws" herald connect --url "http://127.0.0.1:$HERALD_PORT" --connections 5000
  for entry in "${SERVERS[@]}"; do
    read -r label target url pid <<< "$entry"
    [ "$label" = ceiling ] && continue
    bench "publish-32" "$label" publish --target "$target" --url "$url" --concurrency 32 --duration 5s --server-pid "$pid"
  done
  # The scaling table. Nchan takes minutes per run on the large one-channel cases, so there it
  # runs once per case; Herald and the ceiling run every time.
  for subs in $SCALE_SUBS; do
    for size in $SCALE_SIZES; do
      for ch in 1 1000; do
        [ "$ch" -gt "$subs" ] && continue
        msgs=$(( ch == 1 ? 300 : 3000 ))
        NCHAN_ONCE=1 each_server "scale-$subs-${size}B-${ch}ch-ws" fanout --subscribers "$subs" --channels "$ch" \
          --size "$size" --messages "$msgs" --rate 0 --publishers 8
      done
    done
  done
done
stop_all

# Idle memory, each run on a fresh process.
idle_cases

# The in-process hot path (no sockets): fan-out and drain cost per delivery.
cargo run --release -q -p herald-core --example hot_path 10000 200 | tee "$OUT/hot_path.txt" >&2

python3 "$HERE/bench_tables.py" "$RESULTS" "$ROOT/BENCHMARKS.md"
echo "Results: $RESULTS; tables updated in BENCHMARKS.md" >&2
