#!/usr/bin/env bash
# The TypeScript SDK (sdk/ts), a stage of scripts/test.sh: install its npm packages from the
# lockfile, check the generated protobuf code is current with proto/, type-check and build, then
# run its tests (Node's test runner) against a real local gim that the tests start on free ports.
#
#   scripts/sdk-ts.sh
#
# Installs Node.js from Debian when absent; builds the debug binaries the tests start.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/gim-target}
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
log() { printf '[sdk-ts] %s\n' "$*" >&2; }

if ! command -v npm >/dev/null 2>&1; then
  log "installing Node.js and npm"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi
bash scripts/deps.sh
log "building gim-logic, gim-conn and gim (cargo, debug)"
cargo build -q --locked -p gim-logic -p gim-conn -p gim-client --bins
cd sdk/ts
npm ci --no-audit --no-fund --loglevel=error
npm run -s gen:check
npm run -s build
GIM_SDK_BIN_DIR=$CARGO_TARGET_DIR/debug npm test
