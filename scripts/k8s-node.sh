#!/usr/bin/env bash
# A real single-node Kubernetes v1.20 on this machine, for the end-to-end test with real pods:
# etcd + kube-apiserver + kube-controller-manager (every controller) + kube-scheduler + kubelet
# (dockershim, Debian's docker.io) + kube-proxy (iptables), all built from the same Debian source
# package as scripts/k8s-apiserver.sh, plus a cluster DNS (dnsmasq) fed from the Services.
#
#   scripts/k8s-node.sh build    # apt packages, kubelet/scheduler/proxy build, pause image (cached)
#   scripts/k8s-node.sh start    # idempotent; prints the run dir (admin.kubeconfig)
#   scripts/k8s-node.sh stop     # removes every pod container, stops all but dockerd
#   scripts/k8s-node.sh status
#   scripts/k8s-node.sh dockerd  # only makes sure dockerd runs (scripts/k8s-images.sh uses it)
#
# Decisions (see docker/README.md and the README's Kubernetes section):
# - Pod network: CNI `bridge` on gim0 (10.244.0.1/24), created here, in the network namespaces
#   dockershim makes per pod. No masquerade, and pods get no default route: only the pod subnet
#   (on-link) and the Service range (via gim0). A FORWARD rule also drops anything leaving gim0 for
#   another interface, so nothing in a pod reaches an outside address.
# - oom_score_adj: this machine refuses negative values (no CAP_SYS_RESOURCE) and dockershim gives
#   sandboxes -998 and Guaranteed containers -997, so runc fails. dockerd's default runtime is
#   gim-runc, a wrapper that clamps the bundle's process.oomScoreAdj to >= 0 and execs runc. Chosen
#   over patching kubelet's constants: the kubelet stays upstream's source, and the wrapper covers
#   every negative value (sandbox, Guaranteed QoS, any future one), not just the one patched.
# - MariaDB and Redis listen on 127.0.0.1 only and are shared: pods reach them at 10.244.0.1:3306
#   and :6379 through a DNAT to 127.0.0.1 on gim0 (route_localnet on gim0 only) and an SNAT to
#   127.0.0.1 (Redis's protected mode resets non-loopback clients when it has no password). Their
#   bind addresses stay as they are (other users of this machine share them); no extra process.
# - Service names: dnsmasq answers on 10.244.0.1:53 (the kubelet's clusterDNS) for
#   NAME.NAMESPACE.svc.cluster.local from a hosts file a loop here rewrites from the Services, and
#   NXDOMAIN for the rest of cluster.local; it has no upstream. So the operator's rendered
#   `http://NAME-logic.NS.svc:PORT` resolves through the pod's search path, as with CoreDNS.
# - Addresses: the API server and kubelet listen on 10.244.0.1 (pods reach the API through the
#   `kubernetes` Service; Endpoints refuse loopback). The node reports InternalIP 10.244.0.1, so
#   kubectl logs/exec work. NodePorts open on 127.0.0.0/8 only.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${GIM_K8S_CACHE:-$HOME/.cache/gim-k8s}"
BIN="$CACHE/bin"
NODE_DIR="$CACHE/node"
RUN="${GIM_K8S_NODE_RUN:-$CACHE/node-run}"
KUBELET_ROOT=/var/lib/gim-kubelet
BRIDGE=gim0
NODE_IP=10.244.0.1
POD_CIDR=10.244.0.0/24
SVC_CIDR=10.96.0.0/16
NODE_NAME=gim-node
PAUSE_IMAGE=gim-local/pause:3.4.1
DOCKER=/usr/bin/docker
export GIM_K8S_RUN="$RUN" GIM_K8S_API_PORT=17443 GIM_K8S_ETCD_PORT=22379 GIM_K8S_ETCD_PEER_PORT=22380

log() { echo "k8s-node: $*" >&2; }

apt_updated=0
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ $apt_updated -eq 0 ]; then apt-get update -qq; apt_updated=1; fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

kc() { kubectl --kubeconfig "$RUN/admin.kubeconfig" "$@"; }

