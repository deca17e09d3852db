# Topologies beyond the seed's: the in-cluster mesh, dual-stack pods, extra subnets
# claimed by a node, and a node behind NAT. Each function is one test (topology in
# clusters-lib.sh).
# shellcheck disable=SC2154,SC2034

pod_ping() { ip netns exec "$(pod_ns "$1")" ping -c 1 -W 2 "$(pod_ip "$2")" >/dev/null 2>&1; }
pod_ping6() { ip netns exec "$(pod_ns "$1")" ping -6 -c 1 -W 2 "$(pod_ip6 "$2")" >/dev/null 2>&1; }
metric() { http_get "$1" /metrics | grep -F "$2" | awk '{print $NF}'; }
peers_on() { in_node "$1" wg show "$2" peers | wc -l; }
has_peers_on() { [ "$(peers_on "$1" "$2")" = "$3" ]; }
# allowed_has NODE DEVICE KEY PREFIX: the peer KEY of DEVICE on NODE has PREFIX.
allowed_has() { in_node "$1" wg show "$2" allowed-ips | grep -F "$3" | grep -qF "$4"; }
# endpoint_is NODE DEVICE KEY PATTERN: the peer's current endpoint starts with PATTERN.
endpoint_of() { in_node "$1" wg show "$2" endpoints | grep -F "$3" | awk '{print $2}'; }
endpoint_is() { case $(endpoint_of "$1" "$2" "$3") in "$4"*) return 0 ;; esac; return 1; }
at_least() { [ "$(metric "$1" "$2")" -ge "$3" ] 2>/dev/null; }
syncs() { metric "$1" "semaphore_wg_sync_peers_total{device=\"$2\",success=\"1\"}"; }

# Three nodes per cluster, dual-stack, every agent also meshing its own cluster; aws2
# serves 10.102.0.0/24 (a "service CIDR" address behind it) for gcp, whose config lists
# 10.102.0.0/16 as aws's extra subnet.
test_mesh_dual_stack_and_extra_subnets() {
    NODES="aws1 aws2 aws3 gcp1 gcp2 gcp3"
    MESH=1
    DUAL_STACK=1
    for n in gcp1 gcp2 gcp3; do eval "REMOTE_EXTRA_$n=', \"extraSubnets\": [\"10.102.0.0/16\"]'"; done
    # 10.200.0.0/24 is outside gcp's extraSubnets for aws: refused there, counted.
    AGENT_ENV_aws2="SWG_ADVERTISE_CIDRS=10.102.0.0/24,gcp=10.200.0.0/24"
    # shellcheck source=clusters-lib.sh
    source "$(dirname "${BASH_SOURCE[0]}")/clusters-lib.sh"
    clusters_up
    ip -n "$(pod_ns aws2)" addr add 10.102.0.10/32 dev eth0
    ip -n "$(node_ns aws2)" route add 10.102.0.0/24 via "$(pod_ip aws2)"

    # The mesh: each node peers with the two others of its cluster, never itself, and
    # routes the cluster's subnets (both families) through wireguard.<own cluster>.
    local n
    for n in aws1 aws2 aws3 gcp1 gcp2 gcp3; do
        wait_for 15 "$n meshes with 2 nodes of its cluster" has_peers_on "$n" "wireguard.$(cluster_of "$n")" 2
    done
    in_node aws1 wg show wireguard.aws allowed-ips >"$TMP/mesh.txt"
    grep -qF "$(pod_cidr aws1)" "$TMP/mesh.txt" && fail "aws1 is its own peer: $(cat "$TMP/mesh.txt")"
    grep -qF "$(pod_cidr6 aws3)" "$TMP/mesh.txt" || fail "no IPv6 pod CIDR of aws3: $(cat "$TMP/mesh.txt")"
    ip -n "$(node_ns aws1)" route show 10.2.0.0/16 | grep -q "dev wireguard.aws" || fail "no mesh route"
    ip -n "$(node_ns aws1)" -6 route show fd00:2::/32 | grep -q "dev wireguard.aws" || fail "no IPv6 mesh route"
    ip -n "$(node_ns aws1)" route get "$(pod_ip aws1)" | grep -q "dev p$RID" || fail "own pods left the local route"
    wait_for 10 "pod aws1 -> pod aws2 (mesh)" pod_ping aws1 aws2
    wait_for 10 "pod aws3 -> pod aws1 (mesh)" pod_ping aws3 aws1
    wait_for 10 "pod gcp2 -> pod gcp3 (mesh)" pod_ping gcp2 gcp3
    wait_for 10 "pod aws1 -> pod aws3 over IPv6 (mesh)" pod_ping6 aws1 aws3
    [ "$(in_node aws1 wg show wireguard.aws transfer | awk '$2 > 0' | wc -l)" -ge 2 ] ||
        fail "mesh traffic did not go through the tunnel: $(in_node aws1 wg show wireguard.aws transfer)"
    # Without the mesh's route the same ping fails (nothing else routes pods of one
    # cluster here); the agent puts the route back within its 5 s check.
    ip -n "$(node_ns aws1)" route del 10.2.0.0/16 dev wireguard.aws
    pod_ping aws1 aws2 && fail "pod aws1 -> pod aws2 worked without the mesh route"
    wait_for 10 "the mesh route back" pod_ping aws1 aws2

    # Across the clusters at the same time, both families.
    wait_for 10 "pod aws1 -> pod gcp2" pod_ping aws1 gcp2
    wait_for 10 "pod gcp3 -> pod aws2" pod_ping gcp3 aws2
    wait_for 10 "pod aws2 -> pod gcp1 over IPv6" pod_ping6 aws2 gcp1
    wait_for 10 "pod gcp2 -> pod aws3 over IPv6" pod_ping6 gcp2 aws3
    ip -n "$(node_ns gcp1)" -6 route show fd00:2::/32 | grep -q "dev wireguard.aws" || fail "no IPv6 route to aws"

    # Extra subnets: gcp routes 10.102.0.0/16 into wireguard.aws and gives aws2's peer the
    # part it claims; a gcp pod reaches the address behind aws2.
    ip -n "$(node_ns gcp1)" route show 10.102.0.0/16 | grep -q "dev wireguard.aws" || fail "no route for the extra subnet"
    local aws2_key
    aws2_key=$(in_node aws2 wg show wireguard.gcp public-key)
    wait_for 10 "aws2's claim among its allowed IPs on gcp1" allowed_has gcp1 wireguard.aws "$aws2_key" 10.102.0.0/24
    wait_for 10 "pod gcp1 -> 10.102.0.10 behind aws2" ip netns exec "$(pod_ns gcp1)" ping -c 1 -W 2 10.102.0.10
    in_node gcp1 wg show wireguard.aws allowed-ips | grep -qF 10.200.0.0/24 && fail "a claim outside extraSubnets was granted"
    wait_for 10 "the refused claim counted on gcp1" \
        at_least gcp1 'semaphore_wg_refused_claims_total{cluster="aws",reason="outside_extra_subnets"}' 1
    grep -q "refusing an extraCIDRs claim.*10.200.0.0/24\|10.200.0.0/24.*refusing an extraCIDRs claim" "$TMP/gcp1/agent.log" ||
        fail "no log line for the refused claim"
    [ "$(annotation aws aws2 gcp.wireguard.semaphore.uw.io/extraCIDRs)" = "10.102.0.0/24,10.200.0.0/24" ] ||
        fail "aws2's claims annotation: $(annotation aws aws2 gcp.wireguard.semaphore.uw.io/extraCIDRs)"

    # gcp1 restarts with the extra subnet gone from its config. The device and its routes
    # outlive the agent; the new one deletes the route of the dropped prefix, keeps its pod
    # subnet's, and leaves a route through the device that is not its kind (proto static).
    local ns1
    ns1=$(node_ns gcp1)
    ip -n "$ns1" route add 10.250.0.0/24 dev wireguard.aws proto static
    stop_agent gcp1
    ip -n "$ns1" route show 10.102.0.0/16 | grep -q "dev wireguard.aws" || fail "the extra subnet's route went with the agent"
    REMOTE_EXTRA_gcp1=""
    start_agent gcp1
    wait_for 15 "gcp1's route of the dropped extra subnet deleted" \
        sh -c "! ip -n $ns1 route show 10.102.0.0/16 | grep -q ."
    ip -n "$ns1" route show 10.2.0.0/16 | grep -q "dev wireguard.aws" || fail "gcp1 lost its route to aws's pods"
    ip -n "$ns1" -6 route show fd00:2::/32 | grep -q "dev wireguard.aws" || fail "gcp1 lost its IPv6 route to aws's pods"
    ip -n "$ns1" route show 10.250.0.0/24 | grep -q "dev wireguard.aws" || fail "a route of another kind was deleted"
    grep -q "deleted routes the config no longer asks for.*10.102.0.0/16" "$TMP/gcp1/agent.log" || fail "no log line of the deleted route"
    wait_for 10 "pod gcp1 -> pod aws2 after the restart" pod_ping gcp1 aws2
}

