#!/usr/bin/env bash
# Runs the multi-instance setup of deploy/Procfile on this machine with plain processes:
# redis-server, 1 content service, 2 notifiers and 2 gateways, each line of output
# prefixed with its process's name. Ctrl-C (or SIGTERM) stops them all, gateways first.
#
#   scripts/run-cluster.sh            # builds herald (release) and the web app if needed
#
# Then open http://127.0.0.1:8081 in one tab and http://127.0.0.1:8082 in another:
# content created in either appears in both, through Redis.
#
# Environment: HERALD_BIN (a built herald; skips cargo build), REDIS_PORT (6390),
# CONTENT_PORT (8090), GATEWAY1_PORT (8081), GATEWAY2_PORT (8082), HERALD_LOG (info).
# Data (the SQLite database) goes to target/cluster/.
set -euo pipefail
cd "$(dirname "$0")/.."

REDIS_PORT="${REDIS_PORT:-6390}"
CONTENT_PORT="${CONTENT_PORT:-8090}"
GATEWAY1_PORT="${GATEWAY1_PORT:-8081}"
GATEWAY2_PORT="${GATEWAY2_PORT:-8082}"
export HERALD_LOG="${HERALD_LOG:-info}"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
DATA_DIR="target/cluster"

say() { printf '==> %s\n' "$*"; }

command -v redis-server >/dev/null 2>&1 || {
  echo "redis-server is not installed: sudo apt-get install -y redis-server" >&2
  exit 1
}
if [ -z "${HERALD_BIN:-}" ]; then
  say "cargo build --release -p herald"
  cargo build --release -p herald
  HERALD_BIN=target/release/herald
fi
if [ ! -f web/dist/index.html ]; then
  if command -v npm >/dev/null 2>&1; then
    say "building the web app: (cd web && npm ci && npm run build)"
    (cd web && npm ci --no-audit --no-fund && npm run build)
  else
    say "npm is not installed: the gateways will serve a page saying how to build the web app"
  fi
fi
mkdir -p "$DATA_DIR"

pids=()
names=()
# start NAME COMMAND…: runs COMMAND in the background, its output prefixed with [NAME].
start() {
  local name="$1"
  shift
  "$@" > >(sed -u "s/^/[$name] /") 2>&1 &
  pids+=("$!")
  names+=("$name")
}

stopping=0
stop_all() {
  [ "$stopping" -eq 1 ] && return
  stopping=1
  say "stopping"
  # Newest first: gateways, then notifiers, the content service, and Redis last.
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
  say "stopped"
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap 'stop_all' EXIT

# wait_port NAME HOST:PORT: waits until something listens on PORT, or fails if nothing does.
wait_port() {
  local name="$1" addr="$2" i
  for i in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/${addr##*:}") 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "$name did not start listening on $addr" >&2
  exit 1
}

say "redis-server on $REDIS_URL"
start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no
wait_port redis "127.0.0.1:$REDIS_PORT"

say "content service on http://127.0.0.1:$CONTENT_PORT"
start content "$HERALD_BIN" content --listen "127.0.0.1:$CONTENT_PORT" --broker "$REDIS_URL" \
  --database "sqlite://$DATA_DIR/herald-content.db"
wait_port content "127.0.0.1:$CONTENT_PORT"

say "notifiers notifier-1 and notifier-2"
start notifier-1 "$HERALD_BIN" notifier --broker "$REDIS_URL" --consumer notifier-1
start notifier-2 "$HERALD_BIN" notifier --broker "$REDIS_URL" --consumer notifier-2

for n in 1 2; do
  port_var="GATEWAY${n}_PORT"
  port="${!port_var}"
  say "gateway-$n on http://127.0.0.1:$port"
  start "gateway-$n" "$HERALD_BIN" gateway --listen "127.0.0.1:$port" --broker "$REDIS_URL" \
    --instance-id "gateway-$n" --content-upstream "http://127.0.0.1:$CONTENT_PORT" --web-dir web/dist \
    --public-channel 'news:*' --public-channel events --history 'news:*=1000/24h'
  wait_port "gateway-$n" "127.0.0.1:$port"
done

cat <<MSG

  Herald cluster is running:
    http://127.0.0.1:$GATEWAY1_PORT   (gateway-1)
    http://127.0.0.1:$GATEWAY2_PORT   (gateway-2)
  Open one in a tab and the other in a second tab; content created in either appears in both.
  Ctrl-C stops everything.

MSG

# Any process ending (a crash, a port in use) stops the whole cluster.
set +e
wait -n "${pids[@]}"
status=$?
set -e
for i in "${!pids[@]}"; do
  if ! kill -0 "${pids[$i]}" 2>/dev/null; then
    echo "${names[$i]} exited (status $status); stopping the cluster" >&2
    break
  fi
done
exit 1
