#!/usr/bin/env bash
# Same-session A/B of gim-logic (or, with AB=gim-bench / AB=gim-conn, generator or conn) builds
# under B3 (1:1 messages): for each binary given,
# a fresh local cluster (scripts/bench-lib.sh: its own Redis, six conn nodes, the same fixture
# size as the suite), then the same gim-bench b3 runs in the same order. Prints one line per run;
# the JSON of each run stays in $WORK/ab/. Conn nodes and the generator are the current release
# builds for every variant, so only logic differs (with AB=gim-bench only the generator differs).
#
#   git stash; cargo build --release -p gim-logic; cp $CARGO_TARGET_DIR/release/gim-logic /tmp/logic.old
#   git stash pop; cargo build --release -p gim-logic gim-conn gim-bench
#   scripts/bench-ab.sh /tmp/logic.old $CARGO_TARGET_DIR/release/gim-logic
#
# Env: RATES (messages/s, one run each, default "500 500 500 5000 5000"), PAIRS (1000), SECS (8),
# USERS (30000), CONN_NODES (6), WORK (/tmp/gim-bench-ab), AB (gim-logic: which binary varies),
# AB_DB (gim_ab: the database each variant gets afresh).
# SCEN=b6-reconnect runs the suite's reconnect storm instead (RUNS times, default 2: CONNS
# clients, default 20000, reconnecting over 10 s, each syncing MSGS (10) messages); SCEN=b1 the
# suite's B1 (CONNS, default 100000, at RATE/s, default 1200, over 6 worker processes, held 30 s
# with 10 s heartbeats, from SOURCES (4) source addresses, 0 = one address; USERS is at least
# CONNS); SCEN=b2 the suite's sign-in storm (CONNS, default 30000, at RATE/s, default 6000, held
# until all are in), after one unreported storm that binds the devices as the suite's B1 does.
# SCEN=b4 runs the suite's normal-group load (200 members, half online) at each of RATES
# messages/s (default "205 205 205"); SCEN=b5 the suite's large-group fan-out (MEMBERS, default 10000, online members of one
# group) at each of RATES messages/s (default "25 50 50"); CONN_WINDOW_MS sets the conn nodes'
# large_group_window_ms, so two invocations with the same binaries compare windows.
# CPU_SPLIT=1 prints each run's CPU seconds per process (cpu_split in bench-lib.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n '2,13p' "$0" >&2; exit 2; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/gim-target}
REL=$CARGO_TARGET_DIR/release
WORK=${WORK:-/tmp/gim-bench-ab}
PORT_BASE=${PORT_BASE:-24000}
CONN_NODES=${CONN_NODES:-6}
PAIRS=${PAIRS:-1000}
SECS=${SECS:-8}
AB=${AB:-gim-logic}
SCEN=${SCEN:-b3}
case "$SCEN" in
  b3) RATES=${RATES:-"500 500 500 5000 5000"} ;;
  b4) RATES=${RATES:-"205 205 205"} ;;
  b5) MEMBERS=${MEMBERS:-10000}; RATES=${RATES:-"25 50 50"} ;;
  b6-reconnect) CONNS=${CONNS:-20000}; MSGS=${MSGS:-10}; RUNS=${RUNS:-2} ;;
  b1) CONNS=${CONNS:-100000}; RATE=${RATE:-1200}; RUNS=${RUNS:-1} ;;
  b2) CONNS=${CONNS:-30000}; RATE=${RATE:-6000}; RUNS=${RUNS:-3} ;;
  *) echo "SCEN must be b3, b4, b5, b6-reconnect, b1 or b2" >&2; exit 2 ;;
esac
USERS=${USERS:-$(( ${CONNS:-0} > 30000 ? CONNS : 30000 ))}
case "$AB" in gim-logic | gim-conn | gim-bench) ;; *) echo "AB must be gim-logic, gim-conn or gim-bench" >&2; exit 2 ;; esac
for b in gim-logic gim-conn gim-bench; do
  [ -x "$REL/$b" ] || { echo "no $REL/$b: cargo build --release -p $b first" >&2; exit 2; }
done
source scripts/bench-lib.sh
trap stop_all EXIT
AB_DB=${AB_DB:-gim_ab}
fresh_db() {
  local sql="DROP DATABASE IF EXISTS $1; CREATE DATABASE $1 CHARACTER SET utf8mb4;
    GRANT ALL PRIVILEGES ON $1.* TO 'gim'@'localhost', 'gim'@'127.0.0.1', 'gim'@'%';"
  mariadb -uroot -e "$sql" 2>/dev/null || mariadb --protocol=tcp -h127.0.0.1 -uroot -e "$sql"
}
bash scripts/deps.sh
mkdir -p "$WORK/ab"

