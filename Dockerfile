# kafka-workload as a container, e.g. a sidecar in kafka-test-app pods.
#
# Build: docker build -t kafka-workload .          (Docker 23+ / BuildKit: the cache mounts below)
#        scripts/image build                        (this repo's CI: buildah, no registry; see there)
# Run:   docker run --rm -e KAFKA_WORKLOAD_PASSWORD kafka-workload --producer -s broker:9092 -u user
#        (or mount the password and pass --password-file /run/secrets/pw; keep it out of argv)
#
# Two stages: the official Rust image (buildpack-deps:bookworm underneath, so gcc, make and perl
# for the vendored OpenSSL and librdkafka builds are already there) compiles the release binary,
# stripped; debian:bookworm-slim runs it with CA certificates, as a non-root user, as PID 1. No
# init (tini) is needed: the binary spawns no children and handles SIGTERM/SIGINT itself (flush,
# commit, summary, exit 0), which tests/sidecar/test_image.py proves with the image as PID 1.

# The toolchain the image is built with (Cargo.toml's rust-version, 1.88, is the oldest it allows).
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo.toml names tests/it/main.rs as a target; the build does not compile it.
COPY tests/it ./tests/it
# The crate registry and target/ are cache mounts: a rebuild after a source change recompiles
# only this crate, not OpenSSL, librdkafka and ~300 dependencies. The binary is built without
# debug info and stripped (the repo's release profile keeps line tables for local use), then
# copied out of the cache mount so that the next stage can take it.
RUN --mount=type=cache,id=kafka-workload-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=kafka-workload-target,target=/src/target \
    CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --bin kafka-workload \
    && install -m 0755 target/release/kafka-workload /usr/local/bin/kafka-workload

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 workload \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin workload
COPY --from=build /usr/local/bin/kafka-workload /usr/local/bin/kafka-workload
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
# SIGTERM makes it stop sending, flush, commit, print its summary and exit 0; a second signal
# exits at once (130). Give it a few seconds before SIGKILL (docker stop -t, terminationGracePeriod).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/kafka-workload"]
