#!/usr/bin/env bash
# 100,000 idle connections held with heartbeats on this machine.
#
#   scripts/bench_100k.sh [TRANSPORT] [TOTAL]     TRANSPORT ws (default) or sse; TOTAL 100000
#
# One process may open at most `ulimit -Hn` files, and where that hard limit is below TOTAL (it
# is 20,000 on the machine BENCHMARKS.md describes, and raising it needs CAP_SYS_RESOURCE),
# the connections are spread over as many Herald processes as it takes, each on its own port
# and each held by its own `herald bench idle` generator. Where the limit allows, one process
# holds them all.
#
# Heartbeats are shortened so the hold exercises them: WebSocket pings every 5 s with a 15 s
# idle timeout (a connection that stops answering is closed; each generator connection answers
# from the moment it opens), SSE keep-alives every 5 s; the hold lasts 30 s. A run passes when
# every connection opened and was still open after the hold.
# Servers are pinned to CPU 0, generators to CPU 1 (taskset); everything is on loopback, bounded
# in time, and only the processes started here are stopped.
# One JSON line per process goes to bench/results/100k-TRANSPORT.jsonl, a summary to stdout.
set -euo pipefail

TRANSPORT="${1:-ws}"
TOTAL="${2:-100000}"
case "$TRANSPORT" in ws | sse) ;; *) echo "usage: $0 [ws|sse] [TOTAL]" >&2; exit 2 ;; esac
case "$TOTAL" in '' | *[!0-9]*) echo "usage: $0 [ws|sse] [TOTAL]" >&2; exit 2 ;; esac

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
cd "$ROOT"
OUT="$ROOT/bench/results"
mkdir -p "$OUT"
RESULTS="$OUT/100k-$TRANSPORT.jsonl"
: > "$RESULTS"
WORK="$(mktemp -d)"
BASE_PORT=7701

ulimit -n "$(ulimit -Hn)"
LIMIT="$(ulimit -n)"
# Room for the listener, logs and the runtime beside the connections.
PER_PROC=$((LIMIT - 500))
PROCS=$(((TOTAL + PER_PROC - 1) / PER_PROC))
PER_NODE=$(((TOTAL + PROCS - 1) / PROCS))
echo "open-file limit $LIMIT per process: $PROCS Herald process(es), $PER_NODE connections each" >&2

cargo build --release -q -p herald
HERALD="$ROOT/target/release/herald"

PIDS=()
GENS=()
cleanup() {
  for p in "${GENS[@]}" "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${GENS[@]}" "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

for i in $(seq 0 $((PROCS - 1))); do
  port=$((BASE_PORT + i))
  cat > "$WORK/node$i.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
max_connections = $((PER_NODE + 100))
[ws]
ping_interval = "5s"
idle_timeout = "15s"
[sse]
keepalive = "5s"
TOML
  HERALD_LOG=warn taskset -c 0 "$HERALD" serve --config "$WORK/node$i.toml" >"$WORK/node$i.log" 2>&1 &
  PIDS+=($!)
done
for i in $(seq 0 $((PROCS - 1))); do
  port=$((BASE_PORT + i))
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
done

for i in $(seq 0 $((PROCS - 1))); do
  port=$((BASE_PORT + i))
  taskset -c 1 "$HERALD" bench idle --url "http://127.0.0.1:$port" --transport "$TRANSPORT" \
    --connections "$PER_NODE" --connect-concurrency 100 --hold 30s --server-pid "${PIDS[$i]}" \
    --json >"$WORK/gen$i.json" 2>"$WORK/gen$i.err" &
  GENS+=($!)
done
for g in "${GENS[@]}"; do wait "$g" || true; done
GENS=()

for i in $(seq 0 $((PROCS - 1))); do
  if [ -s "$WORK/gen$i.json" ]; then
    cat "$WORK/gen$i.json" >> "$RESULTS"
  else
    echo "generator $i failed: $(tail -3 "$WORK/gen$i.err")" >&2
  fi
done

python3 - "$RESULTS" "$TOTAL" "$PROCS" "$TRANSPORT" <<'PY'
import json, sys
path, total, procs, transport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rows = [json.loads(l) for l in open(path) if l.strip()]
opened = sum(r["connected"] for r in rows)
held = sum(r["still_open_after_hold"] for r in rows)
grown = sum(r["server_rss_after_bytes"] - r["server_rss_before_bytes"] for r in rows)
whole = sum(r["server_rss_after_bytes"] for r in rows)
ok = len(rows) == procs and opened >= total and held == opened
print(json.dumps({
    "transport": transport, "processes": procs, "connections": total,
    "connected": opened, "still_open_after_hold": held,
    "hold_seconds": rows[0]["hold_seconds"] if rows else 0,
    "server_rss_total_bytes": whole,
    "server_rss_per_connection_bytes": round(grown / opened, 1) if opened else 0,
    "ok": ok,
}))
sys.exit(0 if ok else 1)
PY
