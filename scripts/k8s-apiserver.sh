#!/usr/bin/env bash
# Builds and runs a local Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager)
# for the operator's integration tests. No kubelet, no scheduler: pods never run, which is fine
# because the tests check the objects the operator writes, not running workloads.
#
#   scripts/k8s-apiserver.sh build    # once; cached under $GIM_K8S_CACHE (default ~/.cache/gim-k8s)
#   scripts/k8s-apiserver.sh build-node  # adds kubelet, kube-scheduler, kube-proxy (scripts/k8s-node.sh)
#   scripts/k8s-apiserver.sh start    # idempotent; prints the run dir holding the kubeconfigs
#   scripts/k8s-apiserver.sh stop
#   scripts/k8s-apiserver.sh status
#
# Why build from source: Debian bookworm ships the kubernetes *source* package (1.20) but only the
# client binary. We build the server from it with Debian's Go 1.19, offline (vendored deps).
# The vendored github.com/modern-go/reflect2 (1.0.1) crashes under Go >= 1.18 on custom-resource
# writes (unsafe map iteration layout changed), so it is replaced by Debian's 1.0.2 copy.
#
# Auth set up by `start` (static token file, RBAC authorization):
#   admin.kubeconfig    user "gim-admin", group system:masters (full access)
#   operator.kubeconfig user "gim-operator", no groups: only what RBAC bindings grant it
set -euo pipefail

CACHE="${GIM_K8S_CACHE:-$HOME/.cache/gim-k8s}"
RUN="${GIM_K8S_RUN:-$CACHE/run}"
BIN="$CACHE/bin"
API_PORT="${GIM_K8S_API_PORT:-16443}"
ETCD_PORT="${GIM_K8S_ETCD_PORT:-12379}"
ETCD_PEER_PORT="${GIM_K8S_ETCD_PEER_PORT:-12380}"
# scripts/k8s-node.sh sets GIM_K8S_NODE_IP (the pod bridge's address): the server then binds and
# advertises there (pods reach it through the `kubernetes` Service; Endpoints refuse loopback),
# mounts ServiceAccount tokens and runs every controller, since a kubelet will run the pods.
NODE_IP="${GIM_K8S_NODE_IP:-}"
ADDR="${NODE_IP:-127.0.0.1}"
GOROOT_DEB=/usr/lib/go-1.19

log() { echo "k8s-apiserver: $*" >&2; }

apt_updated=0
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ $apt_updated -eq 0 ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

ensure_deb_src() {
  # apt-get source needs deb-src entries; the image only lists binary ones.
  if ! grep -rqs "deb-src" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "adding deb-src entries for bookworm"
    cat >/etc/apt/sources.list.d/gim-deb-src.sources <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    apt-get update -qq
    apt_updated=1
  fi
}