write_runtime() {
  mkdir -p "$NODE_DIR"
  cat >"$NODE_DIR/gim-runc.tmp" <<'EOF'
#!/bin/sh
# dockerd's default runtime on this node: clamps a negative process.oomScoreAdj in the bundle to 0
# (the machine refuses negative values), then runs runc unchanged. See scripts/k8s-node.sh.
bundle=""; create=0; prev=""
for a in "$@"; do
  case "$prev" in --bundle|-b) bundle=$a ;; esac
  case "$a" in --bundle=*) bundle=${a#--bundle=} ;; create|run) create=1 ;; esac
  prev=$a
done
if [ "$create" = 1 ] && [ -n "$bundle" ] && [ -f "$bundle/config.json" ]; then
  sed -i -E 's/"oomScoreAdj":[[:space:]]*-[0-9]+/"oomScoreAdj":0/' "$bundle/config.json"
fi
exec /usr/bin/runc "$@"
EOF
  chmod 0755 "$NODE_DIR/gim-runc.tmp"
  mv "$NODE_DIR/gim-runc.tmp" "$NODE_DIR/gim-runc"
  cat >"$NODE_DIR/daemon.json" <<EOF
{
  "bridge": "none",
  "iptables": false,
  "ip-masq": false,
  "ip-forward": false,
  "oom-score-adjust": 0,
  "storage-driver": "overlay2",
  "exec-opts": ["native.cgroupdriver=cgroupfs"],
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m", "max-file": "2"},
  "runtimes": {"gim-runc": {"path": "$NODE_DIR/gim-runc"}},
  "default-runtime": "gim-runc"
}
EOF
}

cmd_dockerd() {
  apt_install docker.io
  write_runtime
  if $DOCKER info >/dev/null 2>&1; then
    if [ "$($DOCKER info --format '{{.DefaultRuntime}}')" != gim-runc ]; then
      log "dockerd runs without the gim-runc default runtime (started elsewhere?): stop it or add $NODE_DIR/daemon.json's runtime"
      exit 1
    fi
    return 0
  fi
  log "starting dockerd"
  setsid dockerd --config-file "$NODE_DIR/daemon.json" >"$CACHE/dockerd.log" 2>&1 </dev/null &
  local i
  for i in $(seq 1 120); do
    $DOCKER info >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  log "dockerd did not come up; tail of $CACHE/dockerd.log:"; tail -n 20 "$CACHE/dockerd.log" >&2; exit 1
}

cmd_build() {
  apt_install docker.io containernetworking-plugins dnsmasq-base iptables conntrack gcc libc6-dev
  bash "$ROOT/scripts/k8s-apiserver.sh" build-node
  cmd_dockerd
  if $DOCKER image inspect "$PAUSE_IMAGE" >/dev/null 2>&1; then return 0; fi
  # The sandbox image, built from the pause.c in the same source tree (no registry needed).
  local src tmp
  src=$(find "$CACHE/src" -maxdepth 1 -mindepth 1 -type d -name 'kubernetes-*' | head -n1)
  tmp=$(mktemp -d)
  gcc -Os -Wall -Werror -static -DVERSION=v3.4.1-gim -o "$tmp/pause" "$src/build/pause/linux/pause.c"
  strip "$tmp/pause"
  printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$tmp/Dockerfile"
  DOCKER_BUILDKIT=0 $DOCKER build -q -t "$PAUSE_IMAGE" "$tmp" >/dev/null
  rm -rf "$tmp"
  log "pause image $PAUSE_IMAGE built"
}

running() { [ -f "$RUN/$1.pid" ] && alive "$(cat "$RUN/$1.pid")"; }

spawn() { # name cmd... : background, own session, log + pid in the run dir
  local name=$1; shift
  setsid "$@" >"$RUN/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

# Bridge, sysctls and iptables rules of the pod network; each step is idempotent.
network_up() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  ip addr show dev "$BRIDGE" | grep -q "inet $NODE_IP/" || ip addr add "$NODE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # The host's own connections to Service IPs (the test's clients) stay on the bridge too.
  ip route replace "$SVC_CIDR" dev "$BRIDGE" src "$NODE_IP"
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
  sysctl -qw "net.ipv4.conf.$BRIDGE.route_localnet=1"
  ipt() { iptables -w "$@"; }
  rule() { # table chain rule...
    local t=$1 c=$2; shift 2
    ipt -t "$t" -C "$c" "$@" 2>/dev/null || ipt -t "$t" -I "$c" "$@"
  }
  rule filter FORWARD -i "$BRIDGE" ! -o "$BRIDGE" -m comment --comment gim-no-egress -j DROP
  local port
  for port in 3306 6379; do
    rule nat PREROUTING -i "$BRIDGE" -d "$NODE_IP" -p tcp --dport "$port" \
      -m comment --comment gim-host-deps -j DNAT --to-destination "127.0.0.1:$port"
  done
  # ...and from 127.0.0.1: Redis without a password (protected mode) resets non-loopback clients.
  rule nat INPUT -s "$POD_CIDR" -d 127.0.0.1 -p tcp -m multiport --dports 3306,6379 \
    -m comment --comment gim-host-deps -j SNAT --to-source 127.0.0.1
  mkdir -p "$RUN/cni"
  cat >"$RUN/cni/10-gim.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "gim",
  "plugins": [{
    "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "isDefaultGateway": false,
    "ipMasq": false, "hairpinMode": true,
    "ipam": {
      "type": "host-local", "dataDir": "/var/lib/cni/gim",
      "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
      "routes": [{"dst": "$SVC_CIDR"}]
    }
  }]
}
EOF
}

