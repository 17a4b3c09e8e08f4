#!/usr/bin/env bash
# README command two: everything CI checks, in the order that fails fastest.
#
#   scripts/test.sh            # deps, fmt, clippy, all tests (+ k8s/browser/bench stages when present)
#
# Needs nothing installed beforehand but the Rust toolchain: MariaDB and Redis are installed and
# started by scripts/deps.sh. Cargo's target dir defaults to ~/.cache/gim-target (outside the clone).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/gim-target}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

step() { printf '\n==> %s\n' "$*"; }

step "dependencies (MariaDB, Redis)"
bash scripts/deps.sh

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked --no-fail-fast

# Optional stages: each script is added by the issue that needs it and runs when present.
for extra in scripts/k8s-test.sh scripts/e2e-browser.sh scripts/bench-smoke.sh; do
  if [ -x "$extra" ]; then
    step "$extra"
    bash "$extra"
  fi
done
step "all checks passed"
