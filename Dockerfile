# Builds the writer and projector binaries (the compose stack runs both from this image).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p writer -p projector

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/writer /src/target/release/projector /usr/local/bin/
RUN useradd --system --uid 10001 app
USER app
CMD ["projector"]