cmd_build() {
  # One build per machine: a second caller (another checkout, a CI job sharing the cache) waits
  # for the first and then finds the binaries built, instead of racing it in the same tree.
  exec 9>"${GIM_K8S_BUILD_LOCK:-/tmp/gim-k8s-build.lock}"
  if ! flock -n 9; then
    log "another build holds ${GIM_K8S_BUILD_LOCK:-/tmp/gim-k8s-build.lock}; waiting for it"
    flock 9
  fi
  if [ -z "${GIM_K8S_FORCE:-}" ] && [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ]; then
    log "already built in $BIN"
    return 0
  fi
  local t0=$SECONDS
  apt_install golang-1.19-go etcd-server dpkg-dev golang-github-modern-go-reflect2-dev openssl ca-certificates
  command -v kubectl >/dev/null || apt_install kubernetes-client
  ensure_deb_src
  mkdir -p "$CACHE/src" "$BIN"
  local srcdir
  srcdir=$(find "$CACHE/src" -maxdepth 1 -mindepth 1 -type d -name 'kubernetes-*' | head -n1 || true)
  if [ -z "$srcdir" ]; then
    log "fetching Debian kubernetes source package"
    (cd "$CACHE/src" && apt-get source -qq kubernetes)
    srcdir=$(find "$CACHE/src" -maxdepth 1 -mindepth 1 -type d -name 'kubernetes-*' | head -n1)
  fi
  log "source in $srcdir"
  local r2=/usr/share/gocode/src/github.com/modern-go/reflect2
  [ -d "$r2" ] || { log "Debian reflect2 copy not found at $r2"; exit 1; }
  rm -rf "$srcdir/vendor/github.com/modern-go/reflect2"
  mkdir -p "$srcdir/vendor/github.com/modern-go/reflect2"
  # Only the Go sources: Debian's copy has no tests/go.mod we need.
  find "$r2" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) ! -name '*_test.go' \
    -exec cp {} "$srcdir/vendor/github.com/modern-go/reflect2/" \;
  local ver
  ver=$(cd "$srcdir" && dpkg-parsechangelog -SVersion | sed -E 's/.*really//; s/-[^-]*$//; s/\+.*//')
  # GOPATH mode: vendored packages are linked under the k8s.io/kubernetes/vendor/ prefix.
  local ldflags="-s -w \
    -X k8s.io/kubernetes/vendor/k8s.io/component-base/version.gitVersion=v${ver} \
    -X k8s.io/kubernetes/vendor/k8s.io/component-base/version.gitMajor=1 \
    -X k8s.io/kubernetes/vendor/k8s.io/component-base/version.gitMinor=$(echo "$ver" | cut -d. -f2) \
    -X k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version.gitVersion=v${ver}"
  log "building ${GIM_K8S_COMPONENTS:-kube-apiserver kube-controller-manager} v$ver (takes a while on 2 cores)"
  # GOPATH mode with the vendor/ tree, as the upstream 1.20 build (hack/lib/golang.sh) and
  # Debian's rules do. Module mode with -mod=vendor is refused by Go 1.19 for this tree
  # ("updates to go.mod needed"); both use only vendor/, and GOPROXY=off keeps it offline.
  mkdir -p "$CACHE/gopath/src/k8s.io"
  ln -sfn "$srcdir" "$CACHE/gopath/src/k8s.io/kubernetes"
  (
    cd "$CACHE/gopath/src/k8s.io/kubernetes"
    export GOROOT="$GOROOT_DEB" PATH="$GOROOT_DEB/bin:$PATH"
    export GO111MODULE=off GOPROXY=off GOFLAGS= GOTOOLCHAIN=local CGO_ENABLED=0
    export GOCACHE="$CACHE/gocache" GOPATH="$CACHE/gopath"
    # The source package ships every generated file except the kube OpenAPI definitions,
    # which upstream's Makefile.generated_files produces with openapi-gen. Same inputs: every
    # package tagged +k8s:openapi-gen, minus code-generator and sample-apiserver.
    local oa=pkg/generated/openapi/zz_generated.openapi.go
    if [ ! -s "$oa" ]; then
      log "generating $oa"
      go build -o "$BIN/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
      local inputs
      inputs=$(grep -RlE '^// *\+k8s:' --include='*.go' pkg vendor/k8s.io \
        | xargs grep -l '+k8s:openapi-gen=' | xargs -n1 dirname \
        | grep -v -e code-generator -e sample-apiserver | LC_ALL=C sort -u \
        | sed 's|^|k8s.io/kubernetes/|' | paste -sd, -)
      "$BIN/openapi-gen" -i "$inputs" -p k8s.io/kubernetes/pkg/generated/openapi \
        -O zz_generated.openapi -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
        -r "$CACHE/openapi-violations.report"
    fi
    for c in ${GIM_K8S_COMPONENTS:-kube-apiserver kube-controller-manager}; do
      [ -x "$BIN/$c" ] && continue
      # The kubelet links cgo (cAdvisor, mount utils) as upstream builds it; the rest is pure Go.
      local cgo=0
      [ "$c" = kubelet ] && cgo=1
      CGO_ENABLED=$cgo go build -trimpath -ldflags "$ldflags" -o "$BIN/$c.tmp" "./cmd/$c"
      mv "$BIN/$c.tmp" "$BIN/$c"
    done
  )
  log "built in $((SECONDS - t0))s: $(ls "$BIN")"
}

# The node components for scripts/k8s-node.sh, from the same source tree and Go env.
cmd_build_node() {
  if [ -x "$BIN/kubelet" ] && [ -x "$BIN/kube-scheduler" ] && [ -x "$BIN/kube-proxy" ]; then
    log "node components already built in $BIN"
    return 0
  fi
  apt_install gcc libc6-dev
  GIM_K8S_COMPONENTS="kube-apiserver kube-controller-manager kubelet kube-scheduler kube-proxy" \
    GIM_K8S_FORCE=1 cmd_build
}

healthy() {
  [ -f "$RUN/admin.kubeconfig" ] && kubectl --kubeconfig "$RUN/admin.kubeconfig" get --raw /readyz >/dev/null 2>&1
}

write_kubeconfig() { # file user token
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: gim-local
  cluster:
    server: https://${ADDR}:${API_PORT}
    certificate-authority: ${RUN}/pki/ca.crt
contexts:
- name: $2
  context:
    cluster: gim-local
    user: $2
    namespace: default
current-context: $2
users:
- name: $2
  user:
    token: $3
EOF
}