# gcp3 sits behind a masquerading router: the endpoint it publishes (its InternalIP) is
# unreachable from aws. It reaches aws itself; aws1 learns the router's address from its
# authenticated packets, and keeps it through resyncs (every second here) although the
# annotation still names the private address.
test_a_peer_behind_nat_keeps_its_roamed_endpoint() {
    NODES="aws1 aws2 gcp1 gcp2 gcp3"
    NAT_NODE=gcp3
    RESYNC=1s
    # shellcheck source=clusters-lib.sh
    source "$(dirname "${BASH_SOURCE[0]}")/clusters-lib.sh"
    clusters_up
    [ "$(annotation gcp gcp3 aws.wireguard.semaphore.uw.io/endpoint)" = "172.16.9.2:51820" ] ||
        fail "gcp3 endpoint annotation: $(annotation gcp gcp3 aws.wireguard.semaphore.uw.io/endpoint)"
    local key
    key=$(in_node gcp3 wg show wireguard.aws public-key)
    # gcp3's first keepalive makes the handshake; aws1 answers where it came from.
    wait_for 20 "aws1 learns gcp3's address behind the NAT" endpoint_is aws1 wireguard.gcp "$key" "$NAT_PUBLIC_IP:"
    local syncs_before syncs_after i
    syncs_before=$(syncs aws1 wireguard.gcp)
    for i in $(seq 12); do
        endpoint_is aws1 wireguard.gcp "$key" "$NAT_PUBLIC_IP:" ||
            fail "after a resync aws1 sends to $(endpoint_of aws1 wireguard.gcp "$key") instead of the NAT ($i)"
        sleep 0.5
    done
    syncs_after=$(syncs aws1 wireguard.gcp)
    [ "$((syncs_after - syncs_before))" -ge 3 ] || fail "only $((syncs_after - syncs_before)) resyncs in 6 s"
    wait_for 10 "pod aws1 -> pod gcp3 (through the NAT)" pod_ping aws1 gcp3
    pod_ping gcp3 aws1 || fail "pod gcp3 -> pod aws1"
    # The node whose endpoint is reachable is still reached at its annotation.
    in_node aws1 wg show wireguard.gcp endpoints | grep -qF "$(node_ip gcp1):51820" || fail "gcp1's endpoint"
}
