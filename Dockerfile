# syntax=docker/dockerfile:1
# Multi-stage build: release binary, then a small runtime image running as a
# non-root user.
# Tag it with the crate version (Cargo.toml), which every deploy path expects:
#   docker build -t yatagarasu:0.1.0 .
#   docker tag yatagarasu:0.1.0 REGISTRY/yatagarasu:0.1.0 && docker push REGISTRY/yatagarasu:0.1.0
#   docker run -p 8080:8080 -p 9090:9090 -e MINIO_ACCESS_KEY=... -e MINIO_SECRET_KEY=... \
#     -v $PWD/compose/tutorial/config.yaml:/etc/yatagarasu/config.yaml:ro yatagarasu:0.1.0

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
# Whole workspace (see .dockerignore); Cargo.lock pins every dependency.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin yatagarasu \
 && install -D -m 0755 target/release/yatagarasu /out/yatagarasu \
 && strip /out/yatagarasu

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates for HTTPS S3 endpoints; /bin/sh stays for the preStop sleep.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 yatagarasu \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin yatagarasu \
 && mkdir -p /etc/yatagarasu

COPY --from=build /out/yatagarasu /usr/local/bin/yatagarasu

LABEL org.opencontainers.image.title="yatagarasu" \
      org.opencontainers.image.description="High-availability read-only S3 proxy" \
      org.opencontainers.image.licenses="MIT"

# Default config path; mount your config.yaml here (compose, ConfigMap).
ENV YATAGARASU_CONFIG=/etc/yatagarasu/config.yaml
# 8080: proxy, /health, /ready   9090: /metrics
EXPOSE 8080 9090
USER 10001:10001
STOPSIGNAL SIGTERM
# The image has no curl or wget: the binary checks itself. `healthcheck` reads
# the same config (YATAGARASU_CONFIG above, with the container's environment)
# and asks GET /health on the metrics listener (the proxy's port when metrics
# are off), over HTTPS when that listener has TLS (certificate not verified: a
# loopback self-check). It gives up after 5 s, before Docker's --timeout does,
# so `docker inspect` shows its reason (refused / status / timeout).
# Liveness only: an S3 outage does not make the container unhealthy (`healthcheck
# --ready` asks /ready, for orchestrators that route on it).
HEALTHCHECK --interval=15s --timeout=10s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/yatagarasu", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/yatagarasu"]
CMD ["--config", "/etc/yatagarasu/config.yaml"]
