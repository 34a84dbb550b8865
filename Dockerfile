# kafka-workload as a container, e.g. a sidecar in kafka-test-app pods.
# Build: docker build -t kafka-workload .
# Run:   docker run --rm kafka-workload --producer -s broker:9092 -u user --password-file /run/secrets/pw
FROM rust:1.88-bookworm AS build
WORKDIR /src
# OpenSSL and librdkafka are built from source by the crate (ssl-vendored): perl and make suffice.
RUN apt-get update && apt-get install -y --no-install-recommends perl make && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY tests ./tests
RUN cargo build --release --locked --bin kafka-workload && strip target/release/kafka-workload

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 workload
COPY --from=build /src/target/release/kafka-workload /usr/local/bin/kafka-workload
USER workload
# SIGTERM makes it flush, commit and print its summary; give it time before SIGKILL.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/kafka-workload"]
