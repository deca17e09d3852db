#!/usr/bin/env bash
# Builds the container image offline with podman (static musl binary from this host, the
# Dockerfile's `host` stage, FROM scratch) and smoke-tests it: --version, a TUN device with
# only NET_ADMIN, a prompt `podman stop` (SIGTERM handled as PID 1), and the image's
# iptables in both backends with the DaemonSet's capabilities and mounts. Needs root.
# SWG_IMAGE_PROFILE picks the cargo profile (default release; the test suite uses the
# quicker `smoke` profile, as only the packaging is tested here).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v musl-gcc >/dev/null || need+=(musl-tools)
command -v xtables-legacy-multi >/dev/null || need+=(iptables)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
rustup target list --installed | grep -q x86_64-unknown-linux-musl || rustup target add x86_64-unknown-linux-musl

profile=${SWG_IMAGE_PROFILE:-release}
cargo build --profile "$profile" --locked -j2 --target x86_64-unknown-linux-musl --bin semaphore-wireguard
bin=target/x86_64-unknown-linux-musl/$profile/semaphore-wireguard
ldd "$bin" 2>&1 | grep -qE "statically linked|not a dynamic executable" || { echo "FAIL: $bin is not static"; exit 1; }
# The release profile keeps debug info for profiling; the image does not need it.
strip "$bin"
scripts/image-iptables.sh target/image-root >/dev/null

tag="localhost/semaphore-wireguard:test-$$"
name="swg-smoke-$$"
netns="swg-ct-$$"
lock=$(mktemp /tmp/swg-ct-lock.XXXXXX)
podman_run=(podman --runtime runc)
limits=(--ulimit nofile=20000:20000 --ulimit nproc=32768:32768)
cleanup() {
    "${podman_run[@]}" rm -f -t 0 "$name" >/dev/null 2>&1 || true
    "${podman_run[@]}" rmi -f "$tag" >/dev/null 2>&1 || true
    ip netns del "$netns" 2>/dev/null || true
    rm -f "$lock"
}
trap cleanup EXIT

"${podman_run[@]}" build -q "${limits[@]}" --build-arg PROFILE="$profile" --target host -t "$tag" . >/dev/null
echo "ok   image $tag built ($("${podman_run[@]}" image inspect --format '{{.Size}}' "$tag") bytes)"

version=$("${podman_run[@]}" run --rm "${limits[@]}" --network none "$tag" --version)
[ "$version" = "semaphore-wireguard $(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)" ] || { echo "FAIL --version: $version"; exit 1; }
echo "ok   --version: $version"

"${podman_run[@]}" run -d --name "$name" "${limits[@]}" --network none --device /dev/net/tun \
    --cap-drop ALL --cap-add NET_ADMIN --read-only --mount type=tmpfs,destination=/var/run/wireguard \
    "$tag" tunnel -f --log-format json smoke0 >/dev/null
for _ in $(seq 50); do
    "${podman_run[@]}" logs "$name" 2>&1 | grep -q "interface up" && break
    sleep 0.2
done
"${podman_run[@]}" logs "$name" 2>&1 | grep -q "interface up" || { "${podman_run[@]}" logs "$name"; echo "FAIL: no TUN device in the container"; exit 1; }
echo "ok   TUN device created with only NET_ADMIN"

start=$(date +%s.%N)
"${podman_run[@]}" stop -t 5 "$name" >/dev/null
took=$(echo "$(date +%s.%N) - $start" | bc)
code=$("${podman_run[@]}" inspect --format '{{.State.ExitCode}}' "$name")
if [ "$(echo "$took < 3" | bc)" != 1 ] || [ "$code" != 0 ]; then
    "${podman_run[@]}" logs "$name"
    echo "FAIL: podman stop took ${took}s, exit code $code (SIGTERM not handled as PID 1?)"
    exit 1
fi
echo "ok   podman stop returned in $(printf '%.2f' "$took")s, exit code 0"
"${podman_run[@]}" logs "$name" 2>&1 | grep -q "shutting down" || { echo "FAIL: no clean shutdown logged"; exit 1; }

# The image's iptables, as the agent runs it (control/src/firewall.rs) in a namespace of our
# own whose FORWARD policy drops in one backend: NET_ADMIN and NET_RAW only, read-only root,
# the xtables lock mounted (deploy/daemonset.yaml).
ip netns add "$netns"
iptables_in_image() {
    "${podman_run[@]}" run --rm "${limits[@]}" --network "ns:/run/netns/$netns" --cap-drop ALL \
        --cap-add NET_ADMIN --cap-add NET_RAW --read-only -v "$lock:/run/xtables.lock" \
        --entrypoint "/usr/sbin/$1" "$tag" -w "${@:2}"
}
rule=(-s 10.4.0.0/16 -m comment --comment "semaphore-wireguard gateway" -j ACCEPT)
for backend in iptables-nft iptables-legacy ip6tables-nft ip6tables-legacy; do
    ip netns exec "$netns" "$backend" -P FORWARD DROP
    policy=$(iptables_in_image "$backend" -S FORWARD 2>/dev/null | head -1)
    [ "$policy" = "-P FORWARD DROP" ] || { echo "FAIL: $backend in the image sees '$policy'"; exit 1; }
    net=10.4.0.0/16
    case $backend in ip6*) net=fd00:4::/56 ;; esac
    iptables_in_image "$backend" -I FORWARD 1 "${rule[@]/10.4.0.0\/16/$net}"
    iptables_in_image "$backend" -C FORWARD "${rule[@]/10.4.0.0\/16/$net}"
    ip netns exec "$netns" "$backend" -S FORWARD 2>/dev/null | grep -qF -- "-A FORWARD -s $net -m comment --comment \"semaphore-wireguard gateway\" -j ACCEPT" ||
        { echo "FAIL: the rule $backend in the image added is not in the namespace"; exit 1; }
    iptables_in_image "$backend" -D FORWARD "${rule[@]/10.4.0.0\/16/$net}"
    ip netns exec "$netns" "$backend" -P FORWARD ACCEPT
done
# The agent looks the tools up in its PATH.
"${podman_run[@]}" image inspect --format '{{.Config.Env}}' "$tag" | grep -q "PATH=/usr/sbin:" ||
    { echo "FAIL: the image's PATH lacks /usr/sbin"; exit 1; }
echo "ok   iptables-nft and iptables-legacy (v4, v6) in the image list, add, check and delete rules"
echo "container: 5 passed, 0 failed"
