# One image for every part: `duikou serve <part>`.
# Build:  docker build -t duikou .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked && cp target/release/duikou /usr/local/bin/duikou

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/duikou --create-home duikou
COPY --from=build /usr/local/bin/duikou /usr/local/bin/duikou
USER duikou
# The embedded default keeps its SQLite files in ./data: a directory the
# user owns (mount a volume here to keep them).
WORKDIR /var/lib/duikou
ENV DUIKOU_GATEWAY_ADDR=0.0.0.0:8000 DUIKOU_LOG_FORMAT=json
EXPOSE 8000
ENTRYPOINT ["duikou"]
CMD ["serve", "all"]
