#!/usr/bin/env bash
# gim against real peers on this host, side by side in one invocation (issue 23), with the same
# generator, schedule and clock:
#   P3  1:1 persisted messages, both online: gim (B3's scenario) vs ejabberd (XMPP, MAM on the same
#       MariaDB): the highest offered rate with p99 <= 50 ms, and CPU per message.
#   P5  one large group / subject, WebSocket subscribers: gim (B5's scenario over WebSocket) vs
#       nats-server (WebSocket listener): deliveries/s, p99 to the last recipient, RSS per
#       connection, CPU per delivery.
# CPU is read from /proc for the server processes (gim: logic, every conn, Redis, MariaDB;
# ejabberd: its VM and MariaDB; NATS: nats-server) over each run's schedule and drain.
# Writes the results to $WORK/results and the "Peers" section of BENCHMARKS.md (the rest of the
# file is left as it is). Loopback only; ejabberd and nats-server are installed with apt-get
# when absent and run on ports of their own.
#
#   scripts/bench-peers.sh                       # release build, full sizes (~10 min)
#   P3_PAIRS=100 P5_MEMBERS=1000 SECS=3 scripts/bench-peers.sh   # a quick pass
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/gim-target}
BENCH_PROFILE=${BENCH_PROFILE:-release}
BIN=$CARGO_TARGET_DIR/$BENCH_PROFILE
WORK=${WORK:-/tmp/gim-bench-peers}
PORT_BASE=${PORT_BASE:-25000}
CONN_NODES=${CONN_NODES:-6}
SECS=${SECS:-8}
P3_PAIRS=${P3_PAIRS:-1000}
P3_RATES_GIM=${P3_RATES_GIM:-"1000 2500 5000 7500"}
P3_RATES_EJABBERD=${P3_RATES_EJABBERD:-"250 500 1000 2000"}
P5_MEMBERS=${P5_MEMBERS:-10000}
P5_RATES=${P5_RATES:-"10 25 53"}
BENCH_DB=${BENCH_DB:-gim_bench_peers}
GIM_BENCH_MYSQL_URL=${GIM_BENCH_MYSQL_URL:-mysql://gim:gim@127.0.0.1:3306/$BENCH_DB}
source scripts/bench-lib.sh
source scripts/bench-peers-lib.sh
trap stop_all EXIT
bash scripts/deps.sh

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building $BENCH_PROFILE binaries"
  if [ "$BENCH_PROFILE" = release ]; then rel=--release; else rel=; fi
  cargo build $rel --locked -q -p gim-logic -p gim-conn -p gim-bench
fi
mkdir -p "$WORK"
mariadb --protocol=tcp -h127.0.0.1 -ugim -pgim \
  -e "DROP DATABASE IF EXISTS \`$BENCH_DB\`; CREATE DATABASE \`$BENCH_DB\` CHARACTER SET utf8mb4"
R=$WORK/results
rm -rf "$R"; mkdir -p "$R"
G="$BIN/gim-bench"
FAILED=()
MYSQL_PID=$(pgrep -o -x mariadbd || pgrep -o -x mysqld)
echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) when the peers suite started; $(nproc) cores, $BENCH_PROFILE build" >"$R/peers-machine.txt"

run() { # KEY command...: one measured run, $R/KEY.r1.json
  local key=$1 t0; shift
  t0=$(date +%s)
  if ! "$@" --out "$R/$key.r1.json" >"$WORK/last-run.log" 2>&1; then
    log "FAILED: $key"; tail -3 "$WORK/last-run.log" >&2; FAILED+=("$key")
  fi
  log "$key: $(( $(date +%s) - t0 )) s"
}

# ---- gim ------------------------------------------------------------------------------------------
start_cluster
users=$(( 2 * P3_PAIRS > P5_MEMBERS ? 2 * P3_PAIRS : P5_MEMBERS ))
make_fixture "$users" 0 200 "$P5_MEMBERS"
F=(--fixture "$WORK/fixture.json")
redis_pid=$(pgrep -f "redis-server 127.0.0.1:$REDIS_PORT" | head -1)
GIM_CPU="logic:$LOGIC_PID,mariadb:$MYSQL_PID,redis:$redis_pid"
for p in "${CONN_PIDS[@]}"; do GIM_CPU+=",conn:$p"; done
for rate in $P3_RATES_GIM; do
  run "p3.gim.$rate" "$G" b3 "${F[@]}" --targets "$TCP_TARGETS" --pairs "$P3_PAIRS" --rate "$rate" \
    --secs "$SECS" --cpu "$GIM_CPU"
done
# RSS per subscribed connection: the large group's members signed in over WebSocket, held.
run p5-idle.gim "$G" storm --name p5-idle "${F[@]}" --targets "$WS_TARGETS" --transport ws \
  --conns "$P5_MEMBERS" --procs 1 --rate 2000 --hold-secs 2 --conn-pids "$CONN_PID_LIST"
wait_idle
for rate in $P5_RATES; do
  run "p5.gim.$rate" "$G" b5 "${F[@]}" --targets "$WS_TARGETS" --transport ws --members "$P5_MEMBERS" \
    --rate "$rate" --secs "$SECS" --cpu "$GIM_CPU"
done
stop_all

# ---- ejabberd -------------------------------------------------------------------------------------
start_ejabberd $((2 * P3_PAIRS))
for rate in $P3_RATES_EJABBERD; do
  run "p3.ejabberd.$rate" "$G" p3-ejabberd --targets "127.0.0.1:$EJ_PORT" --domain "$EJ_DOMAIN" \
    --password "$EJ_PASSWORD" --pairs "$P3_PAIRS" --rate "$rate" --secs "$SECS" \
    --cpu "ejabberd:$EJ_PID,mariadb:$MYSQL_PID"
done
stop_all

# ---- NATS: a fresh server per run (one that fell behind would still be sending) -------------------
start_nats
run p5-idle.nats "$G" base-idle --proto nats --target "127.0.0.1:$NATS_WS_PORT" --pid "$NATS_PID" \
  --conns "$P5_MEMBERS"
stop_all
for rate in $P5_RATES; do
  start_nats
  run "p5.nats.$rate" "$G" base-fanout --proto nats --target "127.0.0.1:$NATS_WS_PORT" \
    --conns "$P5_MEMBERS" --rate "$rate" --secs "$SECS" --cpu "nats:$NATS_PID"
  stop_all
done

"$G" report --results "$R" --out BENCHMARKS.md --peers-only
log "peers written to BENCHMARKS.md (results in $R)"
if [ ${#FAILED[@]} -gt 0 ]; then
  log "failed runs: ${FAILED[*]}"; exit 1
fi
