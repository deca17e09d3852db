# The seed's two-cluster scenario end to end (see clusters-lib.sh for the topology).
# shellcheck disable=SC2154

# has_peers NODE N: the node's device lists N peers.
has_peers() { [ "$(peer_count "$1")" = "$2" ]; }

pod_ping() { ip netns exec "$(pod_ns "$1")" ping -c 1 -W 2 "$(pod_ip "$2")" >/dev/null 2>&1; }

test_two_clusters() {
    # shellcheck source=clusters-lib.sh
    source "$(dirname "${BASH_SOURCE[0]}")/clusters-lib.sh"
    clusters_up
    local n key ep

    # Annotations: each node advertises its key and <InternalIP>:51820 to the other cluster.
    for n in $NODES; do
        local c o
        c=$(cluster_of "$n")
        o=$(other_cluster "$n")
        key=$(annotation "$c" "$n" "$o.wireguard.semaphore.uw.io/pubKey")
        ep=$(annotation "$c" "$n" "$o.wireguard.semaphore.uw.io/endpoint")
        [ "$key" = "$(in_node "$n" wg show "wireguard.$o" public-key)" ] || fail "$n: pubKey annotation $key"
        [ "$ep" = "$(node_ip "$n"):51820" ] || fail "$n: endpoint annotation $ep"
        # The key file is where the original keeps it.
        [ -f "$TMP/$n/keys/wireguard.$o.key" ] || fail "$n: no key file"
    done

    # Routes and peers.
    ip -n "$(node_ns aws1)" route show 10.4.0.0/16 | grep -q "dev wireguard.gcp scope link" ||
        fail "aws1 route: $(ip -n "$(node_ns aws1)" route show 10.4.0.0/16)"
    ip -n "$(node_ns gcp2)" route show 10.2.0.0/16 | grep -q "dev wireguard.aws scope link" || fail "gcp2 route"
    for n in $NODES; do wait_for 15 "$n has 2 peers" has_peers "$n" 2; done

    # Every pod reaches every remote pod (the first packets may wait for handshakes).
    local a b
    for a in aws1 aws2; do
        for b in gcp1 gcp2; do
            wait_for 10 "pod $a -> pod $b" pod_ping "$a" "$b"
            wait_for 10 "pod $b -> pod $a" pod_ping "$b" "$a"
        done
    done
    local show
    show=$(in_node aws1 wg show wireguard.gcp)
    for n in gcp1 gcp2; do
        echo "$show" | grep -qF "endpoint: $(node_ip "$n"):51820" || fail "aws1 wg show lacks $n endpoint: $show"
        echo "$show" | grep -qF "allowed ips: $(pod_cidr "$n")" || fail "aws1 wg show lacks $n allowed ips"
    done
    [ "$(echo "$show" | grep -c 'latest handshake: .*\(second\|Now\)')" = 2 ] || fail "handshakes: $show"

    # A short TCP run pod -> remote pod.
    ip netns exec "$(pod_ns gcp1)" iperf3 -s -1 -B "$(pod_ip gcp1)" >"$TMP/iperf-s.log" 2>&1 &
    _pids+=("$!")
    wait_for 5 "iperf3 server" ip netns exec "$(pod_ns gcp1)" sh -c "ss -ltn | grep -q 5201"
    ip netns exec "$(pod_ns aws1)" timeout 20 iperf3 -c "$(pod_ip gcp1)" -t 2 >"$TMP/iperf.log" 2>&1 || { cat "$TMP/iperf.log" >&2; fail "iperf3 pod to pod"; }
    log "iperf3 pod aws1 -> pod gcp1: $(grep receiver "$TMP/iperf.log" | awk '{print $7, $8}')"

    # Health, readiness and metrics.
    [ "$(http_get aws1 /healthz | cut -d' ' -f1)" = 200 ] || fail "healthz: $(http_get aws1 /healthz)"
    local m
    m=$(http_get aws1 /metrics)
    for want in 'semaphore_wg_sync_peers_total{device="wireguard.gcp",success="1"}' \
        'semaphore_wg_node_watcher_failures_total{cluster="gcp",verb="get"} 0' \
        'semaphore_wg_peer_info{device="wireguard.gcp",endpoint="192.168.240.3:51820"' \
        'semaphore_wg_peer_allowed_ips_info{allowed_ips="10.4.1.0/24",device="wireguard.gcp"' \
        'semaphore_wg_device_info{device="wireguard.gcp"' \
        'semaphore_wg_peer_last_handshake_seconds{device="wireguard.gcp"' \
        'semaphore_wg_dataplane_drops_total{device="wireguard.gcp",reason="source_not_allowed"}'; do
        echo "$m" | grep -qF "$want" || fail "metrics lack $want"
    done

    # Deleting a gcp node removes its peer everywhere in aws; adding it back restores it.
    api gcp DELETE /api/v1/nodes/gcp2 >/dev/null || fail "delete gcp2"
    for n in aws1 aws2; do wait_for 10 "$n drops gcp2" has_peers "$n" 1; done
    pod_ping aws1 gcp2 && fail "gcp2's pod still reachable after its node was deleted"
    api gcp POST /api/v1/nodes "$(node_json gcp2)" >/dev/null || fail "re-create gcp2"
    # Its agent re-asserts the annotations the new object lacks.
    for n in aws1 aws2; do wait_for 20 "$n re-adds gcp2" has_peers "$n" 2; done
    wait_for 10 "pod aws1 -> pod gcp2 again" pod_ping aws1 gcp2

    # A malformed node is skipped; the others still apply.
    local bad
    bad=$(node_json gcp3 | python3 -c 'import json,sys; n=json.load(sys.stdin); n["metadata"]["annotations"]={"aws.wireguard.semaphore.uw.io/pubKey":"not-a-key","aws.wireguard.semaphore.uw.io/endpoint":"192.168.240.5:51820"}; print(json.dumps(n))')
    api gcp POST /api/v1/nodes "$bad" >/dev/null || fail "create malformed node"
    api gcp DELETE /api/v1/nodes/gcp1 >/dev/null
    for n in aws1 aws2; do wait_for 10 "$n applies despite the malformed node" has_peers "$n" 1; done
    http_get aws1 /metrics | grep -qF 'semaphore_wg_skipped_nodes_total{cluster="gcp",reason="invalid_public_key"} 1' ||
        fail "no skip metric: $(http_get aws1 /metrics | grep skipped)"
    api gcp POST /api/v1/nodes "$(node_json gcp1)" >/dev/null
    for n in aws1 aws2; do wait_for 20 "$n re-adds gcp1" has_peers "$n" 2; done

    # A restart keeps the device and route, restores peers at once, and traffic resumes.
    stop_agent aws1
    ip -n "$(node_ns aws1)" link show wireguard.gcp >/dev/null 2>&1 || fail "device gone after SIGTERM"
    ip -n "$(node_ns aws1)" route show 10.4.0.0/16 | grep -q wireguard.gcp || fail "route gone after SIGTERM"
    [ -n "$(annotation aws aws1 gcp.wireguard.semaphore.uw.io/pubKey)" ] || fail "annotation gone after SIGTERM"
    local before
    before=$(annotation aws aws1 gcp.wireguard.semaphore.uw.io/pubKey)
    start_agent aws1
    wait_for 10 "aws1 restarted with its peers" has_peers aws1 2
    wait_for 10 "pod aws1 -> pod gcp1 after restart" pod_ping aws1 gcp1
    [ "$(annotation aws aws1 gcp.wireguard.semaphore.uw.io/pubKey)" = "$before" ] || fail "key changed across restart"
}
