# syntax=docker/dockerfile:1
# The spiffe-aws-agent image: a statically linked agent FROM scratch, running as 10001:10001.
#   docker build -t spiffe-aws-agent:0.1.0 .
# Without a container engine or registry, scripts/build-image.sh builds the same image as an
# OCI layout (this file runs it for the root file system, so the two cannot drift apart).

FROM rust:1.88-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    scripts/build-image.sh --profile release --rootfs /rootfs

FROM scratch
COPY --from=build /rootfs/ /
USER 10001:10001
ENV PATH=/usr/local/bin RUST_LOG=info
ENTRYPOINT ["/usr/local/bin/spiffe-aws-agent"]
CMD ["run", "--config", "/etc/spiffe-aws-agent/agent.toml"]
LABEL org.opencontainers.image.title="spiffe-aws-agent" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
