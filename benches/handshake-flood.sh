#!/usr/bin/env bash
# Handshake flood against ours: what a flood of initiations with valid MACs from one host
# costs the traffic of everyone else.
#
#   sudo benches/handshake-flood.sh [-t SECONDS] [-i "ours base"]
#
# Namespaces A (ours, under attack), B and C (ours, its peers) and F (the flooder), each
# of B, C and F joined to A by a veth. B runs a TCP stream to A; F runs
# tools/handshake-flood at full speed on one core; C drops its session with A and must
# handshake again during the flood. Printed per implementation: the stream's rate without
# and during the flood, C's time to a working tunnel during the flood, the flood rate, and
# A's drop counters. SWG_BASE_BIN with "base" in -i runs another build of ours the same
# way (e.g. one without the per-source limit).
set -euo pipefail
umask 077
cd "$(dirname "$0")/.."
secs=10 impls="ours"
while [ $# -gt 0 ]; do
    case $1 in
        -t) secs=$2; shift 2 ;;
        -i) impls=$2; shift 2 ;;
        *) echo "usage: $0 [-t SECONDS] [-i IMPLS]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
for tool in wg iperf3 ping python3; do command -v $tool >/dev/null || { echo "missing $tool" >&2; exit 1; }; done
cargo build --release --locked -j2 --bin semaphore-wireguard --bin handshake-flood 2>&1 | tail -1
OURS="$PWD/target/release/semaphore-wireguard"
FLOOD="$PWD/target/release/handshake-flood"

RID=$(printf '%04x' $(( (RANDOM ^ $$) & 0xffff )))
TMP=$(mktemp -d /tmp/swg-flood.XXXXXX)
pids=()
teardown() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
    for n in a b c f; do ip netns del "swgf-$RID-$n" 2>/dev/null || true; done
    rm -f /var/run/wireguard/sf"$RID"?.sock
}
trap 'teardown; rm -rf "$TMP"' EXIT
ns() { echo "swgf-$RID-$1"; }

setup() {
    local bin=$1 n i
    for n in a b c f; do ip netns add "$(ns $n)"; ip -n "$(ns $n)" link set lo up; done
    i=1
    for n in b c f; do
        ip link add "fv$RID$n" netns "$(ns a)" type veth peer name "fv$RID$n" netns "$(ns $n)"
        ip -n "$(ns a)" addr add "172.31.$i.1/24" dev "fv$RID$n"
        ip -n "$(ns $n)" addr add "172.31.$i.2/24" dev "fv$RID$n"
        ip -n "$(ns a)" link set "fv$RID$n" up
        ip -n "$(ns $n)" link set "fv$RID$n" up
        i=$((i + 1))
    done
    for n in a b c; do
        ip netns exec "$(ns $n)" "$bin" tunnel -f --log-level info "sf$RID$n" >"$TMP/$n.log" 2>&1 &
        pids+=("$!")
        wg genkey >"$TMP/$n.key"
    done
    for _ in $(seq 100); do
        [ -S "/var/run/wireguard/sf${RID}a.sock" ] && [ -S "/var/run/wireguard/sf${RID}b.sock" ] && [ -S "/var/run/wireguard/sf${RID}c.sock" ] && break
        sleep 0.05
    done
    local ka kb kc
    ka=$(wg pubkey <"$TMP/a.key") kb=$(wg pubkey <"$TMP/b.key") kc=$(wg pubkey <"$TMP/c.key")
    KEY_A=$ka
    ip netns exec "$(ns a)" wg set "sf${RID}a" private-key "$TMP/a.key" listen-port 51820 \
        peer "$kb" allowed-ips 10.77.0.2/32 peer "$kc" allowed-ips 10.77.0.3/32
    ip netns exec "$(ns b)" wg set "sf${RID}b" private-key "$TMP/b.key" listen-port 51820 \
        peer "$ka" allowed-ips 10.77.0.1/32 endpoint 172.31.1.1:51820
    ip netns exec "$(ns c)" wg set "sf${RID}c" private-key "$TMP/c.key" listen-port 51820 \
        peer "$ka" allowed-ips 10.77.0.1/32 endpoint 172.31.2.1:51820
    local addr
    for n in a b c; do
        case $n in a) addr=10.77.0.1 ;; b) addr=10.77.0.2 ;; c) addr=10.77.0.3 ;; esac
        ip -n "$(ns $n)" addr add "$addr/24" dev "sf$RID$n"
        ip -n "$(ns $n)" link set "sf$RID$n" up
    done
    ip netns exec "$(ns a)" iperf3 -s -D --pidfile "$TMP/iperf.pid" >/dev/null
    for _ in $(seq 50); do ip netns exec "$(ns a)" ss -ltn | grep -q :5201 && break; sleep 0.05; done
    ip netns exec "$(ns b)" ping -c 2 -W 2 10.77.0.1 >/dev/null
    ip netns exec "$(ns c)" ping -c 2 -W 2 10.77.0.1 >/dev/null
}

stream() {
    ip netns exec "$(ns b)" iperf3 -c 10.77.0.1 -t "$secs" -J 2>/dev/null |
        python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9, 3))'
}

measure() {
    local impl=$1 bin=$OURS
    [ "$impl" = base ] && bin=${SWG_BASE_BIN:?set SWG_BASE_BIN for base}
    setup "$bin"
    local quiet under hs flood
    quiet=$(stream)
    ip netns exec "$(ns f)" "$FLOOD" 172.31.3.1:51820 "$KEY_A" $((secs + 6)) >"$TMP/flood.out" 2>&1 &
    local fp=$!
    pids+=("$fp")
    sleep 2
    # During the flood, at once: B's stream, and C losing its session (peer removed and
    # configured again) and handshaking anew.
    stream >"$TMP/under" &
    local sp=$!
    ip netns exec "$(ns c)" wg set "sf${RID}c" peer "$KEY_A" remove
    ip netns exec "$(ns c)" wg set "sf${RID}c" peer "$KEY_A" allowed-ips 10.77.0.1/32 endpoint 172.31.2.1:51820
    local t0 t1
    t0=$(date +%s%N)
    hs="none within ${secs} s"
    while [ $(( ($(date +%s%N) - t0) / 1000000000 )) -lt "$secs" ]; do
        if ip netns exec "$(ns c)" ping -c 1 -W 1 10.77.0.1 >/dev/null 2>&1; then
            t1=$(date +%s%N); hs="$(( (t1 - t0) / 1000000 )) ms"; break
        fi
    done
    wait "$sp" || true
    under=$(cat "$TMP/under")
    wait "$fp" || true
    flood=$(cat "$TMP/flood.out")
    kill "$(cat "$TMP/iperf.pid")" 2>/dev/null || true
    teardown
    local drops
    drops=$(grep -o 'drops=[^ ]*' "$TMP/a.log" | tail -1 || true)
    printf '| %s | %s | %s | %s | %s | %s |\n' "$impl" "$quiet" "$under" "$hs" "$flood" "${drops#drops=}"
}

echo "== $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, kernel $(uname -r), ${secs}s streams, commit $(git rev-parse --short HEAD)"
echo
echo "| implementation | TCP B→A, no flood (Gbit/s) | TCP B→A, during the flood | C's new handshake, during the flood | flood | A's drops |"
echo "|---|---|---|---|---|---|"
for impl in $impls; do measure "$impl"; done
