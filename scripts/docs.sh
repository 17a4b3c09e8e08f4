#!/usr/bin/env bash
# The book's checks (a stage of scripts/test.sh):
#   - the GimCluster reference is current (generated from crds/gimcluster.yaml; the configuration
#     reference is checked by `cargo test`, in gim-common's config_reference test)
#   - every shell/Python sample in docs/ is marked checked or not, with a reason
#   - mkdocs build --strict: a broken link or anchor fails
#   - the chart's monitoring objects lint and render; every alert and dashboard query parses
#   - against a local gim (scripts/run-local.sh, reused when one is running): every checked sample
#     runs, then every metric the alerts and the dashboard use is in gim's /metrics
#
#   scripts/docs.sh     # run it alone under `flock /tmp/gim-run-local.lock` (fixed ports)
#
# Tools are cached under $GIM_TOOLS_CACHE (default ~/.cache/gim-tools): a virtualenv with
# scripts/docs/requirements.txt, and helm (scripts/helm.sh). The built site goes to .local/site.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/gim-target}
CACHE="${GIM_TOOLS_CACHE:-$HOME/.cache/gim-tools}"
VENV="$CACHE/docs-venv"
log() { printf '[docs] %s\n' "$*" >&2; }
mkdir -p "$CACHE" .local/logs

if ! cmp -s scripts/docs/requirements.txt "$VENV/requirements.txt" 2>/dev/null; then
  log "installing the docs tools from PyPI into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r scripts/docs/requirements.txt
  cp scripts/docs/requirements.txt "$VENV/requirements.txt"
fi
export PATH="$VENV/bin:$PATH"

log "GimCluster reference is current"
python scripts/docs/crd_reference.py
log "every sample is marked"
python scripts/docs/samples.py --lint
log "mkdocs build --strict"
# Not --quiet: it hides the warnings that strict mode turns into a failure, and passes.
out=$(mkdocs build --strict --site-dir .local/site 2>&1) || { printf '%s\n' "$out" >&2; exit 1; }

# shellcheck source=scripts/helm.sh
. scripts/helm.sh
ensure_helm
MON=(--set monitoring.podMonitor.enabled=true --set monitoring.rules.enabled=true
     --set monitoring.dashboard.enabled=true)
log "chart with monitoring on: helm lint, helm template, queries parse"
"$HELM" lint --strict --quiet charts/gim-operator "${MON[@]}" >/dev/null
RENDERED=.local/monitoring-rendered.yaml
"$HELM" template gim-operator charts/gim-operator --namespace gim-system "${MON[@]}" >"$RENDERED"
python scripts/docs/monitoring_check.py "$RENDERED"

PID=""
stop() { if [ -n "$PID" ]; then kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi; }
trap stop EXIT
if (exec 3<>/dev/tcp/127.0.0.1/50002) 2>/dev/null && [ -f .local/demo.env ]; then
  log "using the running local cluster"
else
  READY=.local/docs-ready
  rm -f "$READY"
  log "starting the local cluster (scripts/run-local.sh; log in .local/logs/run-local-docs.log)"
  RUN_LOCAL_READY_FILE=$READY bash scripts/run-local.sh >.local/logs/run-local-docs.log 2>&1 &
  PID=$!
  # Includes a cold build on a fresh machine.
  for _ in $(seq 1 1800); do
    [ -f "$READY" ] && break
    kill -0 "$PID" 2>/dev/null || { tail -n 30 .local/logs/run-local-docs.log >&2; log "the local cluster did not start"; exit 1; }
    sleep 1
  done
  [ -f "$READY" ] || { log "the local cluster was not ready in time"; exit 1; }
fi

log "running the samples"
python scripts/docs/samples.py

log "traffic for every metric: a listening device, a 1:1 and a large-group message"
GIM="$CARGO_TARGET_DIR/debug/gim"
# shellcheck disable=SC1091
. .local/demo.env
DEVICE=$("$GIM" device register --app-id "$APP_ID" --kind web)
LISTEN=.local/logs/docs-listen.log
"$GIM" listen --app-id "$APP_ID" --key "$APP_KEY" --user 2 --device "$DEVICE" \
  --endpoint tcp://127.0.0.1:8080 --large-groups "$LOBBY_GROUP" --json >"$LISTEN" 2>&1 &
LPID=$!
trap 'kill "$LPID" 2>/dev/null || true; stop' EXIT
MARK="metrics check $RANDOM$RANDOM"
for _ in $(seq 1 60); do
  # Sent until the listener prints it: a push needs the listener signed in first.
  "$GIM" send --app-id "$APP_ID" --key "$APP_KEY" --user 1 --device "$CLI_DEVICE" --to-user 2 "$MARK" >/dev/null
  "$GIM" send --app-id "$APP_ID" --key "$APP_KEY" --user 1 --device "$CLI_DEVICE" --to-large-group "$LOBBY_GROUP" "$MARK" >/dev/null
  grep -q "$MARK" "$LISTEN" && break
  sleep 0.5
done
kill "$LPID" 2>/dev/null || true
grep -q "$MARK" "$LISTEN" || { cat "$LISTEN" >&2; log "the listening device got no push"; exit 1; }
log "metrics used by the alerts and the dashboard are exported"
python scripts/docs/monitoring_check.py "$RENDERED" \
  http://127.0.0.1:9100/metrics http://127.0.0.1:9200/metrics http://127.0.0.1:9210/metrics
log "all good"