variant=0
for variant_bin in "$@"; do
  variant=$((variant + 1))
  [ -x "$variant_bin" ] || { echo "not an executable: $variant_bin" >&2; exit 2; }
  # bench-lib starts $BIN/gim-*: a directory per variant with the varied binary and the shared rest.
  BIN=$WORK/bin-$variant
  mkdir -p "$BIN"
  for b in gim-logic gim-conn gim-bench; do ln -sf "$REL/$b" "$BIN/$b"; done
  ln -sf "$(realpath "$variant_bin")" "$BIN/$AB"
  # A fresh database per variant: builds with different migrations can follow each other, and a
  # later variant must not run on the tables (and buffer pool) an earlier one filled.
  fresh_db "$AB_DB"
  # Not exported: gim reads every GIM_* variable of its environment as config.
  GIM_BENCH_MYSQL_URL=mysql://gim:gim@127.0.0.1:3306/$AB_DB
  start_cluster
  make_fixture "$USERS" 10 200 "${MEMBERS:-1000}" >/dev/null
  if [ "$SCEN" != b3 ] && [ "$SCEN" != b4 ] && [ "$SCEN" != b5 ]; then
    first=1
    [ "$SCEN" = b2 ] && first=0
    for n in $(seq "$first" "$RUNS"); do
      out=$WORK/ab/v$variant.$SCEN.$n.json
      if [ "$SCEN" = b1 ]; then
        args=(--conns "$CONNS" --procs 6 --rate "$RATE" --hold-secs 30 --heartbeat-secs 10
          --sources "${SOURCES:-4}" --conn-pids "$CONN_PID_LIST")
      elif [ "$SCEN" = b2 ]; then
        args=(--conns "$CONNS" --procs 2 --rate "$RATE" --hold-secs 1)
      else
        args=(--server-url "http://127.0.0.1:$LOGIC_SERVER" --conns "$CONNS" --procs 2
          --rate $((CONNS / 10)) --sync-per-user "$MSGS")
      fi
      if [ "$n" = 0 ]; then
        # The warm-up: first sign-ins bind devices (MySQL writes) and fill logic's caches.
        "$BIN/gim-bench" storm --name warmup --fixture "$WORK/fixture.json" --targets "$TCP_TARGETS" \
          "${args[@]}" >/dev/null 2>&1 || true
        wait_idle
        continue
      fi
      cmd=("$BIN/gim-bench" storm --name "$SCEN" --fixture "$WORK/fixture.json" --targets "$TCP_TARGETS"
        "${args[@]}" --out "$out")
      if [ "${CPU_SPLIT:-0}" = 1 ]; then cpu_split "${cmd[@]}"; else "${cmd[@]}" >/dev/null 2>&1 || true; fi
      python3 - "$out" "$variant" "$variant_bin" <<'PY'
import json, sys
path, variant, binary = sys.argv[1:]
try:
    d = json.load(open(path))
except (OSError, ValueError) as e:
    print(f"v{variant} {binary}: no result ({e})")
    sys.exit(0)
keys = ("signed_in", "failed", "signins_per_s", "schedule_to_connect_start", "connect_to_connected",
        "connect_to_signed_in", "connect_to_synced", "check", "kib_per_conn", "first_error")
print(f"v{variant} {binary}: " + json.dumps({k: d[k] for k in keys if k in d}))
PY
      wait_idle
    done
    stop_all
    continue
  fi
  n=0
  for rate in $RATES; do
    n=$((n + 1))
    out=$WORK/ab/v$variant.$SCEN.$n.json
    case "$SCEN" in
      b5) load=(b5 --members "$MEMBERS") ;;
      b4) load=(b4) ;;
      *) load=(b3 --pairs "$PAIRS") ;;
    esac
    cmd=("$BIN/gim-bench" "${load[@]}" --fixture "$WORK/fixture.json" --targets "$TCP_TARGETS"
      --rate "$rate" --secs "$SECS" --out "$out")
    if [ "${CPU_SPLIT:-0}" = 1 ]; then cpu_split "${cmd[@]}"; else "${cmd[@]}" >/dev/null 2>&1 || true; fi
    python3 - "$out" "$variant" "$variant_bin" "$rate" <<'PY'
import json, sys
path, variant, binary, rate = sys.argv[1:]
try:
    d = json.load(open(path))
except (OSError, ValueError) as e:
    print(f"v{variant} {binary} rate={rate}: no result ({e})")
    sys.exit(0)
parts = [f"{d['deliveries_per_s']:.0f} deliveries/s"]
for key, label in (("push", "push"), ("send_ack", "reply"), ("last_recipient", "last recipient")):
    if key in d and d[key].get("n", 1):
        parts.append(f"{label} p50 {d[key]['p50_ms']:.2f} ms p99 {d[key]['p99_ms']:.1f} ms")
parts.append(f"check {'ok' if d['check'].get('ok') else 'FAILED'}")
print(f"v{variant} {binary} rate={rate}: " + ", ".join(parts))
if d.get("slowest_by_second_ms"):
    print(f"  slowest per second (ms): {d['slowest_by_second_ms']}")
PY
    if [ "$SCEN" = b5 ]; then wait_idle; fi
  done
  stop_all
done
