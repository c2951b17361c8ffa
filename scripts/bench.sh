#!/usr/bin/env bash
# Regenerates the results in BENCHMARKS.md.
#
#   scripts/bench.sh short         one run per case, smaller loads (under 5 minutes)
#   scripts/bench.sh full          three runs per case, the whole scaling table (about 25 minutes)
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

# bench NAME TARGET-LABEL ARGS... : runs `herald bench ARGS --json` RUNS times, tags each line.
bench() {
  local name="$1" label="$2"; shift 2
  for run in $(seq "$RUNS"); do
    local line
    if line="$(taskset -c "$GEN_CPU" "$HERALD" bench "$@" --json 2>>"$WORK/bench.err")"; then :; fi
    if [ -n "$line" ]; then
      echo "{\"case\":\"$name\",\"server\":\"$label\",\"run\":$run,\"result\":$line}" >> "$RESULTS"
      echo "$name [$label] run $run: $(echo "$line" | python3 -c 'import json,sys; r=json.load(sys.stdin); print({k: r.get(k) for k in ("delivered_per_sec","publishes_per_sec","server_rss_per_connection_bytes","connects_per_sec","lost","ok") if k in r}, r.get("latency",{}).get("p99_ms",""))')" >&2
    else
      echo "$name [$label] run $run: failed: $(tail -2 "$WORK/bench.err")" >&2
    fi
  done
}

if [ "$MODE" = short ]; then
  SAT_SUBS=10000; SAT_MSGS=300; SCALE_SUBS="1000 10000"; SCALE_SIZES="100"; IDLE_CONNS=10000
else
  SAT_SUBS=10000; SAT_MSGS=1000; SCALE_SUBS="1000 10000 18000"; SCALE_SIZES="100 1024 16384"; IDLE_CONNS=18000
fi

run_suite() {
  local label="$1" target="$2" url="$3" pidarg=()
  [ -n "${4:-}" ] && pidarg=(--server-pid "$4")
  for t in ws sse; do
    bench "latency-1k-50hz-$t" "$label" fanout --target "$target" --url "$url" --transport "$t" \
      --subscribers 1000 --messages 500 --rate 50 "${pidarg[@]}"
    bench "saturation-${SAT_SUBS}-$t" "$label" fanout --target "$target" --url "$url" --transport "$t" \
      --subscribers "$SAT_SUBS" --messages "$SAT_MSGS" --rate 0 --window 200 --publishers 1 "${pidarg[@]}"
  done
}

# Idle memory is measured on a fresh process for every run: a server that has just carried a
# load (or a previous run) keeps freed memory in its allocator and would hide the cost of new
# connections.
idle_cases() {
  local saved_runs=$RUNS
  for t in ws sse; do
    for run in $(seq "$saved_runs"); do
      stop_server; start_herald
      RUNS=1 bench "idle-$IDLE_CONNS-$t" herald idle --url "http://127.0.0.1:$HERALD_PORT" --transport "$t" \
        --connections "$IDLE_CONNS" --hold 3s --server-pid "$SERVER_PID"
    done
  done
  stop_server
  if start_nchan; then
    stop_server
    for t in ws sse; do
      for run in $(seq "$saved_runs"); do
        start_nchan
        RUNS=1 bench "idle-$IDLE_CONNS-$t" nchan idle --target nchan --url "http://127.0.0.1:$NCHAN_PORT" --transport "$t" \
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

# Herald
start_herald
HERALD_PID=$SERVER_PID
run_suite herald herald "http://127.0.0.1:$HERALD_PORT" "$HERALD_PID"
bench "connect-5000-ws" herald connect --url "http://127.0.0.1:$HERALD_PORT" --connections 5000
bench "publish-32" herald publish --url "http://127.0.0.1:$HERALD_PORT" --concurrency 32 --duration 5s --server-pid "$HERALD_PID"
for subs in $SCALE_SUBS; do
  for size in $SCALE_SIZES; do
    for ch in 1 1000; do
      [ "$ch" -gt "$subs" ] && continue
      msgs=$(( ch == 1 ? 300 : 3000 ))
      bench "scale-$subs-${size}B-${ch}ch-ws" herald fanout --url "http://127.0.0.1:$HERALD_PORT" \
        --subscribers "$subs" --channels "$ch" --size "$size" --messages "$msgs" --rate 0 --publishers 8 --server-pid "$HERALD_PID"
    done
  done
done
stop_server
idle_cases

# Ceiling
start_ceiling
run_suite ceiling ceiling "http://127.0.0.1:$CEILING_PORT" "$SERVER_PID"
stop_server

# Nchan
if start_nchan; then
  run_suite nchan nchan "http://127.0.0.1:$NCHAN_PORT" "$NCHAN_WORKER"
  bench "publish-32" nchan publish --target nchan --url "http://127.0.0.1:$NCHAN_PORT" --concurrency 32 --duration 5s --server-pid "$NCHAN_WORKER"
  stop_server
fi

# The in-process hot path (no sockets): fan-out and drain cost per delivery.
cargo run --release -q -p herald-core --example hot_path 10000 200 | tee "$OUT/hot_path.txt" >&2

python3 "$HERE/bench_tables.py" "$RESULTS" "$ROOT/BENCHMARKS.md"
echo "Results: $RESULTS; tables updated in BENCHMARKS.md" >&2
