# Dataplane behaviour tests (kernel-grade): jumbo MTUs, ICMP errors, routing loops. Each
# function is one test, run by run.sh in its own subshell.
# shellcheck disable=SC2154

# jumbo MTU UDP_LEN: TCP both ways and UDP at full rate through ours at MTU MTU (asked of
# the daemon with --mtu), then no drop counter may have moved on either side.
jumbo() {
    local mtu=$1 udp_len=$2 want=$1
    [ "$mtu" -gt 65475 ] && want=65475
    SWG_TUNNEL_ARGS="--mtu $mtu" pair ours ours 4
    local got
    got=$(ip -n "$NS_A" -o link show "$IF_A" | sed -n 's/.* mtu \([0-9]*\) .*/\1/p')
    [ "$got" = "$want" ] || fail "device MTU $got, wanted $want"
    ping_ok "$NS_A" "$IB4"
    ip netns exec "$NS_A" ping -c 2 -s $((want - 28)) -M do -W 2 "$IB4" >/dev/null ||
        fail "a full-size ping at MTU $want did not cross"
    iperf "$NS_A" "$NS_B" "$IB4"
    iperf "$NS_B" "$NS_A" "$IA4"
    iperf "$NS_A" "$NS_B" "$IB4" -u -b 0 -l "$udp_len"
    # The kernel's own link-local multicast (router solicitations, MLD) has no peer:
    # those few no_route drops are expected; nothing else may be dropped.
    local da db
    da=$(drops_of "$IF_A" | sed 's/no_route=[0-9]*,\?//')
    db=$(drops_of "$IF_B" | sed 's/no_route=[0-9]*,\?//')
    [ -z "$da$db" ] || fail "drops at MTU $mtu: A {$da} B {$db}"
}

test_jumbo_mtu_1420() { jumbo 1420 1300; }
test_jumbo_mtu_9000() { jumbo 9000 8900; }
test_jumbo_mtu_65535() { jumbo 65535 60000; }

# A destination no peer covers is answered at once with ICMP, IPv4 and IPv6.
test_icmp_unreachable() {
    pair ours ours 4
    ping_ok "$NS_A" "$IB4"
    local out start took
    start=$(date +%s%N)
    out=$(ip netns exec "$NS_A" ping -c 1 -W 5 10.231.0.99 2>&1) && fail "ping to nowhere answered"
    took=$(( ($(date +%s%N) - start) / 1000000 ))
    grep -q "From 10.231.0.99 .*Destination Host Unreachable" <<<"$out" || fail "no host unreachable: $out"
    [ "$took" -lt 2000 ] || fail "the error took ${took} ms"
    out=$(ip netns exec "$NS_A" ping -6 -c 1 -W 5 fd31::99 2>&1) && fail "ping6 to nowhere answered"
    grep -qi "unreachable" <<<"$out" || fail "no address unreachable: $out"
    local d
    d=$(drops_of "$IF_A")
    [ "$(sed -n 's/.*no_route=\([0-9]*\).*/\1/p' <<<"$d")" -ge 2 ] || fail "drops: $d"
}

# A's endpoint for B is routed through A's own tunnel: every sealed datagram comes back
# into the TUN. The loop must not multiply traffic: each packet sent is read back once
# and dropped (routing_loop), and nothing leaves on the underlay.
test_routing_loop_stays_bounded() {
    pair ours ours 4
    ping_ok "$NS_A" "$IB4"
    ip netns exec "$NS_A" wg set "$IF_A" peer "$KEY_B" allowed-ips "$IB4/32,$IB6/128,$UB4/32" || fail "wg set"
    ip -n "$NS_A" route add "$UB4/32" dev "$IF_A" || fail "route"
    local read0 read1 under0 under1
    read0=$(tx_packets "$NS_A" "$IF_A")
    under0=$(ip netns exec "$NS_A" cat "/sys/class/net/v$RID/statistics/tx_packets")
    ip netns exec "$NS_A" ping -c 10 -i 0.1 -W 1 -s 1400 "$IB4" >/dev/null 2>&1
    sleep 1
    read1=$(tx_packets "$NS_A" "$IF_A")
    under1=$(ip netns exec "$NS_A" cat "/sys/class/net/v$RID/statistics/tx_packets")
    # 10 pings, each read, sealed once and read back as two fragments (1400 bytes
    # sealed outgrows the MTU): a handful of reads per ping, where an unbounded loop
    # re-seals each datagram until the queues overflow (thousands).
    log "$((read1 - read0)) packets read from the TUN for 10 pings"
    [ $((read1 - read0)) -le 80 ] || fail "the loop multiplied: $((read1 - read0)) packets read for 10 pings"
    [ $((under1 - under0)) -le 5 ] || fail "$((under1 - under0)) packets left on the underlay"
    local d
    d=$(drops_of "$IF_A")
    grep -q "routing_loop=" <<<"$d" || fail "nothing counted as a routing loop: $d"
}

