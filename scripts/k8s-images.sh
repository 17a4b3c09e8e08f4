#!/usr/bin/env bash
# Builds the gim images with no outside registry: a Debian bookworm base made by debootstrap from
# Debian's packages (minbase + ca-certificates, user 65532), imported into the local dockerd, and
# gim-conn / gim-logic / gim-operator images on top of it from release binaries built here.
#
#   scripts/k8s-images.sh          # builds what is missing; prints the image references
#
# Output: $GIM_K8S_CACHE/images.env (default ~/.cache/gim-k8s/images.env) with
#   GIM_IMAGE_CONN=gim-local/gim-conn:<tag> GIM_IMAGE_LOGIC=... GIM_IMAGE_OPERATOR=...
# The tag is the first 12 hex digits of the binary's sha256, so a changed binary is a new image
# (and a pod template change), an unchanged one is reused. The rootfs tarball is cached beside it.
# Where a registry exists, docker/*.Dockerfile build the same images in multi-stage form.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${GIM_K8S_CACHE:-$HOME/.cache/gim-k8s}"
IMG="$CACHE/images"
DOCKER=/usr/bin/docker
BASE=gim-local/base:bookworm
MIRROR="${GIM_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gim-target}"
log() { echo "k8s-images: $*" >&2; }

bash "$ROOT/scripts/k8s-node.sh" dockerd
mkdir -p "$IMG"

build_rootfs() {
  command -v debootstrap >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  }
  local t0=$SECONDS dir="$IMG/rootfs.tmp"
  rm -rf "$dir"
  log "debootstrap bookworm (minbase + ca-certificates) from $MIRROR"
  debootstrap --variant=minbase --include=ca-certificates bookworm "$dir" "$MIRROR" >"$IMG/debootstrap.log" 2>&1 \
    || { tail -n 20 "$IMG/debootstrap.log" >&2; exit 1; }
  # The images run as 65532 (the securityContext the operator renders and the chart sets).
  chroot "$dir" groupadd --gid 65532 gim
  chroot "$dir" useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin gim
  # Nothing in the image runs apt: drop its caches, docs and locales.
  rm -rf "$dir"/var/cache/apt/* "$dir"/var/lib/apt/lists/* "$dir"/usr/share/doc/* "$dir"/usr/share/man/* \
    "$dir"/usr/share/info/* "$dir"/usr/share/locale/* "$dir"/var/log/* "$dir"/tmp/*
  tar --numeric-owner -C "$dir" -cf "$IMG/bookworm-base.tar.tmp" .
  mv "$IMG/bookworm-base.tar.tmp" "$IMG/bookworm-base.tar"
  rm -rf "$dir"
  log "root filesystem in $((SECONDS - t0))s: $(du -h "$IMG/bookworm-base.tar" | cut -f1)"
}

if ! $DOCKER image inspect "$BASE" >/dev/null 2>&1; then
  [ -s "$IMG/bookworm-base.tar" ] || build_rootfs
  $DOCKER import -c 'USER 65532' -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$IMG/bookworm-base.tar" "$BASE" >/dev/null
  log "imported $BASE"
fi

if [ -z "${GIM_SKIP_CARGO:-}" ]; then
  log "cargo build --release (gim-conn, gim-logic, gim-operator)"
  (cd "$ROOT" && cargo build --release --locked -q -p gim-conn -p gim-logic -p gim-operator \
    --bin gim-conn --bin gim-logic --bin gim-operator)
fi

: >"$CACHE/images.env.tmp"
for name in conn logic operator; do
  bin="$CARGO_TARGET_DIR/release/gim-$name"
  [ -x "$bin" ] || { log "missing $bin"; exit 1; }
  tag=$(sha256sum "$bin" | cut -c1-12)
  ref="gim-local/gim-$name:$tag"
  if ! $DOCKER image inspect "$ref" >/dev/null 2>&1; then
    ctx=$(mktemp -d)
    cp "$bin" "$ctx/gim-$name"
    # The release profile keeps line tables for profiling here; images do not need them.
    strip --strip-debug "$ctx/gim-$name"
    # Same layout as the multi-stage docker/$name.Dockerfile, on the locally imported base.
    docker_file="FROM $BASE
COPY gim-$name /usr/local/bin/gim-$name
USER 65532
ENTRYPOINT [\"/usr/local/bin/gim-$name\"]"
    echo "$docker_file" >"$ctx/Dockerfile"
    DOCKER_BUILDKIT=0 $DOCKER build -q -t "$ref" "$ctx" >/dev/null
    rm -rf "$ctx"
  fi
  $DOCKER tag "$ref" "gim-local/gim-$name:local"
  # Earlier builds go (each holds a binary layer); one still used by a container stays.
  { $DOCKER images --format '{{.Repository}}:{{.Tag}}' "gim-local/gim-$name" \
      | grep -v -e ":$tag\$" -e ':local$' | xargs -r $DOCKER rmi >/dev/null 2>&1; } || true
  echo "GIM_IMAGE_$(echo "$name" | tr a-z A-Z)=$ref" >>"$CACHE/images.env.tmp"
  log "$ref $($DOCKER image inspect -f '{{.Size}}' "$ref" | awk '{printf "%.0f MB", $1/1e6}')"
done
mv "$CACHE/images.env.tmp" "$CACHE/images.env"
cat "$CACHE/images.env"
