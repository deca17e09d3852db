# syntax=docker/dockerfile:1
#
# Two ways to build the same image:
#
#   Anywhere with registry access (the Rust toolchain comes from the builder image):
#     docker build -t semaphore-wireguard .
#
#   From a static binary built on this host (no registry needed; what the test suite does):
#     cargo build --release --locked --target x86_64-unknown-linux-musl --bin semaphore-wireguard
#     strip target/x86_64-unknown-linux-musl/release/semaphore-wireguard
#     scripts/image-iptables.sh target/image-root
#     podman build --runtime runc --target host -t semaphore-wireguard .
#
# Besides the binary, the image carries Debian's iptables (both backends, nf_tables and
# legacy, with their extensions and libraries: scripts/image-iptables.sh): a gateway adds
# FORWARD rules where the node's policy drops.

# ---- builder: a static musl binary -------------------------------------------------------
FROM docker.io/library/rust:1.95-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools iptables \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN scripts/image-iptables.sh /out \
 && cargo build --release --locked --target x86_64-unknown-linux-musl --bin semaphore-wireguard \
 && mkdir -p /out/var/run/wireguard /out/var/lib/semaphore-wireguard \
 && cp target/x86_64-unknown-linux-musl/release/semaphore-wireguard /out/semaphore-wireguard \
 && strip /out/semaphore-wireguard

# ---- runtime: the binary and iptables ----------------------------------------------------
FROM scratch AS runtime
COPY --from=builder /out/ /
ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin
# Numeric root (there is no passwd file): NET_ADMIN must be effective for the TUN device
# and netlink. The DaemonSet drops every other capability.
USER 0:0
EXPOSE 7773
ENTRYPOINT ["/semaphore-wireguard"]

# ---- host: the same image from a binary built on the host --------------------------------
FROM scratch AS host
# The cargo profile the binary was built with (the test suite's smoke test uses `smoke`).
ARG PROFILE=release
COPY target/image-root/ /
COPY target/x86_64-unknown-linux-musl/${PROFILE}/semaphore-wireguard /semaphore-wireguard
ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin
USER 0:0
EXPOSE 7773
ENTRYPOINT ["/semaphore-wireguard"]
