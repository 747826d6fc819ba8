#!/usr/bin/env bash
# Soak test (not run in CI): two release gateways on one redis-server under an
# hour of connection churn, subscribe/unsubscribe churn and publishing, driven
# by crates/herald/examples/soak_driver.rs. Every --interval it samples each
# gateway's RSS and open file descriptors (from /proc) and Redis' used_memory
# into a CSV, and prints first/last/max of each column at the end. Flat lines
# are the pass; the driver also fails if a steady client lost or repeated a
# message.
#
#   scripts/soak.sh [--duration 1h|30m|180s] [--interval 60] [--out FILE]
#                   [--churning 200] [--steady 20] [--rate 50] [--debug]
#
# --debug runs the debug build (no release build: quicker to start, less disk,
# higher RSS); figures from it are not comparable with release figures.
#
# Only ever binds 127.0.0.1. Ports: REDIS_PORT (6579), GATEWAY_PORTS (8579,8580).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=3600
interval=60
out=""
churning=200
steady=20
rate=50
profile=release

seconds() {
  case "$1" in
    *h) echo $(( ${1%h} * 3600 )) ;;
    *m) echo $(( ${1%m} * 60 )) ;;
    *s) echo "${1%s}" ;;
    *) echo "$1" ;;
  esac
}

while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$(seconds "$2"); shift 2 ;;
    --interval) interval=$(seconds "$2"); shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --churning) churning="$2"; shift 2 ;;
    --steady) steady="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --debug) profile=debug; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

REDIS_PORT=${REDIS_PORT:-6579}
read -r -a GATEWAY_PORTS <<<"${GATEWAY_PORTS:-8579 8580}"
API_KEY=soak-key
mkdir -p target/soak
out=${out:-target/soak/soak-$(date +%Y%m%d-%H%M%S).csv}

if [ "$profile" = release ]; then
  nice -n 5 cargo build --release -p herald --bin herald --example soak_driver
else
  nice -n 5 cargo build -p herald --bin herald --example soak_driver
fi
HERALD=target/$profile/herald
DRIVER=target/$profile/examples/soak_driver

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

gateway_pids=()
addrs=()
for i in "${!GATEWAY_PORTS[@]}"; do
  addr="127.0.0.1:${GATEWAY_PORTS[$i]}"
  HERALD_LOG=warn "$HERALD" gateway --listen "$addr" --broker "redis://127.0.0.1:$REDIS_PORT" \
    --instance-id "soak-$i" --public-channel 'news:*' --history 'news:*=100/2m' \
    --api-key "$API_KEY" &
  gateway_pids+=($!)
  pids+=($!)
  addrs+=("$addr")
done
for addr in "${addrs[@]}"; do
  for _ in $(seq 100); do curl -fs "http://$addr/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
done

header="elapsed_s"
for i in "${!gateway_pids[@]}"; do header+=",gw${i}_rss_kib,gw${i}_fds"; done
header+=",redis_used_memory"
echo "$header" >"$out"

sample() {
  local line="$1"
  for pid in "${gateway_pids[@]}"; do
    local rss fds
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
    fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    line+=",$rss,$fds"
  done
  line+=",$(redis-cli -p "$REDIS_PORT" info memory | tr -d '\r' | awk -F: '$1 == "used_memory" {print $2}')"
  echo "$line" | tee -a "$out"
}

echo "soak ($profile build): ${duration}s, sampling every ${interval}s into $out"
gateways=$(IFS=,; echo "${addrs[*]}")
"$DRIVER" --gateways "$gateways" --seconds "$duration" --churning "$churning" \
  --steady "$steady" --rate "$rate" --api-key "$API_KEY" &
driver=$!
pids+=($driver)

start=$(date +%s)
echo "$header"
sample 0
next=$interval
while kill -0 "$driver" 2>/dev/null; do
  sleep 1
  kill -0 "$driver" 2>/dev/null || break
  if [ $(( $(date +%s) - start )) -ge "$next" ]; then
    sample $(( $(date +%s) - start ))
    next=$(( next + interval ))
  fi
done
driver_status=0
wait "$driver" || driver_status=$?
sample $(( $(date +%s) - start ))

echo
echo "summary (first / last / max) from $out:"
awk -F, '
  NR == 1 { for (i = 2; i <= NF; i++) name[i] = $i; next }
  {
    for (i = 2; i <= NF; i++) {
      if (NR == 2) first[i] = $i
      last[i] = $i
      if (NR == 2 || $i + 0 > max[i] + 0) max[i] = $i
    }
    cols = NF
  }
  END { for (i = 2; i <= cols; i++) printf "  %-20s %12s %12s %12s\n", name[i], first[i], last[i], max[i] }
' "$out"
exit "$driver_status"