network_down() {
  local t c r
  # (grep finds nothing once they are gone: not an error here.)
  { iptables -w -S FORWARD | grep -e gim-no-egress | sed 's/^-A/-D/' | while read -r r; do eval iptables -w "$r"; done; } || true
  for c in PREROUTING INPUT; do
    { iptables -w -t nat -S "$c" | grep -e gim-host-deps | sed 's/^-A/-D/' | while read -r r; do eval iptables -w -t nat "$r"; done; } || true
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  rm -rf /var/lib/cni/gim
}

# The chains the kubelet adds (kube-proxy --cleanup leaves them): gone with the node.
kubelet_rules_down() {
  local t ch
  for ch in INPUT OUTPUT; do
    while iptables -w -D "$ch" -j KUBE-FIREWALL 2>/dev/null; do :; done
  done
  for t in filter nat; do
    for ch in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-PROXY-CANARY KUBE-MARK-DROP KUBE-MARK-MASQ KUBE-POSTROUTING; do
      iptables -w -t "$t" -F "$ch" 2>/dev/null || true
    done
    for ch in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-PROXY-CANARY KUBE-MARK-DROP KUBE-MARK-MASQ KUBE-POSTROUTING; do
      iptables -w -t "$t" -X "$ch" 2>/dev/null || true
    done
  done
}

write_kubelet_config() {
  : >"$RUN/resolv.conf"
  cat >"$RUN/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
cgroupDriver: cgroupfs
failSwapOn: false
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $RUN/pki/ca.crt}
authorization: {mode: Webhook}
clusterDNS: [$NODE_IP]
clusterDomain: cluster.local
resolvConf: $RUN/resolv.conf
# The disk is shared with build caches: evict nothing, collect no images (none can be re-pulled).
evictionHard: {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
syncFrequency: 10s
fileCheckFrequency: 10s
serializeImagePulls: false
EOF
}

# NAME.NS.svc.cluster.local for every Service with a cluster IP, into dnsmasq's hosts dir.
dns_feeder() {
  local out="$RUN/dns/services" tmp="$RUN/dns-services.tmp"
  while true; do
    if kc get svc -A -o jsonpath='{range .items[*]}{.spec.clusterIP} {.metadata.name}.{.metadata.namespace}.svc.cluster.local{"\n"}{end}' >"$tmp" 2>/dev/null; then
      grep -v -e '^None ' -e '^ ' "$tmp" >"$tmp.2" || true
      cmp -s "$tmp.2" "$out" || mv "$tmp.2" "$out"
    fi
    sleep 1
  done
}

healthy() {
  [ -f "$RUN/admin.kubeconfig" ] && kc get --raw /readyz >/dev/null 2>&1 &&
    kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -q True &&
    running kubelet && running kube-proxy && running kube-scheduler && running dnsmasq && running dns-feeder
}

