#!/usr/bin/env bash
# Demo: two network namespaces joined by a veth, our userspace WireGuard in each (release
# build), configured with the real `wg` tool; pings across, a short iperf3, `wg show`.
# Everything it creates is removed at exit, even on failure. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root: sudo $0" >&2; exit 1; }
need=()
for tool in wg:wireguard-tools iperf3:iperf3 ping:iputils-ping bc:bc; do
    command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "== building (release)"
cargo build --release --locked -j2 --bin semaphore-wireguard 2>&1 | tail -1
export SWG_BIN="$PWD/target/release/semaphore-wireguard"
# shellcheck source=../tests/netns/lib.sh
source tests/netns/lib.sh
set +e

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "namespaces $NS_A ($UA4, $UA6) and $NS_B ($UB4, $UB6) over a veth"
say "starting 'semaphore-wireguard tunnel $IF_A' and '... $IF_B', configuring them with wg set"
pair ours ours 4
ip -n "$NS_A" -brief addr show dev "$IF_A"
ip -n "$NS_B" -brief addr show dev "$IF_B"

say "ping $IB4 and $IB6 from $NS_A through the tunnel"
ip netns exec "$NS_A" ping -c 3 -i 0.3 "$IB4"
ip netns exec "$NS_A" ping -c 3 -i 0.3 "$IB6"

say "iperf3, 3 seconds, TCP $NS_A -> $NS_B"
ip netns exec "$NS_B" iperf3 -s -1 -B "$IB4" >/dev/null 2>&1 &
_pids+=("$!")
sleep 0.5
ip netns exec "$NS_A" iperf3 -c "$IB4" -t 3 | grep -E "sender|receiver"

say "wg show (in $NS_A)"
ip netns exec "$NS_A" wg show "$IF_A"
say "wg show (in $NS_B)"
ip netns exec "$NS_B" wg show "$IF_B"
say "cleaning up"
