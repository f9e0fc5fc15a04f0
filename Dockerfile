# livecheck container image: the livecheck binary (models embedded) on Debian slim.
#
#   docker build -t livecheck:0.1.0 .
#   docker volume create livecheck-data
#   docker run --rm --read-only --tmpfs /tmp -v livecheck-data:/data -p 8080:8080 \
#       --stop-timeout 90 livecheck:0.1.0
#
# The container is meant to run with a READ-ONLY root filesystem (`docker run --read-only`,
# Compose `read_only: true`, Kubernetes `readOnlyRootFilesystem: true`): the only place it
# writes is /data (the SQLite audit database when no PostgreSQL URL is given), which is a volume.
# See docs/deploy.md.
#
# Needs BuildKit (the default builder since Docker Engine 23) for the `RUN --mount=type=cache`
# below. The build context must hold models/*.onnx: the default build embeds them in the binary.

############################################################################################
# Build stage
############################################################################################
FROM rust:1.95-bookworm AS build

# nasm: libjpeg-turbo (the mozjpeg crate) assembles its SIMD JPEG decoder with it. Without it the
# build silently takes the C fallback (same pixels, ~1.7x slower decoding); see scripts/setup.sh.
# Not version-pinned: Debian stable only ships security fixes, and a pinned version disappears
# from the archive when the next point release lands, breaking the build.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends nasm \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# Dependency caching: cache mounts keep the crates.io downloads and the compiled dependencies
# (target/) between builds, so a source change recompiles only livecheck itself. (A "copy
# Cargo.toml and build a stub" layer would need stubs for every [[bench]] target; the cache mount
# needs nothing.) The target/ cache is not part of the image, hence the copy out of it.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked \
 && install -m 0755 target/release/livecheck /usr/local/bin/livecheck

# Check the embedded models of every built-in set from an empty directory, so that no model file
# on disk (./models, ../shared/models) can stand in for them: a binary without them fails the
# build here, not at run time.
WORKDIR /tmp/verify
RUN /usr/local/bin/livecheck models verify --model-set silentface \
 && /usr/local/bin/livecheck models verify --model-set minifas128 \
 && /usr/local/bin/livecheck models verify --model-set silentface-minifas128

############################################################################################
# Runtime stage
############################################################################################
# Same Debian release as the build stage, so the binary's glibc matches. (distroless/cc would also
# run it, but has no shell or HTTP client for the HEALTHCHECK below.)
FROM debian:bookworm-slim

LABEL org.opencontainers.image.title="livecheck" \
      org.opencontainers.image.description="Self-hosted face liveness service (Adhere liveliness_check compatible)" \
      org.opencontainers.image.licenses="Apache-2.0"

# ca-certificates: trust store for any TLS client in the image (livecheck itself bundles its
# roots); curl: the HEALTHCHECK. Not version-pinned, for the same reason as nasm above.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*

# A fixed, unprivileged UID/GID (10001), matching `user:` in compose.yaml and `runAsUser` in
# deploy/k8s: volumes and fsGroup rely on the number, not the name.
RUN groupadd --system --gid 10001 livecheck \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin livecheck \
 && mkdir -p /data \
 && chown 10001:10001 /data

COPY --from=build /usr/local/bin/livecheck /usr/local/bin/livecheck
# The embedded weights' provenance and licences travel with the binary.
COPY models/NOTICE models/LICENSE-*.txt models/README.md /usr/share/doc/livecheck/

# Listen on every interface inside the container (the binary's default is 127.0.0.1:8080).
# The default database is a SQLite file on the /data volume; for several replicas set
# LIVECHECK_DATABASE_URL=postgres://USER:PASSWORD@HOST:5432/DB (migrations run at start).
ENV LIVECHECK_BIND=0.0.0.0:8080 \
    LIVECHECK_DATABASE_URL=sqlite:///data/livecheck.db

WORKDIR /data
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8080

# Liveness only (process up and serving); /readyz (models + database writable) is for load
# balancers and Kubernetes readiness. If LIVECHECK_BIND moves off port 8080, override this too.
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/healthz"]

# `serve` finishes the requests in flight on SIGTERM (bodies may take up to --body-timeout,
# 60 s): give `docker stop` time with --stop-timeout (Compose: stop_grace_period).
ENTRYPOINT ["livecheck"]
CMD ["serve"]
