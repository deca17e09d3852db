#!/usr/bin/env bash
# Upgrades in place, measured: the netns takeover test (tests/netns/upgrade.sh) on a
# release build with an uncapped iperf3 stream. Prints, per takeover, the pings lost of
# 300 sent 10 ms apart and the longest gap between replies, the stream's slowest
# half-second, and the same for `kill -9` and a restart. Needs root.
#   sudo benches/upgrade.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-1}
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
cargo build --release --locked -j2 --bin semaphore-wireguard 2>&1 | tail -1
cargo build --locked -j2 --bin fake-apiserver 2>&1 | tail -1
echo "== $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD), $(nproc) CPUs, release build, iperf3 uncapped"
for r in $(seq "$rounds"); do
    echo "-- round $r"
    SWG_BIN="$PWD/target/release/semaphore-wireguard" FAKE_APISERVER_BIN="$PWD/target/debug/fake-apiserver" \
        UPGRADE_IPERF_RATE=0 tests/netns/run.sh hands_the_tunnels_over 2>&1
done
