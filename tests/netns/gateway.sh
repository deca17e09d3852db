# Gateway mode: two clusters of three nodes, a candidate pair per cluster (node 1 and 2
# labelled), pods on the unlabelled node 3 pinging across. Each function is one test
# (topology in clusters-lib.sh).
# shellcheck disable=SC2154,SC2034

pod_ping() { ip netns exec "$(pod_ns "$1")" ping -c 1 -W 1 "$(pod_ip "$2")" >/dev/null 2>&1; }
metric() { http_get "$1" /metrics | grep -F "$2" | awk '{print $NF}'; }
# gateway_of NODE: the active gateway NODE's agent sees for the other cluster.
gateway_of() {
    http_get "$1" /metrics | sed -n 's/^semaphore_wg_gateway{cluster="[a-z]*",node="\([a-z0-9]*\)".*/\1/p' | head -1
}
has_gateway() { [ -n "$(gateway_of "$1")" ]; }
is_gateway() { [ "$(gateway_of "$1")" = "$2" ]; }
# our_rules NODE: the gateway's ACCEPT rules in the node's FORWARD chain, in the backend
# whose policy drops, then in the other one ("2 0" for an active gateway).
# (Legacy is read only where its filter table exists: reading would make one.)
our_rules() {
    local b other
    b=$(drop_backend "$1")
    [ "$b" = iptables-nft ] && other=iptables-legacy || other=iptables-nft
    echo "$(rules_in "$1" "$b")" "$(rules_in "$1" "$other")"
}
rules_in() {
    [ "$2" = iptables-legacy ] && ! legacy_filter "$1" && { echo 0; return; }
    ip netns exec "$(node_ns "$1")" "$2" -S FORWARD 2>/dev/null | grep -c "semaphore-wireguard gateway"
}
legacy_filter() { ip netns exec "$(node_ns "$1")" grep -qx filter /proc/net/ip_tables_names 2>/dev/null; }
other_candidate() { [ "$1" = "${2}1" ] && echo "${2}2" || echo "${2}1"; }
# until_ping A B SECONDS: milliseconds until pod A reaches pod B, or fail once SECONDS
# have passed (by the clock: a failing ping takes its own second).
until_ping() {
    local t0 ms=0
    t0=$(date +%s%N)
    while [ "$ms" -lt $(($3 * 1000)) ]; do
        pod_ping "$1" "$2" && { echo $((($(date +%s%N) - t0) / 1000000)); return 0; }
        sleep 0.25
        ms=$((($(date +%s%N) - t0) / 1000000))
    done
    fail "pod $1 -> pod $2 did not come back within $3 s"
}

gateway_clusters_up() {
    NODES="aws1 aws2 aws3 gcp1 gcp2 gcp3"
    GATEWAY_NODES="aws1 aws2 gcp1 gcp2"
    CNI_ROUTES=1
    FORWARD_DROP="aws1 aws2"
    FORWARD_DROP_LEGACY="aws1"
    # shellcheck source=clusters-lib.sh
    source "$(dirname "${BASH_SOURCE[0]}")/clusters-lib.sh"
    clusters_up
}

# aws_gateway_up: aws in gateway mode, gcp node to node, until a pod on aws3 reaches gcp2;
# sets the caller's awsgw (the active gateway) and standby (the other candidate).
aws_gateway_up() {
    TOPOLOGY_aws=gateway
    gateway_clusters_up
    wait_for 20 "aws3 sees an active gateway" has_gateway aws3
    awsgw=$(gateway_of aws3)
    standby=$(other_candidate "$awsgw" aws)
    wait_for 15 "pod aws3 -> pod gcp2" pod_ping aws3 gcp2
}

