#!/usr/bin/env bash
# The end-to-end test with real pods on a real single-node Kubernetes (scripts/k8s-node.sh):
# builds (cached) the node, the images (scripts/k8s-images.sh) and helm, starts the node, installs
# the operator with `helm install` from charts/gim-operator (local image, the chart's RBAC only),
# runs `cargo test -p gim-e2e --test k8s_node` (the phases and their times), then uninstalls and
# stops the node. Every container the run made is gone afterwards; dockerd stays.
#
#   scripts/k8s-e2e.sh            # everything; GIM_K8S_KEEP=1 leaves the node running for a look
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${GIM_K8S_CACHE:-$HOME/.cache/gim-k8s}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gim-target}"
NS=gim-system
log() { echo "k8s-e2e: $*" >&2; }
t_all=$SECONDS
phase() { # name command... : runs it and prints how long it took
  local name=$1 t0=$SECONDS; shift
  "$@"
  log "phase '$name' took $((SECONDS - t0))s"
}

cleanup() {
  local rc=$?
  if [ -z "${GIM_K8S_KEEP:-}" ]; then
    [ "$rc" = 0 ] || { log "failed: node logs in $CACHE/node-run/logs"; dump_state || true; }
    bash "$ROOT/scripts/k8s-node.sh" stop || true
  fi
  exit "$rc"
}

dump_state() {
  local kc="kubectl --kubeconfig $CACHE/node-run/admin.kubeconfig"
  $kc get nodes,pods,jobs,deployments,services -A -o wide 2>&1 | tail -n 40 >&2
  $kc get gimclusters -A -o yaml 2>&1 | tail -n 60 >&2
  $kc logs -n "$NS" deploy/gim-operator --tail 40 2>&1 >&2
}

phase "build node (cached)" bash "$ROOT/scripts/k8s-node.sh" build
# helm comes from scripts/k8s-lint.sh's cache (fetched the same way when absent).
HELM=$(bash "$ROOT/scripts/k8s-lint.sh" helm)
phase "images (cached)" bash "$ROOT/scripts/k8s-images.sh" >/dev/null
set -a
# shellcheck disable=SC1091
. "$CACHE/images.env"
set +a
trap cleanup EXIT
# Always a fresh node (empty etcd): a node left running by an interrupted run could still hold
# that run's GimCluster.
bash "$ROOT/scripts/k8s-node.sh" stop >/dev/null 2>&1 || true
phase "start node" bash "$ROOT/scripts/k8s-node.sh" start >/dev/null
export KUBECONFIG="$CACHE/node-run/admin.kubeconfig"

install_operator() {
  # The operator exactly as a platform team installs it: its chart, its RBAC, its image.
  "$HELM" upgrade --install gim-operator "$ROOT/charts/gim-operator" --namespace "$NS" --create-namespace \
    --set image.repository="${GIM_IMAGE_OPERATOR%:*}" --set image.tag="${GIM_IMAGE_OPERATOR##*:}" \
    --set resyncSeconds=5 --wait --timeout 180s >/dev/null
  kubectl -n "$NS" rollout status deploy/gim-operator --timeout 120s >/dev/null
}
phase "helm install gim-operator" install_operator

export GIM_K8S_E2E=1 GIM_K8S_E2E_NAMESPACE=gim-e2e GIM_K8S_OPERATOR_NAMESPACE=$NS
phase "cargo test -p gim-e2e --test k8s_node" \
  cargo test -q -p gim-e2e --locked --test k8s_node -- --nocapture --test-threads 1

"$HELM" uninstall gim-operator --namespace "$NS" --wait >/dev/null
log "passed in $((SECONDS - t_all))s"
