#!/usr/bin/env bash
# Measures fred against the redis crate on the engine's two hot operations (the publish script
# and pub/sub receive) against a private redis-server on loopback; prints JSON lines.
#   scripts/bench_redis_clients.sh [SCRIPT_CALLS] [MESSAGES]
# Redis is pinned to CPU 0 and the client to CPU 1.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=7621
DIR="$(mktemp -d)"
taskset -c 0 redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$DIR" >/dev/null &
REDIS_PID=$!
trap 'kill "$REDIS_PID" 2>/dev/null || true; wait "$REDIS_PID" 2>/dev/null || true; rm -rf "$DIR"' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
cargo build --release -q -p herald-redis --example client_choice
taskset -c 1 target/release/examples/client_choice "redis://127.0.0.1:$PORT" "${1:-50000}" "${2:-200000}"
