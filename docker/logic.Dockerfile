# syntax=docker/dockerfile:1
# gim-logic image. Build from the repository root:
#   docker build -f docker/logic.Dockerfile -t gim-logic .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gim-logic --bin gim-logic \
 && cp target/release/gim-logic /gim-logic

FROM debian:bookworm-slim
# ca-certificates: TLS to MySQL/Redis/the API server. coreutils' sleep backs conn's preStop hook.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 65532 --no-create-home gim
COPY --from=build /gim-logic /usr/local/bin/gim-logic
USER 65532
ENTRYPOINT ["/usr/local/bin/gim-logic"]
