#!/usr/bin/env bash
# Demo: the seed's two-cluster scenario on one machine, with the in-cluster mesh. Cluster
# "aws" (pods 10.2.0.0/16) and cluster "gcp" (pods 10.4.0.0/16), three nodes each, each
# cluster with its own fake Kubernetes API server; every node runs semaphore-wireguard in
# run mode (release build) in its own network namespace, with a "pod" behind a veth, and
# peers both with the other cluster's nodes (wireguard.<other>) and with the other nodes
# of its own cluster (wireguard.<own>, the mesh). Prints the annotations, `wg show`,
# routes, pod-to-pod pings across the clusters and inside each, and a short iperf3.
# Removes everything at exit, even on failure. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root: sudo $0" >&2; exit 1; }
need=()
for tool in wg:wireguard-tools iperf3:iperf3 ping:iputils-ping bc:bc unshare:util-linux; do
    command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "== building (release)"
cargo build --release --locked -j2 --bin semaphore-wireguard --bin fake-apiserver 2>&1 | tail -1
export SWG_BIN="$PWD/target/release/semaphore-wireguard"
export FAKE_APISERVER_BIN="$PWD/target/release/fake-apiserver"
# shellcheck source=../tests/netns/lib.sh
source tests/netns/lib.sh
NODES="aws1 aws2 aws3 gcp1 gcp2 gcp3"
MESH=1
# shellcheck source=../tests/netns/clusters-lib.sh
source tests/netns/clusters-lib.sh
set +e

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "bringing up: fake API servers for aws and gcp, 6 node namespaces with the agent, 6 pod namespaces"
clusters_up
for n in $NODES; do echo "  $n: node $(node_ip "$n"), pod $(pod_ip "$n") in $(pod_cidr "$n")"; done

say "annotations each agent put on its own Node"
for n in $NODES; do
    c=$(cluster_of "$n")
    o=$(other_cluster "$n")
    for to in "$o" "$c"; do
        echo "  $c/$n: $to.wireguard.semaphore.uw.io/pubKey=$(annotation "$c" "$n" "$to.wireguard.semaphore.uw.io/pubKey")"
        echo "  $c/$n: $to.wireguard.semaphore.uw.io/endpoint=$(annotation "$c" "$n" "$to.wireguard.semaphore.uw.io/endpoint")"
    done
done

say "routes on aws1 and gcp1 (the other cluster's pods, the own cluster's pods, the node's own pods)"
ip -n "$(node_ns aws1)" route show | grep -E '^10\.[24]\.' | sed 's/^/  aws1: /'
ip -n "$(node_ns gcp1)" route show | grep -E '^10\.[24]\.' | sed 's/^/  gcp1: /'

say "pod-to-pod pings across the clusters"
for a in aws1 aws3; do
    for b in gcp1 gcp3; do
        ip netns exec "$(pod_ns "$a")" ping -c 1 -W 3 "$(pod_ip "$b")" >/dev/null 2>&1
        printf '  pod %s (%s) -> pod %s (%s): ' "$a" "$(pod_ip "$a")" "$b" "$(pod_ip "$b")"
        ip netns exec "$(pod_ns "$a")" ping -c 3 -i 0.2 -q "$(pod_ip "$b")" | tail -1
    done
done

say "pod-to-pod pings inside each cluster, through the mesh (wireguard.aws, wireguard.gcp)"
for pair in "aws1 aws2" "aws2 aws3" "aws3 aws1" "gcp1 gcp2" "gcp3 gcp1"; do
    set -- $pair
    ip netns exec "$(pod_ns "$1")" ping -c 1 -W 3 "$(pod_ip "$2")" >/dev/null 2>&1
    printf '  pod %s (%s) -> pod %s (%s): ' "$1" "$(pod_ip "$1")" "$2" "$(pod_ip "$2")"
    ip netns exec "$(pod_ns "$1")" ping -c 3 -i 0.2 -q "$(pod_ip "$2")" | tail -1
done

say "iperf3, 3 seconds, pod aws1 -> pod gcp1"
ip netns exec "$(pod_ns gcp1)" iperf3 -s -1 -B "$(pod_ip gcp1)" >/dev/null 2>&1 &
_pids+=("$!")
sleep 0.5
ip netns exec "$(pod_ns aws1)" iperf3 -c "$(pod_ip gcp1)" -t 3 | grep -E "sender|receiver"

say "wg show (on node aws1, read from its UAPI sockets): the other cluster, then the mesh"
in_node aws1 wg show wireguard.gcp
echo
in_node aws1 wg show wireguard.aws

say "readiness and a few metrics of aws1 (http://127.0.0.1:7773 in its namespace)"
echo "  /readyz: $(http_get aws1 /readyz)"
http_get aws1 /metrics | grep -E '^semaphore_wg_(sync_peers_total|peer_info|peer_receive_bytes_total)' | sed 's/^/  /'
say "agent footprint so far (resident memory, CPU time since start)"
for n in $NODES; do
    pid=$(eval echo "\$AGENT_PID_$n")
    rss=$(awk '/VmRSS/ {print $2, $3}' "/proc/$pid/status")
    ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    echo "  $n: $rss resident, $(echo "scale=2; $ticks / $(getconf CLK_TCK)" | bc) s CPU"
done
say "cleaning up"
