# syntax=docker/dockerfile:1.7
#
# One multi-stage build for every service of the platform. Each service is a target:
#
#   docker build --target gateway     -t eventplat/gateway .
#   docker build --target lake-writer -t eventplat/lake-writer .
#   docker build --target timeline    -t eventplat/timeline .
#   docker build --target stats       -t eventplat/stats .
#   docker build --target features    -t eventplat/features .
#   docker build --target eventctl    -t eventplat/eventctl .   (CLI, migrations Job, KPI jobs)
#
# The build stage compiles all binaries once (release, locked dependency set, cargo caches
# kept between builds); each runtime image is distroless (glibc + CA certificates, no
# shell, no package manager), about 30-60 MB, and runs as the unprivileged user 65532.

ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p gateway -p lake-writer -p timeline -p stats -p features -p eventctl \
 && mkdir -p /out \
 && cp target/release/gateway target/release/lake-writer target/release/timeline \
       target/release/stats target/release/features target/release/eventctl /out/

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
# Migrations ship in every image that may run them (stats, eventctl).
WORKDIR /app
USER 65532:65532
ENV RUST_LOG=info

FROM runtime AS gateway
COPY --from=build /out/gateway /usr/local/bin/gateway
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/gateway"]

FROM runtime AS lake-writer
COPY --from=build /out/lake-writer /usr/local/bin/lake-writer
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/lake-writer"]

FROM runtime AS timeline
COPY --from=build /out/timeline /usr/local/bin/timeline
EXPOSE 8082
ENTRYPOINT ["/usr/local/bin/timeline"]

FROM runtime AS stats
COPY --from=build /out/stats /usr/local/bin/stats
COPY migrations /app/migrations
EXPOSE 8083
ENTRYPOINT ["/usr/local/bin/stats"]

FROM runtime AS features
COPY --from=build /out/features /usr/local/bin/features
EXPOSE 8084 50051
ENTRYPOINT ["/usr/local/bin/features"]

FROM runtime AS eventctl
COPY --from=build /out/eventctl /usr/local/bin/eventctl
COPY migrations /app/migrations
ENTRYPOINT ["/usr/local/bin/eventctl"]
