# Tunnel tests: each function is one test, run by run.sh in its own subshell.
# shellcheck disable=SC2154

# Data both ways, IPv4 and IPv6 inside, over an IPv4 or IPv6 underlay, and a short TCP run.
traffic() {
    local ia=$1 ib=$2 outer=$3
    pair "$ia" "$ib" "$outer"
    ping_ok "$NS_A" "$IB4"
    ping_ok "$NS_A" "$IB6"
    ping_ok "$NS_B" "$IA4"
    ping_ok "$NS_B" "$IA6"
    iperf "$NS_A" "$NS_B" "$IB4"
    iperf "$NS_B" "$NS_A" "$IA4"
}

test_ours_ours_v4_outer() { traffic ours ours 4; }
# TUN offload on one side, the plain fallback on the other (SWG_DISABLE_OFFLOAD).
test_offload_and_fallback_interop() {
    traffic ours ours-plain 4
    grep -q "TUN offload refused" "$TMP/$IF_B.log" || fail "the fallback side did not take the plain path"
    ip -n "$NS_A" -d link show "$IF_A" | grep -q 'vnet_hdr on' || fail "offload side: no vnet_hdr"
    ip -n "$NS_B" -d link show "$IF_B" | grep -q 'vnet_hdr off' || fail "fallback side has vnet_hdr"
    # The offload side's TUN moved super-packets both ways: TSO reads (TX of the device)
    # and coalesced GRO writes (RX of the device) average well above the 1420-byte MTU.
    local stats rx_bytes rx_pkts tx_bytes tx_pkts
    stats=$(ip -n "$NS_A" -s -j link show "$IF_A")
    read -r rx_bytes rx_pkts tx_bytes tx_pkts < <(python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["stats64"]; print(s["rx"]["bytes"], s["rx"]["packets"], s["tx"]["bytes"], s["tx"]["packets"])' <<<"$stats")
    [ $((tx_bytes / tx_pkts)) -gt 4000 ] || fail "no TSO super-packets read: $tx_bytes bytes in $tx_pkts packets"
    [ $((rx_bytes / rx_pkts)) -gt 4000 ] || fail "no coalesced writes: $rx_bytes bytes in $rx_pkts packets"
}
test_ours_ours_v6_outer() { traffic ours ours 6; }
# Ours initiates (A has the endpoint) ...
test_ours_to_wggo_v4_outer() { traffic ours wggo 4; }
test_ours_to_wggo_v6_outer() { traffic ours wggo 6; }
# ... and wireguard-go initiates.
test_wggo_to_ours_v4_outer() { traffic wggo ours 4; }
test_wggo_to_ours_v6_outer() { traffic wggo ours 6; }

# What `wg show` reports for our interface.
test_wg_show() {
    pair ours wggo 4
    ping_ok "$NS_A" "$IB4"
    local w="ip netns exec $NS_A wg show $IF_A"
    [ "$($w public-key)" = "$KEY_A" ] || fail "public key: $($w public-key)"
    [ "$($w listen-port)" = 51820 ] || fail "listen port: $($w listen-port)"
    $w endpoints | grep -qF "$KEY_B	$UB4:51820" || fail "endpoints: $($w endpoints)"
    $w allowed-ips | grep -qF "$KEY_B	$IB4/32 $IB6/128" || fail "allowed ips: $($w allowed-ips)"
    local hs now
    hs=$($w latest-handshakes | cut -f2)
    now=$(date +%s)
    [ "$hs" -gt $((now - 60)) ] && [ "$hs" -le $((now + 1)) ] || fail "latest handshake $hs, now $now"
    $w | grep -q "latest handshake: .*\(second\|Now\)" || fail "wg show text: $($w)"
    $w | grep -q "years" && fail "handshake shown in years"
    local rx1 tx1 rx2 tx2
    read -r _ rx1 tx1 <<<"$($w transfer)"
    [ "$rx1" -gt 0 ] && [ "$tx1" -gt 0 ] || fail "transfer $rx1 $tx1"
    ping_ok "$NS_A" "$IB4"
    read -r _ rx2 tx2 <<<"$($w transfer)"
    [ "$rx2" -gt "$rx1" ] && [ "$tx2" -gt "$tx1" ] || fail "transfer did not grow: $rx1/$tx1 -> $rx2/$tx2"
    # The dump form parses as well (one line for the interface, one per peer).
    [ "$($w dump | wc -l)" = 2 ] || fail "dump: $($w dump)"
    # Our `show` prints what `wg show` prints (the handshake age may tick in between).
    diff <($w | grep -v "latest handshake") <("$SWG_BIN" show "$IF_A" | grep -v "latest handshake") >&2 ||
        fail "semaphore-wireguard show differs from wg show"
    "$SWG_BIN" show | grep -q "^interface: $IF_A$" || fail "show without a name lists no $IF_A"
}

# `wg showconf | wg setconf` round-trips and traffic keeps flowing.
test_showconf_setconf() {
    pair ours ours 4
    ping_ok "$NS_A" "$IB4"
    ip netns exec "$NS_A" wg showconf "$IF_A" >"$TMP/conf1" || fail "showconf"
    ip netns exec "$NS_A" wg setconf "$IF_A" "$TMP/conf1" || fail "setconf"
    ip netns exec "$NS_A" wg showconf "$IF_A" >"$TMP/conf2"
    diff -u "$TMP/conf1" "$TMP/conf2" >&2 || fail "showconf changed after setconf"
    grep -q "^PrivateKey = " "$TMP/conf1" || fail "no private key in showconf"
    ping_ok "$NS_A" "$IB4"
    # syncconf too (it diffs and sends a minimal set).
    ip netns exec "$NS_A" wg syncconf "$IF_A" "$TMP/conf1" || fail "syncconf"
    ping_ok "$NS_A" "$IB4"
}

# `wg set … endpoint` on an existing peer, then `remove`.
test_set_endpoint_and_remove() {
    pair ours ours 4
    ping_ok "$NS_A" "$IB4"
    local w="ip netns exec $NS_A wg"
    $w set "$IF_A" peer "$KEY_B" endpoint "[$UB6]:51820" || fail "wg set endpoint"
    $w show "$IF_A" endpoints | grep -qF "[$UB6]:51820" || fail "endpoint not changed: $($w show "$IF_A" endpoints)"
    ping_ok "$NS_A" "$IB4"
    $w set "$IF_A" peer "$KEY_B" allowed-ips "$IB4/32" || fail "wg set allowed-ips"
    [ "$($w show "$IF_A" allowed-ips | cut -f2)" = "$IB4/32" ] || fail "allowed-ips not replaced"
    $w set "$IF_A" peer "$KEY_B" remove || fail "wg set remove"
    [ -z "$($w show "$IF_A" peers)" ] || fail "peer still listed"
    ping_fails "$NS_A" "$IB4"
}

# The peer changes its source port; our endpoint for it follows.
test_roaming() {
    pair ours wggo 4
    ping_ok "$NS_A" "$IB4"
    ip netns exec "$NS_A" wg show "$IF_A" endpoints | grep -qF "$UB4:51820" || fail "initial endpoint"
    ip netns exec "$NS_B" wg set "$IF_B" listen-port 40444 || fail "peer port change"
    ping_ok "$NS_B" "$IA4"
    ip netns exec "$NS_A" wg show "$IF_A" endpoints | grep -qF "$UB4:40444" ||
        fail "endpoint did not roam: $(ip netns exec "$NS_A" wg show "$IF_A" endpoints)"
    # And our side changing port is followed by wireguard-go.
    ip netns exec "$NS_A" wg set "$IF_A" listen-port 40555 || fail "our port change"
    ping_ok "$NS_A" "$IB4"
    ip netns exec "$NS_B" wg show "$IF_B" endpoints | grep -qF "$UA4:40555" || fail "peer did not follow us"
}

# A packet whose inner source is outside the sender's allowed IPs never reaches our TUN.
test_spoofed_source_dropped() {
    pair ours wggo 4
    ping_ok "$NS_A" "$IB4"
    ip -n "$NS_B" addr add 10.99.0.5/32 dev "$IF_B"
    local rx_tun0 rx_wg0 rx_tun1 rx_wg1
    rx_tun0=$(rx_packets "$NS_A" "$IF_A")
    rx_wg0=$(ip netns exec "$NS_A" wg show "$IF_A" transfer | cut -f2)
    ip netns exec "$NS_B" ping -c 5 -i 0.2 -W 1 -I 10.99.0.5 "$IA4" >/dev/null 2>&1 && fail "spoofed ping was answered"
    rx_tun1=$(rx_packets "$NS_A" "$IF_A")
    rx_wg1=$(ip netns exec "$NS_A" wg show "$IF_A" transfer | cut -f2)
    [ "$rx_wg1" -ge $((rx_wg0 + 5 * 100)) ] || fail "spoofed packets did not arrive encrypted ($rx_wg0 -> $rx_wg1)"
    [ "$rx_tun1" = "$rx_tun0" ] || fail "spoofed packets reached the TUN ($rx_tun0 -> $rx_tun1)"
    ping_ok "$NS_B" "$IA4"
}

# wg-quick with our implementation: up brings traffic, down removes everything.
test_wg_quick() {
    underlay
    start wggo "$NS_B" "$IF_B"
    wg genkey >"$TMP/a.key"
    wg genkey >"$TMP/b.key"
    KEY_A=$(wg pubkey <"$TMP/a.key")
    KEY_B=$(wg pubkey <"$TMP/b.key")
    ip netns exec "$NS_B" wg set "$IF_B" private-key "$TMP/b.key" listen-port 51820 peer "$KEY_A" allowed-ips "$IA4/32"
    ip -n "$NS_B" addr add "$IB4/24" dev "$IF_B"
    ip -n "$NS_B" link set "$IF_B" up
    local conf="$TMP/$IF_A.conf"
    cat >"$conf" <<CONF
[Interface]
PrivateKey = $(cat "$TMP/a.key")
Address = $IA4/24
ListenPort = 51820

[Peer]
PublicKey = $KEY_B
Endpoint = $UB4:51820
AllowedIPs = $IB4/32
PersistentKeepalive = 25
CONF
    chmod 600 "$conf"
    ln -s "$SWG_BIN" "$TMP/semaphore-wireguard-tunnel"
    _sockets+=("$IF_A")
    ip netns exec "$NS_A" env WG_QUICK_USERSPACE_IMPLEMENTATION="$TMP/semaphore-wireguard-tunnel" \
        wg-quick up "$conf" >"$TMP/wgq.log" 2>&1 || { cat "$TMP/wgq.log" >&2; fail "wg-quick up"; }
    local pid
    pid=$(ip netns exec "$NS_A" ss -xlpn 2>/dev/null | grep -F "$SOCK_DIR/$IF_A.sock" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
    [ -n "$pid" ] && _pids+=("$pid")
    ping_ok "$NS_A" "$IB4"
    ip netns exec "$NS_A" wg show "$IF_A" | grep -q "latest handshake" || fail "no handshake after wg-quick up"
    ip netns exec "$NS_A" wg-quick down "$conf" >>"$TMP/wgq.log" 2>&1 || { cat "$TMP/wgq.log" >&2; fail "wg-quick down"; }
    local i
    for i in $(seq 30); do
        ! ip -n "$NS_A" link show "$IF_A" >/dev/null 2>&1 && [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null && return 0
        sleep 0.1
    done
    fail "interface or process left after wg-quick down"
}

# A second `tunnel` process for a running interface takes it over: the old one exits 0,
# a peer of another implementation (wireguard-go) pinging every 10 ms loses at most 2
# (UPGRADE_MAX_LOST, as for the agents' takeover: the suite's debug build is allowed 3),
# and the interface keeps its key, port, peers, addresses and routes. It then goes with
# its new process, as before.
test_a_second_tunnel_process_takes_the_interface_over() {
    pair ours wggo 4
    ping_ok "$NS_A" "$IB4"
    ip -n "$NS_A" route add 10.232.0.0/16 dev "$IF_A"
    local key port old new rc
    key=$(ip netns exec "$NS_A" wg show "$IF_A" public-key)
    port=$(ip netns exec "$NS_A" wg show "$IF_A" listen-port)
    old=${_pid_of[$IF_A]}
    ip netns exec "$NS_B" ping -D -i 0.01 -c 300 -W 1 "$IA4" >"$TMP/ping.txt" 2>&1 &
    local pinger=$!
    sleep 0.8
    ip netns exec "$NS_A" "$SWG_BIN" tunnel -f --log-level debug "$IF_A" >"$TMP/$IF_A-successor.log" 2>&1 &
    new=$!
    _pids+=("$new")
    for _ in $(seq 100); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$old" 2>/dev/null && fail "the old process still runs"
    wait "$old"
    rc=$?
    [ "$rc" = 0 ] || fail "the old process exited with $rc"
    wait "$pinger"
    log "takeover under wireguard-go's pings: $(lost "$TMP/ping.txt") of 300 lost, longest gap $(longest_gap "$TMP/ping.txt") ms"
    [ "$(lost "$TMP/ping.txt")" -le "${UPGRADE_MAX_LOST:-2}" ] || fail "$(lost "$TMP/ping.txt") pings lost"
    grep -q "took the interface over" "$TMP/$IF_A-successor.log" || fail "no takeover in the successor's log"
    [ "$(ip netns exec "$NS_A" wg show "$IF_A" public-key)" = "$key" ] || fail "the key changed"
    [ "$(ip netns exec "$NS_A" wg show "$IF_A" listen-port)" = "$port" ] || fail "the port changed"
    [ "$(ip netns exec "$NS_A" wg show "$IF_A" peers)" = "$KEY_B" ] || fail "the peer is gone"
    ip -n "$NS_A" addr show "$IF_A" | grep -q "$IA4/24" || fail "the address is gone"
    ip -n "$NS_A" route show 10.232.0.0/16 | grep -q "$IF_A" || fail "the route is gone"
    ping_ok "$NS_A" "$IB4"
    kill "$new"
    wait "$new"
    for _ in $(seq 20); do ip -n "$NS_A" link show "$IF_A" >/dev/null 2>&1 || return 0; sleep 0.1; done
    fail "$IF_A outlived its new process"
}
