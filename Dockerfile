# syntax=docker/dockerfile:1
# Builds the writer and projector binaries (the compose stack runs both from this image).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the build between `docker compose build`s.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p writer -p projector -p inventory \
 && mkdir -p /out && cp target/release/writer target/release/projector target/release/inventory /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/writer /out/projector /out/inventory /usr/local/bin/
RUN useradd --system --uid 10001 app
USER app
CMD ["projector"]
