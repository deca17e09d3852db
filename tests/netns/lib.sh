# Shared helpers for the root-only network-namespace tests. Sourced, not run.
# Every test runs in its own subshell; everything it creates is registered and torn down
# by an EXIT trap, so a failing test leaves no namespace, process or socket behind.

: "${SWG_BIN:?set SWG_BIN to the semaphore-wireguard binary}"
SOCK_DIR=/var/run/wireguard
umask 077

RID=${RID:-$(printf '%04x' $(( (RANDOM << 1 ^ RANDOM ^ $$) & 0xffff )))}
NS_A="swg-$RID-a"
NS_B="swg-$RID-b"
IF_A="sw${RID}a"
IF_B="sw${RID}b"
TMP=$(mktemp -d /tmp/swg-netns.XXXXXX)

# Underlay and inner addresses.
UA4=192.168.231.1 UB4=192.168.231.2
UA6=fd77:231::1 UB6=fd77:231::2
IA4=10.231.0.1 IB4=10.231.0.2
IA6=fd31::1 IB6=fd31::2

_pids=()
_namespaces=()
_sockets=()
declare -A _pid_of

cleanup() {
    local pid
    for pid in "${_pids[@]}"; do
        kill "$pid" 2>/dev/null
    done
    for pid in "${_pids[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    local s
    for s in "${_sockets[@]}"; do rm -f "$SOCK_DIR/$s.sock"; done
    local ns
    for ns in "${_namespaces[@]}"; do ip netns del "$ns" 2>/dev/null; done
    [ -n "${KEEP_TMP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
    echo "    FAIL: $*" >&2
    exit 1
}

log() { echo "    $*" >&2; }

# new_ns NAME: a namespace with loopback up.
new_ns() {
    ip netns add "$1" || fail "cannot create namespace $1"
    _namespaces+=("$1")
    ip -n "$1" link set lo up
}

# underlay: namespaces A and B joined by a veth with IPv4 and IPv6 addresses.
underlay() {
    new_ns "$NS_A"
    new_ns "$NS_B"
    ip link add "v$RID" netns "$NS_A" type veth peer name "v$RID" netns "$NS_B" || fail "veth"
    ip -n "$NS_A" addr add "$UA4/24" dev "v$RID"
    ip -n "$NS_B" addr add "$UB4/24" dev "v$RID"
    ip -n "$NS_A" addr add "$UA6/64" dev "v$RID" nodad
    ip -n "$NS_B" addr add "$UB6/64" dev "v$RID" nodad
    ip -n "$NS_A" link set "v$RID" up
    ip -n "$NS_B" link set "v$RID" up
}

# start IMPL NS IFNAME: run an implementation (ours | wggo) in the foreground, in the
# background of this shell, and wait for its UAPI socket.
start() {
    local impl=$1 ns=$2 ifname=$3
    _sockets+=("$ifname")
    case $impl in
        # SWG_TUNNEL_ARGS: extra flags for ours (`--mtu 9000`).
        # shellcheck disable=SC2086
        ours) ip netns exec "$ns" "$SWG_BIN" tunnel -f --log-level debug ${SWG_TUNNEL_ARGS:-} "$ifname" >"$TMP/$ifname.log" 2>&1 & ;;
        ours-plain) ip netns exec "$ns" env SWG_DISABLE_OFFLOAD=1 "$SWG_BIN" tunnel -f --log-level debug "$ifname" >"$TMP/$ifname.log" 2>&1 & ;;
        wggo) ip netns exec "$ns" env LOG_LEVEL=error wireguard-go -f "$ifname" >"$TMP/$ifname.log" 2>&1 & ;;
        *) fail "unknown implementation $impl" ;;
    esac
    _pids+=("$!")
    _pid_of[$ifname]=$!
    local i
    for i in $(seq 50); do
        [ -S "$SOCK_DIR/$ifname.sock" ] && ip -n "$ns" link show "$ifname" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    cat "$TMP/$ifname.log" >&2
    fail "$impl did not create $ifname"
}

