#!/usr/bin/env bash
# Runs every test Herald has, from a fresh clone: the README's test command, and what CI runs.
#
# It installs what the tests need when it is missing (as root, through apt-get
# and npm ci), then runs, in order: formatting, lints, every Rust test (the
# integration tests start their own redis-server and gateway processes on
# free loopback ports), the TypeScript client's tests, the chaos test (it
# needs the built TypeScript client), and the web app's tests in a real
# headless Chromium.
# Nothing needs to be running beforehand.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Installs Debian packages. Root only: otherwise, say what to run.
apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: $*; install them with: sudo apt-get install -y $*" >&2
    exit 1
  fi
  step "installing $*"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# apt_ensure COMMAND PACKAGE [COMMAND PACKAGE …]: installs each package whose command is missing.
apt_ensure() {
  local missing=()
  while [ $# -gt 0 ]; do
    command -v "$1" >/dev/null 2>&1 || missing+=("$2")
    shift 2
  done
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
}

# Node.js comes with the machine; Debian's own nodejs is too old for Vite and the client's tests.
require_node() {
  if ! command -v node >/dev/null 2>&1 || ! node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a==20&&b>=19)?0:1)'; then
    echo "Node.js >= 20.19 with npm is needed for the web app and the TypeScript client (found: $(node --version 2>/dev/null || echo none))" >&2
    exit 1
  fi
}

apt_ensure redis-server redis-server prlimit util-linux
# The content service's PostgreSQL tests start their own server with initdb, which is not on PATH.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt_install postgresql
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test (unit and integration: real redis-server and gateway processes)"
cargo test --workspace

step "TypeScript client: build and test against real gateway processes and redis-server"
require_node
cargo build -p herald
(cd clients/typescript && npm ci --no-audit --no-fund && npm run build && npm test)

# Ignored in the workspace run above because it needs Node and the built client (just done);
# run here with --ignored, where a missing Node or client fails it instead of skipping it.
step "chaos test: faults under load, no message lost or duplicated (crates/herald/tests/chaos.rs)"
cargo test -p herald --test chaos nothing_is_lost -- --ignored

step "web app in a real browser: herald demo + two headless Chromium tabs (web/e2e)"
require_node
apt_ensure chromium chromium curl curl
(cd web && npm ci --no-audit --no-fund && npm run build)
cargo build -p herald
mkdir -p test-artifacts
e2e_dir="$(mktemp -d)"
# Port 0: the demo picks a free port and prints its URL.
target/debug/herald demo --listen 127.0.0.1:0 --no-web-build --database "sqlite://$e2e_dir/herald-e2e.db" \
  >"$e2e_dir/demo.out" 2>test-artifacts/e2e-demo.log &
demo_pid=$!
trap 'kill -TERM "$demo_pid" 2>/dev/null || true; wait "$demo_pid" 2>/dev/null || true; rm -rf "$e2e_dir"' EXIT
e2e_fail() {
  echo "FAILED: web e2e: $*" >&2
  echo "--- herald demo log (test-artifacts/e2e-demo.log) ---" >&2
  tail -n 50 test-artifacts/e2e-demo.log >&2
  exit 1
}
herald_url=""
for _ in $(seq 1 200); do
  kill -0 "$demo_pid" 2>/dev/null || e2e_fail "herald demo exited at start-up"
  herald_url="$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$e2e_dir/demo.out" | head -n 1 || true)"
  [ -n "$herald_url" ] && curl -fsS -o /dev/null "$herald_url/readyz" && break
  herald_url=""
  sleep 0.1
done
[ -n "$herald_url" ] || e2e_fail "herald demo never answered /readyz"
echo "herald demo ready at $herald_url"
(cd web && HERALD_URL="$herald_url" npm run test:e2e) || e2e_fail "the two-tab browser test failed (screenshots in test-artifacts/)"
echo "web e2e passed; screenshot: test-artifacts/web-two-tabs.png"
