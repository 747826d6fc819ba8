#!/usr/bin/env bash
# Reproduces the numbers in docs/benchmarks.md: one release gateway on its own
# redis-server, measured by `herald bench` from a separate process on loopback.
#
#   scripts/bench.sh idle|steady|throughput|max|all   (default: all)
#
# Every run is bounded (a fixed number of messages, a drain timeout) and only
# ever targets 127.0.0.1. Results are printed as tables; set JSON=1 for JSON.
set -euo pipefail
cd "$(dirname "$0")/.."

REDIS_PORT=${REDIS_PORT:-6479}
GATEWAY_ADDR=${GATEWAY_ADDR:-127.0.0.1:8479}
URL="ws://$GATEWAY_ADDR/ws/notifications"
JSON_FLAG=()
[ "${JSON:-0}" = 1 ] && JSON_FLAG=(--json)

cargo build --release -p herald
HERALD=target/release/herald
# Each process may hold ~19,500 sockets here; the bench and the gateway each hold one per client.
ulimit -n 20000

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
pids+=($!)
# Every bench client comes from 127.0.0.1: lift the per-address cap (default 256) for the run.
HERALD_LOG=warn "$HERALD" gateway --listen "$GATEWAY_ADDR" --broker "redis://127.0.0.1:$REDIS_PORT" --max-connections-per-ip 0 &
GATEWAY_PID=$!
pids+=($GATEWAY_PID)
for _ in $(seq 100); do curl -fs "http://$GATEWAY_ADDR/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

bench() {
  echo "==> herald bench $*"
  HERALD_LOG=warn "$HERALD" bench --url "$URL" --redis-url "redis://127.0.0.1:$REDIS_PORT" --server-pid "$GATEWAY_PID" "${JSON_FLAG[@]}" "$@"
}

case "${1:-all}" in
  idle) bench --clients 10000 --rate 1 --messages 5 --connect-concurrency 500 ;;
  steady) bench --clients 10000 --rate 10 --messages 300 --connect-concurrency 500 ;;
  throughput) bench --clients 1000 --rate 500 --messages 10000 ;;
  max)
    # Raise the rate until something is lost: the highest no-loss rate is the saturation point.
    for rate in 1000 2000 3000; do bench --clients 1000 --rate "$rate" --messages $((rate * 15)); done
    ;;
  all)
    bench --clients 10000 --rate 1 --messages 5 --connect-concurrency 500
    bench --clients 10000 --rate 10 --messages 300 --connect-concurrency 500
    bench --clients 1000 --rate 500 --messages 10000
    ;;
  *) echo "usage: scripts/bench.sh idle|steady|throughput|max|all" >&2; exit 2 ;;
esac
