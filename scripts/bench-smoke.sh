#!/usr/bin/env bash
# Seconds-long smoke run of every benchmark scenario (B1-B6 and both baselines) with small numbers,
# so the load generator keeps working. CI runs it from scripts/test.sh. Exits non-zero when any
# scenario's correctness check fails. Loopback only.
#
#   scripts/bench-smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/gim-target}
PROFILE=${BENCH_PROFILE:-debug}
WORK=${WORK:-$(mktemp -d /tmp/gim-bench-smoke.XXXXXX)}
PORT_BASE=${PORT_BASE:-23000}
CONN_NODES=2
BIN=$CARGO_TARGET_DIR/$PROFILE
source scripts/bench-lib.sh
trap stop_all EXIT

log "building ($PROFILE)"
if [ "$PROFILE" = release ]; then rel=--release; else rel=; fi
cargo build $rel --locked -q -p gim-logic -p gim-conn -p gim-bench

R=$WORK/results
mkdir -p "$R"
B="$BIN/gim-bench"
# Runs one smoke scenario; on failure shows its result (the correctness check's counts) and stops.
smoke() {
  local name=$1; shift
  if ! "$@" --out "$R/$name.json" >"$WORK/$name.out" 2>&1; then
    log "$name FAILED:"; cat "$WORK/$name.out" >&2; exit 1
  fi
}

log "baseline (a): ws-baseline"
"$BIN/ws-baseline" 0 >"$WORK/ws-baseline.out" &
STARTED_PIDS+=($!); WSB_PID=$!
for _ in $(seq 1 50); do grep -q listening "$WORK/ws-baseline.out" && break; sleep 0.1; done
WSB_PORT=$(awk '/listening/{print $2}' "$WORK/ws-baseline.out")
smoke base-idle-rust $B base-idle --target "127.0.0.1:$WSB_PORT" --pid "$WSB_PID" --conns 200
smoke base-fanout-rust $B base-fanout --target "127.0.0.1:$WSB_PORT" --conns 100 --rate 20 --secs 2

if command -v node >/dev/null && command -v npm >/dev/null; then
  log "baseline (b): node ws"
  (cd bench/baselines/node && npm ci --no-audit --no-fund --silent >/dev/null)
  node bench/baselines/node/server.js 0 >"$WORK/node-baseline.out" &
  STARTED_PIDS+=($!); NODE_PID=$!
  for _ in $(seq 1 50); do grep -q listening "$WORK/node-baseline.out" && break; sleep 0.1; done
  NODE_PORT=$(awk '/listening/{print $2}' "$WORK/node-baseline.out")
  smoke base-idle-node $B base-idle --target "127.0.0.1:$NODE_PORT" --pid "$NODE_PID" --conns 200
  smoke base-fanout-node $B base-fanout --target "127.0.0.1:$NODE_PORT" --conns 100 --rate 20 --secs 2
else
  log "node/npm not installed: skipping the Node.js baseline"
fi

start_cluster
make_fixture 400 2 20 150
F=(--fixture "$WORK/fixture.json")
T=(--targets "$TCP_TARGETS")
W=(--targets "$WS_TARGETS" --transport ws)

log "B1 idle + heartbeats (2 worker processes, 2 source addresses)"
smoke b1 $B storm --name b1 "${F[@]}" "${T[@]}" --conns 300 --procs 2 --rate 1000 --hold-secs 2 \
  --heartbeat-secs 0.5 --sources 2 --conn-pids "$CONN_PID_LIST"
wait_idle
log "B2 sign-in storm (WebSocket)"
smoke b2 $B storm --name b2 "${F[@]}" "${W[@]}" --conns 300 --procs 2 --rate 1000 --hold-secs 0.5
log "B3 1:1 (TCP and WebSocket)"
smoke b3-tcp $B b3 "${F[@]}" "${T[@]}" --pairs 20 --rate 100 --secs 2
smoke b3-ws $B b3 "${F[@]}" "${W[@]}" --pairs 20 --rate 100 --secs 2
log "B4 normal groups"
smoke b4 $B b4 "${F[@]}" "${T[@]}" --rate 20 --secs 2
log "B5 large group"
smoke b5 $B b5 "${F[@]}" "${T[@]}" --rate 10 --secs 2 --check-sample 10
log "B6 sync latency"
smoke b6-sync $B b6-sync "${F[@]}" "${T[@]}" --server-url "http://127.0.0.1:$LOGIC_SERVER" --users 20 \
  --per-user 10 --rate 50 --secs 2
log "B6 reconnect + sync storm"
smoke b6-reconnect $B storm --name b6-reconnect "${F[@]}" "${T[@]}" \
  --server-url "http://127.0.0.1:$LOGIC_SERVER" --conns 200 --procs 2 --rate 500 --sync-per-user 5

log "all smoke scenarios passed their correctness checks (results in $R)"