cmd_start() {
  [ -x "$BIN/kube-apiserver" ] || { log "not built: run '$0 build' first"; exit 2; }
  command -v etcd >/dev/null || apt_install etcd-server
  if healthy; then
    log "already running"; echo "$RUN"; return 0
  fi
  cmd_stop >/dev/null 2>&1 || true
  rm -rf "$RUN"
  mkdir -p "$RUN/pki" "$RUN/etcd" "$RUN/logs"
  (
    cd "$RUN/pki"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=gim-local-ca" \
      -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
      -keyout server.key -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,IP:%s,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' "$ADDR" >ext.cnf
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile ext.cnf -out server.crt 2>/dev/null
    # Client certificate the server presents to kubelets (kubectl logs/exec/port-forward).
    openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" \
      -keyout kubelet-client.key -out kubelet-client.csr 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >client.cnf
    openssl x509 -req -in kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile client.cnf -out kubelet-client.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
  local admin_token operator_token
  admin_token=$(openssl rand -hex 16)
  operator_token=$(openssl rand -hex 16)
  cat >"$RUN/tokens.csv" <<EOF
${admin_token},gim-admin,gim-admin,"system:masters"
${operator_token},gim-operator,gim-operator
EOF
  write_kubeconfig "$RUN/admin.kubeconfig" gim-admin "$admin_token"
  write_kubeconfig "$RUN/operator.kubeconfig" gim-operator "$operator_token"

  setsid etcd --name gim-local --data-dir "$RUN/etcd" \
    --listen-client-urls "http://127.0.0.1:${ETCD_PORT}" --advertise-client-urls "http://127.0.0.1:${ETCD_PORT}" \
    --listen-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" \
    --initial-cluster "gim-local=http://127.0.0.1:${ETCD_PEER_PORT}" \
    --unsafe-no-fsync >"$RUN/logs/etcd.log" 2>&1 </dev/null &
  echo $! >"$RUN/etcd.pid"

  local node_args cm_args
  if [ -n "$NODE_IP" ]; then
    node_args=(--enable-admission-plugins NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,ResourceQuota
      --kubelet-preferred-address-types InternalIP,Hostname
      --kubelet-client-certificate "$RUN/pki/kubelet-client.crt" --kubelet-client-key "$RUN/pki/kubelet-client.key")
    cm_args=(--controllers '*' --root-ca-file "$RUN/pki/ca.crt"
      --cluster-signing-cert-file "$RUN/pki/ca.crt" --cluster-signing-key-file "$RUN/pki/ca.key"
      --node-monitor-grace-period 20s --pod-eviction-timeout 30s)
  else
    node_args=(--enable-admission-plugins NamespaceLifecycle,LimitRanger,DefaultStorageClass,ResourceQuota
      --disable-admission-plugins ServiceAccount)
    # Workload controllers are left out on purpose: with no kubelet they would only create
    # pods that never start.
    cm_args=(--controllers garbagecollector,namespace)
  fi
  setsid "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:${ETCD_PORT}" \
    --bind-address "$ADDR" --advertise-address "$ADDR" --secure-port "$API_PORT" --insecure-port 0 \
    --tls-cert-file "$RUN/pki/server.crt" --tls-private-key-file "$RUN/pki/server.key" \
    --client-ca-file "$RUN/pki/ca.crt" \
    --token-auth-file "$RUN/tokens.csv" \
    --authorization-mode RBAC \
    --service-account-key-file "$RUN/pki/sa.pub" \
    --service-account-signing-key-file "$RUN/pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-cluster-ip-range 10.96.0.0/16 \
    --allow-privileged=false \
    "${node_args[@]}" \
    --cert-dir "$RUN/pki" >"$RUN/logs/kube-apiserver.log" 2>&1 </dev/null &
  echo $! >"$RUN/kube-apiserver.pid"

  local i
  for i in $(seq 1 120); do
    healthy && break
    if ! kill -0 "$(cat "$RUN/kube-apiserver.pid")" 2>/dev/null; then
      log "kube-apiserver exited; tail of its log:"; tail -n 30 "$RUN/logs/kube-apiserver.log" >&2; exit 1
    fi
    sleep 0.5
  done
  healthy || { log "kube-apiserver not ready after 60s"; tail -n 30 "$RUN/logs/kube-apiserver.log" >&2; exit 1; }

  # Garbage collection (ownerReferences) and namespace deletion live in the controller manager.
  setsid "$BIN/kube-controller-manager" \
    --kubeconfig "$RUN/admin.kubeconfig" --authentication-kubeconfig "$RUN/admin.kubeconfig" \
    --authorization-kubeconfig "$RUN/admin.kubeconfig" \
    "${cm_args[@]}" --leader-elect=false \
    --bind-address 127.0.0.1 --secure-port 0 --port 0 \
    --service-account-private-key-file "$RUN/pki/sa.key" \
    >"$RUN/logs/kube-controller-manager.log" 2>&1 </dev/null &
  echo $! >"$RUN/kube-controller-manager.pid"
  log "running: kubeconfigs in $RUN (admin.kubeconfig, operator.kubeconfig)"
  echo "$RUN"
}

cmd_stop() {
  local c
  for c in kube-controller-manager kube-apiserver etcd; do
    if [ -f "$RUN/$c.pid" ]; then
      local pid i
      pid=$(cat "$RUN/$c.pid")
      kill "$pid" 2>/dev/null || true
      # Wait for it to exit so a following start finds the ports free.
      # A zombie (an orphan this machine's init has not reaped yet) has exited too.
      for i in $(seq 1 40); do
        kill -0 "$pid" 2>/dev/null && ! grep -qE '^[0-9]+ \(.*\) Z' "/proc/$pid/stat" 2>/dev/null || break
        sleep 0.25
      done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$RUN/$c.pid"
    fi
  done
  log "stopped"
}

case "${1:-}" in
  build) cmd_build ;;
  build-node) cmd_build_node ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) if healthy; then echo "running: $RUN"; else echo "not running"; exit 1; fi ;;
  *) echo "usage: $0 build|start|stop|status" >&2; exit 64 ;;
esac