# sticky_pair FAMILY(4|6) ENDPOINT_OF_A: ours in A without an endpoint for B; in B
# wireguard-go (or $SWG_B), configured to reach A at ENDPOINT_OF_A (one of A's addresses).
# B initiates.
sticky_pair() {
    local family=$1 endpoint=$2
    start ours "$NS_A" "$IF_A"
    start "${SWG_B:-wggo}" "$NS_B" "$IF_B"
    wg genkey >"$TMP/a.key"
    wg genkey >"$TMP/b.key"
    KEY_A=$(wg pubkey <"$TMP/a.key")
    KEY_B=$(wg pubkey <"$TMP/b.key")
    ip netns exec "$NS_A" wg set "$IF_A" private-key "$TMP/a.key" listen-port 51820 \
        peer "$KEY_B" allowed-ips "$IB4/32" || fail "wg set A"
    ip netns exec "$NS_B" wg set "$IF_B" private-key "$TMP/b.key" listen-port 51820 \
        peer "$KEY_A" endpoint "$endpoint" allowed-ips "$IA4/32" || fail "wg set B"
    ip -n "$NS_A" addr add "$IA4/24" dev "$IF_A"
    ip -n "$NS_B" addr add "$IB4/24" dev "$IF_B"
    ip -n "$NS_A" link set "$IF_A" up
    ip -n "$NS_B" link set "$IF_B" up
}

# endpoint_of_a: A's endpoint as B sees it.
endpoint_of_a() {
    ip netns exec "$NS_B" wg show "$IF_B" endpoints | cut -f2
}

# A host with two addresses answers from the one the peer wrote to: the peer keeps that
# endpoint (without it, A answers from its primary address and the peer roams there).
sticky_source() {
    local family=$1 second=$2 endpoint=$3
    underlay
    if [ "$family" = 6 ]; then
        # In another prefix, so that the kernel would never pick it to reach B by itself.
        ip -n "$NS_A" addr add "$second/64" dev "v$RID" nodad
        ip -n "$NS_B" route add "${second%::*}::/64" dev "v$RID"
    else
        ip -n "$NS_A" addr add "$second/24" dev "v$RID"
    fi
    sticky_pair "$family" "$endpoint"
    ping_ok "$NS_B" "$IA4"
    ping_ok "$NS_A" "$IB4"
    sleep 0.5
    ping_ok "$NS_A" "$IB4"
    [ "$(endpoint_of_a)" = "$endpoint" ] || fail "the peer sees A at $(endpoint_of_a), not $endpoint"
}

test_sticky_source_v4() { sticky_source 4 192.168.231.11 192.168.231.11:51820; }
test_sticky_source_v6() { sticky_source 6 fd77:999::11 "[fd77:999::11]:51820"; }

# The peer writes to A over one interface, but A's route back leaves through another: A
# answers from the kernel's choice (the other interface's address), as the kernel does.
test_sticky_source_not_across_interfaces() {
    underlay
    ip link add "w$RID" netns "$NS_A" type veth peer name "w$RID" netns "$NS_B" || fail "second veth"
    ip -n "$NS_A" addr add 192.168.232.1/24 dev "w$RID"
    ip -n "$NS_B" addr add 192.168.232.2/24 dev "w$RID"
    ip -n "$NS_A" link set "w$RID" up
    ip -n "$NS_B" link set "w$RID" up
    ip -n "$NS_A" route add "$UB4/32" via 192.168.232.2 dev "w$RID" || fail "route"
    # B is ours too: wireguard-go would pin its own replies to the interface A's
    # arrived on, and the packets would then arrive on the route's interface.
    SWG_B=ours sticky_pair 4 "$UA4:51820"
    ping_ok "$NS_B" "$IA4"
    sleep 0.5
    ping_ok "$NS_A" "$IB4"
    ping_ok "$NS_B" "$IA4"
    [ "$(endpoint_of_a)" = "192.168.232.1:51820" ] ||
        fail "A answered from $(endpoint_of_a), not from the address of the interface its route uses"
}

# The address the peer wrote to leaves the host: A falls back to the kernel's choice at
# once (the peer roams to it), no blackhole.
test_sticky_source_falls_over() {
    underlay
    ip -n "$NS_A" addr add 192.168.231.11/24 dev "v$RID"
    sticky_pair 4 192.168.231.11:51820
    ping_ok "$NS_B" "$IA4"
    ping_ok "$NS_A" "$IB4"
    [ "$(endpoint_of_a)" = 192.168.231.11:51820 ] || fail "not sticky to begin with: $(endpoint_of_a)"
    ip -n "$NS_A" addr del 192.168.231.11/24 dev "v$RID"
    ip netns exec "$NS_A" ping -c 3 -i 0.2 -W 1 "$IB4" >"$TMP/ping.out" 2>&1 ||
        { cat "$TMP/ping.out" >&2; fail "traffic stopped when the address went"; }
    [ "$(endpoint_of_a)" = "$UA4:51820" ] || fail "the peer sees A at $(endpoint_of_a)"
}