# Both clusters in gateway mode (Kuiil's setup): traffic from a pod on a non-gateway node
# crosses through both gateways; the active aws gateway is killed (kill -9) and traffic
# flows again through the other candidate; that one is then made unable to forward
# (ip_forward=0) and hands over to the first, restarted.
test_gateway_to_gateway_with_failovers() {
    TOPOLOGY_aws=gateway
    TOPOLOGY_gcp=gateway
    gateway_clusters_up
    local n
    for n in aws1 aws2 aws3 gcp1 gcp2 gcp3; do wait_for 20 "$n sees an active gateway" has_gateway "$n"; done
    local awsgw gcpgw
    awsgw=$(gateway_of aws3)
    gcpgw=$(gateway_of gcp3)
    log "active gateways: $awsgw and $gcpgw"
    wait_for 15 "pod aws3 -> pod gcp3 through both gateways" pod_ping aws3 gcp3
    pod_ping gcp3 aws3 || fail "pod gcp3 -> pod aws3"
    ip -n "$(node_ns aws3)" route show 10.4.0.0/16 | grep -q "via $(node_ip "$awsgw")" ||
        fail "aws3 does not route via $awsgw: $(ip -n "$(node_ns aws3)" route show 10.4.0.0/16)"
    ip -n "$(node_ns aws3)" link show wireguard.gcp >/dev/null 2>&1 && fail "a tunnel on a non-gateway node"
    local standby
    standby=$(other_candidate "$awsgw" aws)
    ip -n "$(node_ns "$standby")" link show wireguard.gcp >/dev/null 2>&1 && fail "a tunnel on the standby candidate"
    # The gateways peer with each other only, for the whole of the other cluster.
    [ "$(in_node "$awsgw" wg show wireguard.gcp peers | wc -l)" = 1 ] || fail "$awsgw peers: $(in_node "$awsgw" wg show wireguard.gcp)"
    in_node "$awsgw" wg show wireguard.gcp allowed-ips | grep -qF 10.4.0.0/16 || fail "allowed IPs of the gcp gateway"
    [ "$(annotation aws "$awsgw" gcp.wireguard.semaphore.uw.io/gateway)" != "" ] || fail "no gateway claim on $awsgw"
    # aws's candidates drop forwarded traffic by policy: the gateway accepts exactly gcp's
    # pods, both ways; the standby adds nothing.
    [ "$(our_rules "$awsgw")" = "2 0" ] || fail "FORWARD rules on $awsgw: $(our_rules "$awsgw")"
    [ "$(our_rules "$standby")" = "0 0" ] || fail "FORWARD rules on the standby $standby"
    [ "$(metric "$awsgw" "semaphore_wg_gateway{cluster=\"gcp\",node=\"$awsgw\",self=\"true\"}")" = 1 ] || fail "metric on the gateway"

    # A firewall reload removes the gateway's rules: they are put back within 10 s.
    local ms
    ip netns exec "$(node_ns "$awsgw")" "$(drop_backend "$awsgw")" -F FORWARD
    pod_ping aws3 gcp3 && fail "traffic still flows through $awsgw without its FORWARD rules"
    ms=$(until_ping aws3 gcp3 20) || fail "the FORWARD rules were not put back within 20 s"
    log "FORWARD chain of $awsgw flushed: rules back, traffic after $ms ms"
    [ "$(our_rules "$awsgw")" = "2 0" ] || fail "FORWARD rules on $awsgw after the flush: $(our_rules "$awsgw")"

    # The active aws gateway dies.
    local pid
    pid=$(eval echo "\$AGENT_PID_$awsgw")
    kill -9 "$pid"
    wait "$pid" 2>/dev/null
    ms=$(until_ping aws3 gcp3 20) || fail "no traffic within 20 s of the gateway dying"
    log "gateway $awsgw killed: traffic through $standby after $ms ms"
    wait_for 10 "aws3 routes via $standby" is_gateway aws3 "$standby"
    grep -q "this node is now the remote's gateway" "$TMP/$standby/agent.log" || fail "no log line on the new gateway"

    # The killed agent comes back as the standby; then the active one cannot forward.
    start_agent "$awsgw"
    wait_for 20 "$awsgw back, on standby" is_gateway "$awsgw" "$standby"
    ip netns exec "$(node_ns "$standby")" sysctl -qw net.ipv4.ip_forward=0
    ms=$(until_ping aws3 gcp3 60) || fail "no traffic within 60 s of the gateway losing forwarding"
    log "gateway $standby unable to forward: traffic through $awsgw after $ms ms"
    wait_for 10 "aws3 routes via $awsgw again" is_gateway aws3 "$awsgw"
    grep -q "IP forwarding is off" "$TMP/$standby/agent.log" || fail "no log line saying why $standby gave up"
    [ "$(our_rules "$standby")" = "0 0" ] || fail "$standby kept its FORWARD rules after stepping down"
    [ "$(our_rules "$awsgw")" = "2 0" ] || fail "FORWARD rules on $awsgw, gateway again"
    # aws2 keeps its firewall with nf_tables: being gateway there made no legacy table.
    ! legacy_filter aws2 || fail "a legacy filter table appeared on aws2"
    pod_ping gcp3 aws3 || fail "pod gcp3 -> pod aws3 after the failovers"
}

# aws in gateway mode, gcp node to node: every gcp node peers with aws's gateway alone
# (for all of aws's pods), the gateway peers with every gcp node. Then an upgrade on the
# active gateway: a second agent there takes its tunnel over (the Lease, under the node's
# name, stays), and a pod on a non-gateway node pinging every 10 ms loses at most
# UPGRADE_MAX_LOST (2; the suite's debug build 3), as on any other node.
test_gateway_to_nodes() {
    TOPOLOGY_aws=gateway
    gateway_clusters_up
    wait_for 20 "aws3 sees an active gateway" has_gateway aws3
    local awsgw n
    awsgw=$(gateway_of aws3)
    for n in gcp1 gcp3; do
        wait_for 15 "pod $n -> pod aws3" pod_ping "$n" aws3
        [ "$(in_node "$n" wg show wireguard.aws peers | wc -l)" = 1 ] || fail "$n peers: $(in_node "$n" wg show wireguard.aws)"
        in_node "$n" wg show wireguard.aws allowed-ips | grep -qF 10.2.0.0/16 || fail "$n: allowed IPs of aws's gateway"
    done
    wait_for 15 "pod aws3 -> pod gcp2" pod_ping aws3 gcp2
    [ "$(in_node "$awsgw" wg show wireguard.gcp peers | wc -l)" = 3 ] || fail "the gateway's peers: $(in_node "$awsgw" wg show wireguard.gcp)"
    [ "$(metric gcp1 'semaphore_wg_skipped_nodes_total{cluster="aws",reason="behind_gateway"}')" = 0 ] ||
        fail "non-gateway aws nodes advertised (they should publish nothing)"

    local key
    key=$(in_node "$awsgw" wg show wireguard.gcp public-key)
    takeover_under_pings "$awsgw" aws3 gcp2 "upgrade-of-the-active-gateway"
    grep -q "a successor takes the gateway's tunnel over" "$TMP/$awsgw/agent.log" || fail "the old agent did not hand the gateway's tunnel over"
    [ "$(in_node "$awsgw" wg show wireguard.gcp public-key)" = "$key" ] || fail "the gateway's key changed"
    wait_for 10 "$awsgw still the gateway" is_gateway aws3 "$awsgw"
    [ "$(in_node "$awsgw" wg show wireguard.gcp peers | wc -l)" = 3 ] || fail "the gateway's peers after the upgrade"
    pod_ping gcp1 aws3 || fail "pod gcp1 -> pod aws3 after the upgrade"
}

# Health by the data path: the active gateway stops hearing from its peers (its UDP port
# dropped on input), so it gives the Lease up after STALE_DATA_PATH (40 s) and the other
# candidate takes over; a pod on a non-gateway node reaches the other cluster again.
test_a_gateway_that_hears_nothing_gives_up() {
    local awsgw standby ms
    aws_gateway_up
    ip netns exec "$(node_ns "$awsgw")" iptables -I INPUT -p udp --dport 51820 -j DROP
    pod_ping aws3 gcp2 && fail "traffic still flows through a gateway that hears nothing"
    ms=$(until_ping aws3 gcp2 90) || fail "no traffic within 90 s of the gateway going deaf"
    log "gateway $awsgw deaf: traffic through $standby after $ms ms"
    [ "$ms" -ge 30000 ] || fail "back after $ms ms: sooner than the data path's judgement allows"
    wait_for 10 "aws3 routes via $standby" is_gateway aws3 "$standby"
    grep -q "no authenticated traffic from any of its" "$TMP/$awsgw/agent.log" ||
        fail "no log line saying why $awsgw gave up"
}

# A gateway whose iptables fails (here: a wrapper on the agent's PATH, made to fail once
# the node is the gateway) cannot keep its FORWARD chain open: at its next check it gives
# the Lease up and sits out, and the other candidate takes over.
test_a_gateway_that_cannot_open_its_forward_chain_gives_up() {
    local n t
    for n in aws1 aws2; do
        mkdir -p "$TMP/bin-$n"
        for t in iptables-nft iptables-legacy ip6tables-nft ip6tables-legacy; do
            printf '#!/bin/sh\n[ -e %s ] && { echo "%s: simulated failure" >&2; exit 4; }\nexec %s "$@"\n' \
                "$TMP/broken-$n" "$t" "$(command -v "$t")" >"$TMP/bin-$n/$t"
            chmod +x "$TMP/bin-$n/$t"
        done
        eval "AGENT_ENV_$n=PATH=$TMP/bin-$n:$PATH"
    done
    local awsgw standby ms
    aws_gateway_up
    [ "$(our_rules "$awsgw")" = "2 0" ] || fail "FORWARD rules on $awsgw (through the wrapper): $(our_rules "$awsgw")"
    touch "$TMP/broken-$awsgw"
    ip netns exec "$(node_ns "$awsgw")" "$(drop_backend "$awsgw")" -F FORWARD
    pod_ping aws3 gcp2 && fail "traffic still flows through $awsgw without its FORWARD rules"
    ms=$(until_ping aws3 gcp2 60) || fail "no traffic within 60 s of the gateway's FORWARD chain closing"
    log "gateway $awsgw cannot open its FORWARD chain: traffic through $standby after $ms ms"
    wait_for 10 "aws3 routes via $standby" is_gateway aws3 "$standby"
    grep -q "could not adjust the FORWARD chain" "$TMP/$awsgw/agent.log" || fail "no log line of the failure on $awsgw"
    grep -q "its FORWARD chain could not be opened" "$TMP/$awsgw/agent.log" || fail "no log line saying why $awsgw gave up"
    [ "$(our_rules "$standby")" = "2 0" ] || fail "FORWARD rules on $standby: $(our_rules "$standby")"
}
