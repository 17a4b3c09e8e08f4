#!/usr/bin/env bash
# README command one: a local gim cluster with a demo app, on a fresh Debian machine.
#
#   scripts/run-local.sh            # deps, build, migrate, demo app, 1 logic + 2 conn + demo page
#   GIM_DEMO_PORT=8000              # where the demo page is served (default 8000)
#
# Installs/starts MariaDB and Redis (scripts/deps.sh) and Node.js when absent, builds the binaries
# and the web page, applies the migrations, then creates (once) a demo app with users 1-4, a normal
# group and a large group, and keeps its private key and ids in .local/demo.env (git-ignored), so a
# second run reuses them. Stops everything it started on Ctrl-C. Logs: .local/logs/.
# With RUN_LOCAL_READY_FILE=path it writes that file once the cluster is up (used by the browser test).
# Started in the background, stop it with SIGTERM (background jobs of scripts ignore SIGINT).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/gim-target}
BIN=$CARGO_TARGET_DIR/debug
STATE=.local
LOGS=$STATE/logs
DEMO_ENV=$STATE/demo.env
DEMO_PORT=${GIM_DEMO_PORT:-8000}
mkdir -p "$LOGS"

log() { printf '[run-local] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

PIDS=()
cleanup() {
  trap - EXIT INT TERM
  if [ ${#PIDS[@]} -gt 0 ]; then
    log "stopping (${#PIDS[@]} processes)"
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  fi
  log "stopped"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  # $1 = name, $2 = port, $3 = pid; up to 60 s
  for _ in $(seq 1 120); do
    if ! port_free "$2"; then return 0; fi
    kill -0 "$3" 2>/dev/null || die "$1 exited; see $LOGS/$1.log"
    sleep 0.5
  done
  die "$1 did not open port $2; see $LOGS/$1.log"
}

# --- dependencies ---------------------------------------------------------------------------------
bash scripts/deps.sh
if ! command -v npm >/dev/null 2>&1; then
  log "installing Node.js and npm (for the demo page)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi
for p in 50000 50001 50002 9100 8080 8081 50100 9200 8090 8091 50110 9210 "$DEMO_PORT"; do
  port_free "$p" || die "port $p is in use (another run-local.sh still running?)"
done

# --- build ----------------------------------------------------------------------------------------
log "building gim-logic, gim-conn and gim (cargo, debug)"
cargo build -q -p gim-logic -p gim-conn -p gim-client --bins
log "building the TypeScript SDK and the demo page on it (npm)"
(cd sdk/ts && npm ci --no-audit --no-fund --loglevel=error >/dev/null && npm run -s build >/dev/null)
(cd web && npm ci --no-audit --no-fund --loglevel=error >/dev/null && npm run -s build >/dev/null)
GIM=$BIN/gim

log "applying migrations"
"$BIN/gim-logic" --config config/logic.toml migrate >/dev/null

# --- processes ------------------------------------------------------------------------------------
# The internal APIs run authenticated here as in a deployment: one secret for the local cluster,
# made once and kept beside the demo app (conn and logic read it; nothing else needs it).
SECRET_FILE=$STATE/internal.secret
if [ ! -s "$SECRET_FILE" ]; then
  (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$SECRET_FILE")
fi
export GIM_INTERNAL__SECRET_FILE=$PWD/$SECRET_FILE
start() {
  # $1 = name, rest = command; output to .local/logs/<name>.log
  local name=$1; shift
  "$@" >"$LOGS/$name.log" 2>&1 &
  PIDS+=($!)
  LAST_PID=$!
}
start logic "$BIN/gim-logic" --config config/logic.toml
wait_port logic 50002 "$LAST_PID"
start conn-a "$BIN/gim-conn" --config config/conn.toml
wait_port conn-a 8081 "$LAST_PID"
start conn-b "$BIN/gim-conn" --config config/conn-b.toml
wait_port conn-b 8091 "$LAST_PID"

# --- demo app (created once, reused after) -------------------------------------------------------
load_demo() { APP_ID=""; [ -f "$DEMO_ENV" ] && . "$DEMO_ENV"; true; }
load_demo
if [ -n "${APP_ID:-}" ] && ! "$GIM" user import --app-id "$APP_ID" --key "$APP_KEY" --users 1,2,3,4 2>/dev/null; then
  log "the stored demo app $APP_ID is gone from the database; creating a new one"
  rm -f "$DEMO_ENV"
  APP_ID=""
fi
if [ -z "${APP_ID:-}" ]; then
  log "creating the demo app"
  out=$("$BIN/gim-logic" --config config/logic.toml app create --name "demo-$(date +%s)")
  APP_ID=$(printf '%s\n' "$out" | sed -n 's/^app_id: //p')
  APP_KEY=$(printf '%s\n' "$out" | sed -n 's/^private_key: //p')
  [ -n "$APP_ID" ] && [ -n "$APP_KEY" ] || die "unexpected output of gim-logic app create"
  A=(--app-id "$APP_ID" --key "$APP_KEY")
  "$GIM" user import "${A[@]}" --users 1,2,3,4 --nickname demo-user-
  TEAM=$("$GIM" group create "${A[@]}" --name "demo team" --owner 1 --members 2,3)
  LOBBY=$("$GIM" group create "${A[@]}" --name "demo lobby" --owner 1 --members 2,3,4 --large)
  DEVICE=$("$GIM" device register --app-id "$APP_ID" --kind macos)
  umask 077
  cat >"$DEMO_ENV" <<ENV
# The local demo app (run-local.sh). Keep the key private; delete this file to start afresh.
APP_ID=$APP_ID
APP_KEY=$APP_KEY
TEAM_GROUP=$TEAM
LOBBY_GROUP=$LOBBY
CLI_DEVICE=$DEVICE
ENV
  load_demo
fi

start demo "$GIM" demo serve --app-id "$APP_ID" --key "$APP_KEY" --listen "127.0.0.1:$DEMO_PORT" \
  --dir web/dist --endpoint ws://127.0.0.1:8081/ws --endpoint ws://127.0.0.1:8091/ws --users 1,2,3,4
wait_port demo "$DEMO_PORT" "$LAST_PID"

TOKEN=$("$GIM" token device --app-id "$APP_ID" --key "$APP_KEY" --user 1 --device "$CLI_DEVICE")
cat <<MSG

gim is running (logs in $LOGS/):
  logic   LogicClientExt http://127.0.0.1:50001  LogicServerExt http://127.0.0.1:50002
  conn-a  tcp://127.0.0.1:8080  ws://127.0.0.1:8081/ws
  conn-b  tcp://127.0.0.1:8090  ws://127.0.0.1:8091/ws
  demo    http://127.0.0.1:$DEMO_PORT/   (open two tabs, sign in as different users on different nodes)

demo app $APP_ID: users 1-4, group "demo team" $TEAM_GROUP (1,2,3), large group "demo lobby" $LOBBY_GROUP (1-4)
  device token for user 1, device $CLI_DEVICE (valid 24 h):
  $TOKEN

try it (the app id and key are in $DEMO_ENV):
  . $DEMO_ENV; export GIMCLI_APP_ID=\$APP_ID GIMCLI_APP_KEY=\$APP_KEY
  $GIM listen --user 1 --device \$CLI_DEVICE --endpoint tcp://127.0.0.1:8080 --endpoint tcp://127.0.0.1:8090
  $GIM send --to-user 1 "hello from the business server"
  $GIM cluster status

Ctrl-C stops everything.
MSG
if [ -n "${RUN_LOCAL_READY_FILE:-}" ]; then
  cp "$DEMO_ENV" "$RUN_LOCAL_READY_FILE"
fi
wait -n "${PIDS[@]}" || true
die "a process exited; see $LOGS/"