# pair IMPL_A IMPL_B OUTER(4|6): both ends up, keyed, addressed; A has B's endpoint,
# B learns A's from the handshake.
pair() {
    local ia=$1 ib=$2 outer=$3
    underlay
    start "$ia" "$NS_A" "$IF_A"
    start "$ib" "$NS_B" "$IF_B"
    wg genkey >"$TMP/a.key"
    wg genkey >"$TMP/b.key"
    KEY_A=$(wg pubkey <"$TMP/a.key")
    KEY_B=$(wg pubkey <"$TMP/b.key")
    local ep_b
    if [ "$outer" = 6 ]; then ep_b="[$UB6]:51820"; else ep_b="$UB4:51820"; fi
    ip netns exec "$NS_A" wg set "$IF_A" private-key "$TMP/a.key" listen-port 51820 \
        peer "$KEY_B" endpoint "$ep_b" allowed-ips "$IB4/32,$IB6/128" || fail "wg set A"
    ip netns exec "$NS_B" wg set "$IF_B" private-key "$TMP/b.key" listen-port 51820 \
        peer "$KEY_A" allowed-ips "$IA4/32,$IA6/128" || fail "wg set B"
    ip -n "$NS_A" addr add "$IA4/24" dev "$IF_A"
    ip -n "$NS_B" addr add "$IB4/24" dev "$IF_B"
    ip -n "$NS_A" addr add "$IA6/64" dev "$IF_A" nodad
    ip -n "$NS_B" addr add "$IB6/64" dev "$IF_B" nodad
    ip -n "$NS_A" link set "$IF_A" up
    ip -n "$NS_B" link set "$IF_B" up
}

# Of a `ping` output: how many were not answered, and (with -D) the longest time between
# two replies, in ms.
lost() { awk '/packets transmitted/ {print $1 - $4}' "$1"; }
# The longest time between two replies, in ms.
longest_gap() {
    python3 - "$1" <<'PY'
import re, sys
ts = [float(m.group(1)) for m in re.finditer(r"^\[(\d+\.\d+)\].*bytes from", open(sys.argv[1]).read(), re.M)]
print(round(max((b - a for a, b in zip(ts, ts[1:])), default=0) * 1000))
PY
}

# ping_ok NS DEST: a few pings, all answered.
ping_ok() {
    local ns=$1 dst=$2
    # The first may be spent on the handshake.
    ip netns exec "$ns" ping -c 1 -W 3 "$dst" >/dev/null 2>&1
    ip netns exec "$ns" ping -c 3 -i 0.2 -W 2 "$dst" >"$TMP/ping.out" 2>&1 || { cat "$TMP/ping.out" >&2; fail "ping $dst from $ns"; }
}

ping_fails() {
    local ns=$1 dst=$2
    if ip netns exec "$ns" ping -c 2 -i 0.2 -W 1 "$dst" >/dev/null 2>&1; then fail "ping $dst from $ns should fail"; fi
}

# iperf NS_CLIENT NS_SERVER DEST [extra client args]: a short TCP run; logs Mbit/s.
# Not for $(...): it must run in the test's shell so `fail` and the pid list work.
iperf() {
    local nc=$1 ns=$2 dst=$3
    shift 3
    ip netns exec "$ns" iperf3 -s -1 -B "$dst" >"$TMP/iperf-s.log" 2>&1 &
    _pids+=("$!")
    local i
    for i in $(seq 30); do
        ip netns exec "$ns" ss -ltn 2>/dev/null | grep -q ":5201" && break
        sleep 0.1
    done
    ip netns exec "$nc" timeout 30 iperf3 -c "$dst" -t 2 -J "$@" >"$TMP/iperf.json" 2>"$TMP/iperf.err" ||
        { cat "$TMP/iperf.json" "$TMP/iperf.err" >&2; fail "iperf3 to $dst"; }
    local mbit
    mbit=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(int(d["end"]["sum_received"]["bits_per_second"]/1e6))' "$TMP/iperf.json") ||
        fail "iperf3 output: $(head -c 300 "$TMP/iperf.json")"
    [ "$mbit" -gt 0 ] || fail "iperf3 moved nothing"
    log "iperf3 $nc -> $dst: $mbit Mbit/s"
}

# drops_of IFNAME: stops our daemon for IFNAME (SIGTERM) and prints the drop counters it
# logs on the way out (`reason=count,...`; empty when nothing was dropped).
drops_of() {
    local ifname=$1 pid=${_pid_of[$1]:?no daemon for $1}
    kill -TERM "$pid" 2>/dev/null
    local i
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    local line
    line=$(grep "shutting down" "$TMP/$ifname.log") || fail "$ifname logged no shutdown line"
    sed -n 's/.* drops=\([^ ]*\).*/\1/p' <<<"$line"
}

# tx_packets NS IF: packets the kernel sent into the TUN device (that we read).
tx_packets() {
    ip netns exec "$1" cat "/sys/class/net/$2/statistics/tx_packets"
}

# rx_packets NS IF: packets the kernel received from the TUN device.
rx_packets() {
    ip netns exec "$1" cat "/sys/class/net/$2/statistics/rx_packets"
}
