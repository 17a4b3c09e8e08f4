#!/usr/bin/env bash
# Makes sure MariaDB and Redis run on this machine, installing them from Debian when absent, and
# that the gim databases and user exist. Idempotent: safe to run before every test run or start.
#
#   scripts/deps.sh            # install if needed, start if stopped, create db + user
#
# Env: GIM_DB_USER/GIM_DB_PASSWORD (gim/gim), databases gim and gim_test.
set -euo pipefail

DB_USER=${GIM_DB_USER:-gim}
DB_PASS=${GIM_DB_PASSWORD:-gim}
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

log() { printf '[deps] %s\n' "$*" >&2; }

apt_updated=""
need_pkg() {
  # $1 = command that must exist, $2.. = Debian packages providing it
  local cmd=$1; shift
  if ! command -v "$cmd" >/dev/null 2>&1; then
    if [ -z "$apt_updated" ]; then
      log "apt-get update"
      $SUDO apt-get update -qq
      apt_updated=1
    fi
    log "installing $*"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
  fi
}

wait_for() {
  # $1 = description, $2.. = probe command; waits up to 30 s
  local what=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  log "$what did not come up"; return 1
}

need_pkg mariadbd mariadb-server mariadb-client
need_pkg redis-server redis-server redis-tools
need_pkg redis-cli redis-tools

# --- MariaDB -------------------------------------------------------------------------------------
if ! mariadb-admin --protocol=tcp -h127.0.0.1 -uroot ping >/dev/null 2>&1 \
   && ! mariadb-admin -uroot ping >/dev/null 2>&1; then
  log "starting MariaDB"
  $SUDO mkdir -p /run/mysqld && $SUDO chown mysql:mysql /run/mysqld 2>/dev/null || true
  if [ ! -d /var/lib/mysql/mysql ]; then
    $SUDO mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  fi
  if command -v start-stop-daemon >/dev/null; then
    $SUDO start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql --bind-address=127.0.0.1
  else
    ($SUDO /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 >/tmp/mariadbd.log 2>&1 &)
  fi
  wait_for MariaDB mariadb-admin -uroot ping
fi

root_sql() {
  if mariadb -uroot -e 'SELECT 1' >/dev/null 2>&1; then
    mariadb -uroot "$@"
  else
    mariadb --protocol=tcp -h127.0.0.1 -uroot "$@"
  fi
}
root_sql <<SQL
CREATE DATABASE IF NOT EXISTS gim CHARACTER SET utf8mb4;
CREATE DATABASE IF NOT EXISTS gim_test CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS '${DB_USER}'@'localhost' IDENTIFIED BY '${DB_PASS}';
CREATE USER IF NOT EXISTS '${DB_USER}'@'127.0.0.1' IDENTIFIED BY '${DB_PASS}';
CREATE USER IF NOT EXISTS '${DB_USER}'@'%' IDENTIFIED BY '${DB_PASS}';
GRANT ALL PRIVILEGES ON gim.* TO '${DB_USER}'@'localhost', '${DB_USER}'@'127.0.0.1', '${DB_USER}'@'%';
GRANT ALL PRIVILEGES ON \`gim\_%\`.* TO '${DB_USER}'@'localhost', '${DB_USER}'@'127.0.0.1', '${DB_USER}'@'%';
FLUSH PRIVILEGES;
SQL
# Many connections: tests start several logic processes, each with its own pool.
root_sql -e "SET GLOBAL max_connections = 2000" || true

# --- Redis ---------------------------------------------------------------------------------------
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting Redis"
  $SUDO mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/gim.log
  wait_for Redis redis-cli -h 127.0.0.1 -p 6379 ping
fi
log "MariaDB and Redis are up (mysql://${DB_USER}:***@127.0.0.1:3306/gim, redis://127.0.0.1:6379)"