cmd_start() {
  [ -x "$BIN/kubelet" ] && [ -x "$BIN/kube-proxy" ] && [ -x "$BIN/kube-scheduler" ] \
    || { log "not built: run '$0 build' first"; exit 2; }
  if healthy; then log "already running"; echo "$RUN"; return 0; fi
  cmd_stop >/dev/null 2>&1 || true
  local t0=$SECONDS
  cmd_dockerd
  network_up
  GIM_K8S_NODE_IP=$NODE_IP bash "$ROOT/scripts/k8s-apiserver.sh" start >/dev/null
  mkdir -p "$RUN/logs" "$RUN/dns"
  write_kubelet_config
  network_up # start wiped the run dir (CNI config)
  : >"$RUN/dns/services"

  spawn kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$RUN/admin.kubeconfig" \
    --authentication-kubeconfig "$RUN/admin.kubeconfig" --authorization-kubeconfig "$RUN/admin.kubeconfig" \
    --leader-elect=false --bind-address 127.0.0.1 --port 0 --secure-port 10259
  mkdir -p "$KUBELET_ROOT"
  spawn kubelet "$BIN/kubelet" --config "$RUN/kubelet.yaml" --kubeconfig "$RUN/admin.kubeconfig" \
    --container-runtime docker --pod-infra-container-image "$PAUSE_IMAGE" \
    --network-plugin cni --cni-conf-dir "$RUN/cni" --cni-bin-dir /usr/lib/cni \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --root-dir "$KUBELET_ROOT" \
    --cert-dir "$RUN/kubelet-pki" --oom-score-adj 0 --v 1
  spawn kube-proxy "$BIN/kube-proxy" --kubeconfig "$RUN/admin.kubeconfig" \
    --hostname-override "$NODE_NAME" --proxy-mode iptables --cluster-cidr "$POD_CIDR" \
    --nodeport-addresses 127.0.0.0/8 --bind-address 127.0.0.1 \
    --healthz-bind-address 127.0.0.1:10256 --metrics-bind-address 127.0.0.1:10249 \
    --conntrack-max-per-core 0 --oom-score-adj 0
  spawn dnsmasq dnsmasq --keep-in-foreground --user=root --no-hosts --no-resolv \
    --listen-address "$NODE_IP" --bind-interfaces --port 53 --local=/cluster.local/ \
    --hostsdir "$RUN/dns" --log-facility=- --pid-file=
  export -f dns_feeder kc
  RUN=$RUN spawn dns-feeder bash -c dns_feeder

  local i
  for i in $(seq 1 180); do
    healthy && break
    local c
    for c in kubelet kube-proxy kube-scheduler dnsmasq; do
      running "$c" || { log "$c exited; tail of its log:"; tail -n 30 "$RUN/logs/$c.log" >&2; exit 1; }
    done
    sleep 0.5
  done
  healthy || { log "node $NODE_NAME not Ready after 90s; tail of the kubelet log:"; tail -n 30 "$RUN/logs/kubelet.log" >&2; exit 1; }
  log "node $NODE_NAME Ready in $((SECONDS - t0))s; kubeconfig $RUN/admin.kubeconfig"
  echo "$RUN"
}

# Alive and not a zombie (this machine's init does not always reap orphans at once).
alive() { kill -0 "$1" 2>/dev/null && ! grep -qE '^[0-9]+ \(.*\) Z' "/proc/$1/stat" 2>/dev/null; }

stop_pid() {
  local c=$1 pid i
  [ -f "$RUN/$c.pid" ] || return 0
  pid=$(cat "$RUN/$c.pid")
  kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
  for i in $(seq 1 40); do alive "$pid" || break; sleep 0.25; done
  kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
  rm -f "$RUN/$c.pid"
}

cmd_stop() {
  local c
  for c in dns-feeder dnsmasq kubelet; do stop_pid "$c"; done
  # Every container the kubelet made (pods and their sandboxes) goes; dockerd may stay.
  if $DOCKER info >/dev/null 2>&1; then
    local ids
    ids=$($DOCKER ps -aq --filter label=io.kubernetes.pod.uid)
    [ -z "$ids" ] || $DOCKER rm -f $ids >/dev/null 2>&1 || true
  fi
  if [ -d "$KUBELET_ROOT" ]; then
    awk -v r="$KUBELET_ROOT" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$KUBELET_ROOT"
  fi
  for c in kube-proxy kube-scheduler; do stop_pid "$c"; done
  [ -x "$BIN/kube-proxy" ] && "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  kubelet_rules_down
  bash "$ROOT/scripts/k8s-apiserver.sh" stop >/dev/null 2>&1 || true
  network_down
  log "stopped"
}

case "${1:-}" in
  build) cmd_build ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  dockerd) cmd_dockerd ;;
  status) if healthy; then echo "running: $RUN"; else echo "not running"; exit 1; fi ;;
  *) echo "usage: $0 build|start|stop|status|dockerd" >&2; exit 64 ;;
esac
