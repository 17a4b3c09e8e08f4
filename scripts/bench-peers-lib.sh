# The peer servers of the benchmark suite (sourced after scripts/bench-lib.sh, not run): ejabberd
# (the IM peer, on the same MariaDB in its own database) and nats-server (the fan-out peer, with a
# WebSocket listener). Each is installed from Debian when absent, configured under $WORK with
# loopback ports of its own (the machine's own ejabberd/nats/mosquitto services, if any, are left
# alone), started and stopped by pid like the gim cluster (STARTED_PIDS).
#
# Inputs (env): WORK, PORT_BASE, GIM_BENCH_MYSQL_URL's server (127.0.0.1:3306, user gim).

EJ_PORT=$((PORT_BASE + 20))
EJ_DIST_PORT=$((PORT_BASE + 21))
NATS_WS_PORT=$((PORT_BASE + 30))
NATS_PORT=$((PORT_BASE + 31))
EJ_DOMAIN=bench.local
EJ_PASSWORD=bench-pw
# The gim user may create databases named gim_*.
EJ_DB=${EJ_DB:-gim_ejabberd}

# apt-get install when a command is missing (root on these machines; CI runs as root too).
peer_install() { # $1 = command to look for, rest = Debian packages
  local cmd=$1; shift
  command -v "$cmd" >/dev/null 2>&1 && return 0
  log "installing $* (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >"$WORK/apt-$cmd.log" 2>&1 || {
    apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >"$WORK/apt-$cmd.log" 2>&1; } || {
    log "could not install $*"; tail -5 "$WORK/apt-$cmd.log" >&2; return 1; }
}

# ejabberd on $EJ_PORT (c2s, plain TCP), its schema in $EJ_DB and $1 users u0..u<$1-1> with one
# password, inserted straight into its users table (registering 2 000 users through ejabberdctl
# takes a VM start per user). Sets EJ_PID (the Erlang VM's pid).
start_ejabberd() {
  local users=$1 dir=$WORK/ejabberd
  peer_install ejabberdctl ejabberd erlang-p1-mysql || return 1
  # Debian's ejabberd leaves the MySQL driver to a separate package.
  if ! ls -d /usr/lib/erlang/lib/p1_mysql-* >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q erlang-p1-mysql >"$WORK/apt-p1-mysql.log" 2>&1 \
      || { log "could not install erlang-p1-mysql"; return 1; }
  fi
  rm -rf "$dir"; mkdir -p "$dir/spool" "$dir/logs"
  local my=(mariadb --protocol=tcp -h127.0.0.1 -ugim -pgim)
  "${my[@]}" -e "DROP DATABASE IF EXISTS \`$EJ_DB\`; CREATE DATABASE \`$EJ_DB\` CHARACTER SET utf8mb4"
  "${my[@]}" "$EJ_DB" </usr/share/ejabberd/sql/mysql.sql
  seq 0 $((users - 1)) | awk -v pw="$EJ_PASSWORD" '
    NR % 5000 == 1 { if (NR > 1) print ";"; printf "INSERT INTO users (username, password) VALUES " }
    { printf "%s(\"u%d\",\"%s\")", (NR % 5000 == 1 ? "" : ","), $1, pw }
    END { print ";" }' | "${my[@]}" "$EJ_DB"
  # What a deployment tuned for throughput would set, so the comparison is fair to ejabberd: no
  # traffic shaper (the default config limits c2s to 3 000 B/s per user), a deep accept backlog
  # (the default 5 drops SYNs under a connect burst), plain stored passwords (SCRAM storage would
  # make each PLAIN sign-in run PBKDF2), warnings-only logging, an SQL pool of 2 per core (its
  # default is 10), and only the modules the scenarios use: MAM (archive on SQL, always on),
  # offline storage and MUC. TLS off, as gim's listeners in the suite.
  cat >"$dir/ejabberd.yml" <<YML
loglevel: warning
hosts:
  - $EJ_DOMAIN
sql_type: mysql
sql_server: 127.0.0.1
sql_port: 3306
sql_database: $EJ_DB
sql_username: gim
sql_password: gim
sql_pool_size: ${EJ_SQL_POOL:-10}
default_db: sql
auth_method: sql
auth_password_format: plain
listen:
  -
    port: $EJ_PORT
    ip: 127.0.0.1
    module: ejabberd_c2s
    max_stanza_size: 65536
    shaper: none
    access: c2s
    starttls: false
    backlog: 1024
acl:
  local:
    user_regexp: ""
access_rules:
  c2s:
    allow: all
  local:
    allow: local
  muc_create:
    allow: local
shaper_rules:
  max_user_sessions: 10
  max_user_offline_messages: 100000
modules:
  mod_disco: {}
  mod_roster: {}
  mod_offline:
    access_max_user_messages: max_user_offline_messages
  mod_mam:
    default: always
  mod_muc:
    access_create: muc_create
YML
  # Distribution on a port of its own instead of epmd (another Erlang service may own epmd here).
  cat >"$dir/ejabberdctl.cfg" <<CFG
ERLANG_NODE=gimbench$PORT_BASE@127.0.0.1
ERL_DIST_PORT=$EJ_DIST_PORT
INET_DIST_INTERFACE=127.0.0.1
EJABBERD_BYPASS_WARNINGS=true
CFG
  cp /etc/ejabberd/inetrc "$dir/inetrc" 2>/dev/null || : >"$dir/inetrc"
  chown -R ejabberd:ejabberd "$dir"
  log "ejabberd on $EJ_PORT ($users users in $EJ_DB)"
  # As the ejabberd user directly: ejabberdctl run as root switches user with su, whose PAM
  # session resets the open-files limit to 1 024 (ejabberd then fails accepts past ~1 000
  # connections).
  (cd "$dir" && exec setpriv --reuid=ejabberd --regid=ejabberd --init-groups env HOME="$dir" \
    ejabberdctl --config-dir "$dir" --config "$dir/ejabberd.yml" --ctl-config "$dir/ejabberdctl.cfg" \
    --spool "$dir/spool" --logs "$dir/logs" foreground >"$dir/console.log" 2>&1) &
  STARTED_PIDS+=($!)
  EJ_WRAPPER=$!
  wait_port "$EJ_PORT" || { tail -20 "$dir/logs/"*.log >&2; return 1; }
  EJ_PID=$(pgrep -f "beam.smp.*gimbench$PORT_BASE@127.0.0.1" | head -1)
  STARTED_PIDS+=($EJ_PID)
}

# nats-server with a WebSocket listener on $NATS_WS_PORT (no TLS, no compression, as gim's
# WebSocket listener). Sets NATS_PID.
start_nats() {
  peer_install nats-server nats-server || return 1
  local dir=$WORK/nats
  rm -rf "$dir"; mkdir -p "$dir"
  cat >"$dir/nats.conf" <<CONF
listen: 127.0.0.1:$NATS_PORT
max_connections: 65536
websocket {
  listen: "127.0.0.1:$NATS_WS_PORT"
  no_tls: true
  compression: false
}
CONF
  log "nats-server on $NATS_WS_PORT (WebSocket)"
  nats-server -c "$dir/nats.conf" >"$dir/nats.log" 2>&1 &
  NATS_PID=$!
  STARTED_PIDS+=($NATS_PID)
  wait_port "$NATS_WS_PORT"
}

# Stops one started peer by pid (and forgets it).
stop_peer() {
  local pid=$1 keep=() p
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  for p in "${STARTED_PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  STARTED_PIDS=("${keep[@]}")
}
