# Shared by scripts/bench.sh and scripts/bench-smoke.sh (sourced, not run): starts a local gim
# cluster (its own redis-server, one logic, several conn nodes, each a separate process) on
# loopback ports, creates a tenant for the run, and stops everything it started, by pid.
#
# Inputs (env): BIN (dir with gim-logic, gim-conn, gim-bench, ws-baseline), WORK (scratch dir),
# PORT_BASE (below the ephemeral port range, 32768+), CONN_NODES, GIM_BENCH_MYSQL_URL.

GIM_BENCH_MYSQL_URL=${GIM_BENCH_MYSQL_URL:-mysql://gim:gim@127.0.0.1:3306/gim}
CONN_NODES=${CONN_NODES:-2}
PORT_BASE=${PORT_BASE:-24000}
STARTED_PIDS=()
CONN_PIDS=()

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

stop_all() {
  local pid
  for pid in "${STARTED_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${STARTED_PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  STARTED_PIDS=()
  CONN_PIDS=()
}

wait_port() {
  # $1 = port; up to 30 s
  local i
  for i in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "nothing listens on port $1"; return 1
}

# GET http://127.0.0.1:$1$2 with bash alone (no curl on a fresh machine); the response on stdout.
http_get() {
  local fd
  exec {fd}<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&"$fd"
  cat <&"$fd"
  exec {fd}<&-
}

# Waits (up to 120 s) until the cluster is idle after a storm: no connection open on any conn
# node and logic's count of LogicInt.Offline calls steady, so the next run does not measure the
# previous run's teardown (100 000 Offline calls after B1 take a while).
wait_idle() {
  local i port n conns offline last=-1
  for i in $(seq 1 240); do
    conns=0
    for port in $CONN_ADMIN_PORTS; do
      n=$(http_get "$port" /metrics 2>/dev/null \
        | awk '/^gim_conn_connections[{ ]/{n += $NF} END {print int(n)}')
      conns=$(( conns + ${n:-0} ))
    done
    offline=$(http_get "$LOGIC_ADMIN" /metrics 2>/dev/null \
      | awk '/^gim_logic_rpcs_total\{.*LogicInt.Offline/{n += $2} END {print int(n)}')
    if [ "$conns" = 0 ] && [ "$offline" = "$last" ]; then return 0; fi
    last=$offline
    sleep 0.5
  done
  log "cluster still busy after 120 s ($conns connections open)"
}

REDIS_PORT=$((PORT_BASE + 0))
LOGIC_INT=$((PORT_BASE + 1))
LOGIC_CLIENT=$((PORT_BASE + 2))
LOGIC_SERVER=$((PORT_BASE + 3))
LOGIC_ADMIN=$((PORT_BASE + 4))
conn_port() { # $1 = node index, $2 = 0 tcp / 1 ws / 2 grpc / 3 admin
  echo $((PORT_BASE + 100 + 10 * $1 + $2))
}

# Writes logic's config to $WORK/logic.toml.
write_logic_config() {
  cat >"$WORK/logic.toml" <<TOML
[log]
filter = "warn"
[mysql]
url = "$GIM_BENCH_MYSQL_URL"
max_connections = 64
[redis]
url = "redis://127.0.0.1:$REDIS_PORT/"
[logic]
int_listen = "127.0.0.1:$LOGIC_INT"
client_listen = "127.0.0.1:$LOGIC_CLIENT"
server_listen = "127.0.0.1:$LOGIC_SERVER"
admin_listen = "127.0.0.1:$LOGIC_ADMIN"
TOML
}

start_cluster() {
  mkdir -p "$WORK"
  log "redis-server on $REDIS_PORT"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --maxclients 20000 >"$WORK/redis.log" 2>&1 &
  STARTED_PIDS+=($!)
  wait_port "$REDIS_PORT"

  write_logic_config
  "$BIN/gim-logic" migrate --config "$WORK/logic.toml" >"$WORK/migrate.log" 2>&1 || {
    log "migrate failed:"; cat "$WORK/migrate.log" >&2; return 1; }
  log "gim-logic on $LOGIC_INT (int), $LOGIC_CLIENT (client), $LOGIC_SERVER (server)"
  "$BIN/gim-logic" serve --config "$WORK/logic.toml" >"$WORK/logic.log" 2>&1 &
  STARTED_PIDS+=($!)
  LOGIC_PID=$!
  wait_port "$LOGIC_INT"; wait_port "$LOGIC_SERVER"; wait_port "$LOGIC_CLIENT"

  local i
  TCP_TARGETS=""; WS_TARGETS=""; CONN_ADMIN_PORTS=""
  for i in $(seq 0 $((CONN_NODES - 1))); do
    cat >"$WORK/conn-$i.toml" <<TOML
[log]
filter = "warn"
[redis]
url = "redis://127.0.0.1:$REDIS_PORT/"
[conn]
node_name = "bench-$i"
tcp_listen = "127.0.0.1:$(conn_port "$i" 0)"
ws_listen = "127.0.0.1:$(conn_port "$i" 1)"
grpc_listen = "127.0.0.1:$(conn_port "$i" 2)"
admin_listen = "127.0.0.1:$(conn_port "$i" 3)"
logic_url = "http://127.0.0.1:$LOGIC_INT"
max_connections = 19500
# Six nodes share two cores: one runtime thread each (as a CPU limit of a third of a core would
# give a pod), so a wakeup never hands work to a sibling thread of the same node.
worker_threads = ${CONN_THREADS:-1}
# CONN_WINDOW_MS overrides the large-group window for an A/B (unset: conn's default).
${CONN_WINDOW_MS:+large_group_window_ms = $CONN_WINDOW_MS}
TOML
    "$BIN/gim-conn" --config "$WORK/conn-$i.toml" >"$WORK/conn-$i.log" 2>&1 &
    STARTED_PIDS+=($!)
    CONN_PIDS+=($!)
    TCP_TARGETS+="${TCP_TARGETS:+,}127.0.0.1:$(conn_port "$i" 0)"
    CONN_ADMIN_PORTS+=" $(conn_port "$i" 3)"
    WS_TARGETS+="${WS_TARGETS:+,}127.0.0.1:$(conn_port "$i" 1)"
  done
  for i in $(seq 0 $((CONN_NODES - 1))); do
    wait_port "$(conn_port "$i" 0)"; wait_port "$(conn_port "$i" 1)"
  done
  CONN_PID_LIST=$(IFS=,; echo "${CONN_PIDS[*]}")
  log "$CONN_NODES conn nodes up (pids $CONN_PID_LIST)"
}

# Creates an app and the fixture: $1 = users, $2 = normal groups, $3 = normal group size,
# $4 = large group members. Writes $WORK/fixture.json.
make_fixture() {
  local out app key
  out=$("$BIN/gim-logic" app create --name "bench-$(date +%s)-$RANDOM" --config "$WORK/logic.toml")
  app=$(printf '%s\n' "$out" | grep -iE 'app[ _]?id' | head -1 | grep -oE '[0-9]+' | head -1)
  key=$(printf '%s\n' "$out" | grep -iE 'private' | head -1 | awk '{print $NF}')
  if [ -z "$app" ] || [ -z "$key" ]; then
    log "could not read app id / key from 'gim-logic app create'"; return 1
  fi
  log "app $app: creating $1 users and devices"
  GIM_BENCH_APP_KEY=$key "$BIN/gim-bench" setup \
    --server-url "http://127.0.0.1:$LOGIC_SERVER" --client-url "http://127.0.0.1:$LOGIC_CLIENT" \
    --app-id "$app" --users "$1" --normal-groups "$2" --normal-size "$3" --large-members "$4" \
    --out "$WORK/fixture.json"
}

# cpu_split command...: runs the command (its output discarded) and prints a markdown table of
# the CPU seconds each process used over the run: logic, MariaDB, this cluster's Redis and every
# conn node from /proc/PID/stat, the command itself from bash's `time` (its child processes
# included). For a load like a sign-in storm that has no single hot process.
cpu_split() {
  local t tick gen rows split mysql_pid redis_pid i
  mysql_pid=$(pgrep -o -x mariadbd || pgrep -o -x mysqld || true)
  redis_pid=$(pgrep -f "redis-server 127.0.0.1:$REDIS_PORT" | head -1 || true)
  split="logic:$LOGIC_PID ${mysql_pid:+mariadb:$mysql_pid }${redis_pid:+redis:$redis_pid }"
  for i in "${!CONN_PIDS[@]}"; do split+="conn$i:${CONN_PIDS[$i]} "; done
  _cpu_of() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
  local -A before=()
  for t in $split; do before[$t]=$(_cpu_of "${t#*:}"); done
  gen=$(mktemp)
  local TIMEFORMAT='%U %S'
  { time "$@" >/dev/null 2>&1; } 2>"$gen" || true
  tick=$(getconf CLK_TCK)
  rows=$(
    for t in $split; do
      echo "${t%%:*} $(( $(_cpu_of "${t#*:}") - ${before[$t]} ))" | awk -v hz="$tick" '{ printf "%s %.2f\n", $1, $2 / hz }'
    done
    tail -1 "$gen" | awk '{ printf "generator %.2f\n", $1 + $2 }'
  )
  rm -f "$gen"
  echo '| process | CPU s | share |'
  echo '|---|---|---|'
  echo "$rows" | awk '{ s[NR] = $1; c[NR] = $2; t += $2 }
    END { for (i = 1; i <= NR; i++) printf "| %s | %.2f | %.0f %% |\n", s[i], c[i], t ? 100 * c[i] / t : 0
          printf "| all | %.2f | |\n", t }'
}
