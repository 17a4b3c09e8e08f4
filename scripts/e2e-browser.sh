#!/usr/bin/env bash
# Browser end-to-end test (a stage of scripts/test.sh): two headless Chromium pages sign in as
# different users through two different conn nodes of the local cluster and exchange messages.
#
#   scripts/e2e-browser.sh
#
# Installs Debian's chromium and Node.js when absent and the page's npm packages (playwright-core
# drives the system chromium; no browser download). Uses the demo server of a running
# scripts/run-local.sh when one answers on GIM_DEMO_PORT (8000), otherwise starts one and stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${GIM_DEMO_PORT:-8000}
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
log() { printf '[e2e-browser] %s\n' "$*" >&2; }

need() {
  # $1 = command, $2.. = Debian packages
  local cmd=$1; shift
  if ! command -v "$cmd" >/dev/null 2>&1; then
    log "installing $*"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
  fi
}
need chromium chromium
need npm nodejs npm
(cd web && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

PID=""
if node -e "fetch('http://127.0.0.1:$PORT/api/config').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"; then
  log "using the running local cluster on port $PORT"
else
  mkdir -p .local/logs
  READY=.local/browser-ready
  rm -f "$READY"
  log "starting the local cluster (scripts/run-local.sh; log in .local/logs/run-local-browser.log)"
  RUN_LOCAL_READY_FILE=$READY bash scripts/run-local.sh >.local/logs/run-local-browser.log 2>&1 &
  PID=$!
  trap 'kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true' EXIT
  # Includes a cold build on a fresh machine.
  for _ in $(seq 1 1800); do
    [ -f "$READY" ] && break
    if ! kill -0 "$PID" 2>/dev/null; then
      tail -n 30 .local/logs/run-local-browser.log >&2
      log "the local cluster did not start"; exit 1
    fi
    sleep 1
  done
  [ -f "$READY" ] || { log "the local cluster was not ready in time"; exit 1; }
fi
(cd web && GIM_DEMO_URL="http://127.0.0.1:$PORT" node test/browser.mjs)
log "passed"
