# idgate container image: a static-ish Rust binary on a distroless runtime with CA certificates, run as non-root.
#   docker build -t idgate .
#   docker run -v $PWD/config/docker.toml:/etc/idgate/idgate.toml:ro -p 4180:4180 -p 9180:9180 idgate
# The root filesystem can be read-only: idgate writes nothing to disk.

FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits reuse the cached layer.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && echo 'fn main() {}' > benches/hot_path.rs && echo 'fn main() {}' > benches/sessions.rs \
 && cargo build --release --locked --bin idgate \
 && rm -rf src benches
COPY src src
COPY benches benches
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin idgate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/idgate /usr/local/bin/idgate
USER 65532:65532
ENV IDGATE_CONFIG=/etc/idgate/idgate.toml
# Public listener, admin listener (/healthz /readyz /metrics).
EXPOSE 4180 9180
ENTRYPOINT ["/usr/local/bin/idgate"]
CMD ["run"]
