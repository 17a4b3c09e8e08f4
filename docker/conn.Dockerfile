# syntax=docker/dockerfile:1
# gim-conn image. Build from the repository root:
#   docker build -f docker/conn.Dockerfile -t gim-conn .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gim-conn --bin gim-conn \
 && cp target/release/gim-conn /gim-conn

FROM debian:bookworm-slim
# ca-certificates: TLS to MySQL/Redis/the API server. coreutils' sleep backs conn's preStop hook.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 65532 --no-create-home gim
COPY --from=build /gim-conn /usr/local/bin/gim-conn
USER 65532
ENTRYPOINT ["/usr/local/bin/gim-conn"]
