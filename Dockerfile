# The user-service image: built with cargo-chef so dependencies are cached between builds; no
# protoc anywhere (build.rs compiles the schema with protox). The runtime image is distroless,
# runs as a non-root user and keeps its data in /data.

FROM rust:1.89-slim-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin user-service
COPY . .
# The exact command `make deploy-check` runs.
RUN cargo build --release --locked --bin user-service \
    && mkdir /data

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /app/target/release/user-service /usr/local/bin/user-service
COPY --from=builder --chown=65532:65532 /data /data
ENV USER_SERVICE_LISTEN=0.0.0.0:50051 \
    USER_SERVICE_METRICS_LISTEN=0.0.0.0:9090 \
    USER_SERVICE_DATABASE_URL=sqlite:///data/users.db \
    USER_SERVICE_LOG_FORMAT=json
VOLUME ["/data"]
EXPOSE 50051 9090
USER 65532:65532
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/user-service", "healthcheck", "--timeout-secs", "3"]
ENTRYPOINT ["/usr/local/bin/user-service"]
