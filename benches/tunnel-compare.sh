#!/usr/bin/env bash
# Side-by-side tunnel benchmark: ours, wireguard-go (Debian), boringtun-cli and gotatun-cli
# in the same topology (two network namespaces joined by a veth, MTU 1500; tunnel MTU 1420),
# runs interleaved (A B C D A B C D ...), medians reported as a Markdown table.
#
#   sudo benches/tunnel-compare.sh [-t SECONDS] [-r ROUNDS] [-i "ours wggo boringtun gotatun"] [--install]
#
# To compare two builds of ours (before/after a change), point SWG_BASE_BIN at the other
# binary and add "base" to -i: `SWG_BASE_BIN=/tmp/swg-base benches/tunnel-compare.sh -i "base ours"`.
#
# Per implementation and round: iperf3 TCP 1 stream, TCP 4 streams, UDP (-b 0 -l 1300:
# goodput and loss), idle ping RTT (mean and median), UdpRcvbufErrors at the receiver (nstat) during the
# single-stream test, and CPU seconds of both tunnel processes per GB moved in that test.
# A lock (flock) keeps two runs from overlapping. Needs root; --install fetches the peers.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=10 rounds=3 impls="ours wggo boringtun gotatun" install=0
while [ $# -gt 0 ]; do
    case $1 in
        -t) secs=$2; shift 2 ;;
        -r) rounds=$2; shift 2 ;;
        -i) impls=$2; shift 2 ;;
        --install) install=1; shift ;;
        *) echo "usage: $0 [-t SECONDS] [-r ROUNDS] [-i IMPLS] [--install]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
umask 077
exec 9>/tmp/swg-tunnel-compare.lock
flock -n 9 || { echo "another benchmark holds /tmp/swg-tunnel-compare.lock; waiting"; flock 9; }

for tool in wg iperf3 ping nstat bc python3; do command -v $tool >/dev/null || { echo "missing $tool (sudo scripts/test.sh installs them)" >&2; exit 1; }; done
if [ $install = 1 ]; then
    command -v wireguard-go >/dev/null || apt-get install -y -qq --no-install-recommends wireguard-go >/dev/null
    command -v boringtun-cli >/dev/null || cargo install boringtun-cli --locked -j2
    command -v gotatun >/dev/null || cargo install gotatun-cli --locked -j2
fi
cargo build --release --locked -j2 --bin semaphore-wireguard 2>&1 | tail -1
OURS="$PWD/target/release/semaphore-wireguard"

cmd_for() {
    case $1 in
        ours) echo "$OURS tunnel -f --log-level warn" ;;
        base) echo "$SWG_BASE_BIN tunnel -f --log-level warn" ;;
        wggo) echo "env LOG_LEVEL=error wireguard-go -f" ;;
        boringtun) echo "boringtun-cli -f --disable-drop-privileges" ;;
        gotatun) echo "gotatun -f --disable-drop-privileges" ;;
    esac
}
available() {
    case $1 in
        ours) [ -x "$OURS" ] ;;
        base) [ -n "${SWG_BASE_BIN:-}" ] && [ -x "$SWG_BASE_BIN" ] ;;
        wggo) command -v wireguard-go >/dev/null ;;
        boringtun) command -v boringtun-cli >/dev/null ;;
        gotatun) command -v gotatun >/dev/null ;;
    esac
}
version_of() {
    case $1 in
        ours) "$OURS" --version ;;
        base) "$SWG_BASE_BIN" --version ;;
        wggo) wireguard-go --version 2>&1 | head -1 ;;
        boringtun) boringtun-cli --version 2>&1 | head -1 ;;
        gotatun) gotatun --version 2>&1 | head -1 ;;
    esac
}

RID=$(printf '%04x' $(( (RANDOM << 1 ^ RANDOM ^ $$) & 0xffff )))
A="swgb-$RID-a" B="swgb-$RID-b" IA="bw${RID}a" IB="bw${RID}b"
TMP=$(mktemp -d /tmp/swg-bench.XXXXXX)
RESULTS="$TMP/results.tsv"
: >"$RESULTS"
pids=()
teardown() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    pids=()
    ip netns del "$A" 2>/dev/null || true
    ip netns del "$B" 2>/dev/null || true
    rm -f "/var/run/wireguard/$IA.sock" "/var/run/wireguard/$IB.sock"
}
trap 'teardown; rm -rf "$TMP"' EXIT

cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

setup() {
    local impl=$1 cmd
    cmd=$(cmd_for "$impl")
    ip netns add "$A"
    ip netns add "$B"
    ip link add vb$RID netns "$A" type veth peer name vb$RID netns "$B"
    ip -n "$A" addr add 169.254.100.1/30 dev vb$RID
    ip -n "$B" addr add 169.254.100.2/30 dev vb$RID
    for ns in "$A" "$B"; do ip -n "$ns" link set lo up; ip -n "$ns" link set vb$RID up; done
    # shellcheck disable=SC2086
    ip netns exec "$A" $cmd "$IA" >"$TMP/a.log" 2>&1 &
    pids+=("$!")
    PID_A=$!
    # shellcheck disable=SC2086
    ip netns exec "$B" $cmd "$IB" >"$TMP/b.log" 2>&1 &
    pids+=("$!")
    PID_B=$!
    for _ in $(seq 100); do
        [ -S "/var/run/wireguard/$IA.sock" ] && [ -S "/var/run/wireguard/$IB.sock" ] && break
        sleep 0.05
    done
    ip netns exec "$A" wg set "$IA" listen-port 51001 private-key "$TMP/ka" \
        peer "$(wg pubkey <"$TMP/kb")" allowed-ips 169.254.200.2/32 endpoint 169.254.100.2:51002
    ip netns exec "$B" wg set "$IB" listen-port 51002 private-key "$TMP/kb" \
        peer "$(wg pubkey <"$TMP/ka")" allowed-ips 169.254.200.1/32 endpoint 169.254.100.1:51001
    ip -n "$A" addr add 169.254.200.1/32 peer 169.254.200.2 dev "$IA"
    ip -n "$B" addr add 169.254.200.2/32 peer 169.254.200.1 dev "$IB"
    ip -n "$A" link set "$IA" mtu 1420 up
    ip -n "$B" link set "$IB" mtu 1420 up
    ip netns exec "$B" iperf3 -s -D --pidfile "$TMP/iperf.pid" >/dev/null
    for _ in $(seq 50); do ip netns exec "$B" ss -ltn | grep -q :5201 && break; sleep 0.05; done
    ip netns exec "$A" ping -c 3 -i 0.2 -W 2 169.254.200.2 >/dev/null 2>&1 || true
}

stop_server() { [ -f "$TMP/iperf.pid" ] && kill "$(cat "$TMP/iperf.pid")" 2>/dev/null; rm -f "$TMP/iperf.pid"; }

# No warm-up omission: bytes and CPU time then cover the same interval.
iperf_json() { ip netns exec "$A" timeout $((secs + 20)) iperf3 -c 169.254.200.2 -t "$secs" -J "$@" 2>/dev/null || echo '{}'; }

measure() {
    local impl=$1 round=$2
    setup "$impl"
    # Idle RTT: the mean (what ping reports as avg) and the median, which a few slow
    # wake-ups on a busy host do not move.
    local pings rtt p50
    pings=$(ip netns exec "$A" ping -c 100 -i 0.01 169.254.200.2 2>/dev/null | sed -n 's/.*time=\([0-9.]*\).*/\1/p')
    rtt=$(echo "$pings" | awk 'NF {s += $1; n++} END {if (n) printf "%.3f", s / n}')
    p50=$(echo "$pings" | sort -n | awk 'NF {a[++n] = $1} END {if (n) printf "%.3f", a[int((n + 1) / 2)]}')
    # Single stream, with drop counters and CPU.
    ip netns exec "$B" nstat -n >/dev/null
    local c0 c1 j1 tcp1 bytes rcvbuf cpu_per_gb
    c0=$(( $(cpu_of "$PID_A") + $(cpu_of "$PID_B") ))
    j1=$(iperf_json)
    c1=$(( $(cpu_of "$PID_A") + $(cpu_of "$PID_B") ))
    rcvbuf=$(ip netns exec "$B" nstat -az UdpRcvbufErrors Udp6RcvbufErrors 2>/dev/null | awk 'NR>1 {s+=$2} END {print s+0}')
    tcp1=$(echo "$j1" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("end",{}).get("sum_received",{}).get("bits_per_second",0)/1e9)')
    bytes=$(echo "$j1" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("end",{}).get("sum_received",{}).get("bytes",0))')
    cpu_per_gb=$(python3 -c "import sys; b=$bytes; c=($c1-$c0)/$(getconf CLK_TCK); print(round(c/(b/1e9),2) if b else 'n/a')")
    local tcp4 udp loss
    tcp4=$(iperf_json -P 4 | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("end",{}).get("sum_received",{}).get("bits_per_second",0)/1e9)')
    read -r udp loss < <(iperf_json -u -b 0 -l 1300 | python3 -c 'import json,sys; d=json.load(sys.stdin); s=d.get("end",{}).get("sum_received",{}); print(s.get("bits_per_second",0)/1e9, s.get("lost_percent",0))')
    stop_server
    printf '%s\t%s\t%.3f\t%.3f\t%.3f\t%.1f\t%s\t%s\t%s\t%s\n' "$impl" "$round" "$tcp1" "$tcp4" "$udp" "$loss" "${rtt:-n/a}" "$rcvbuf" "$cpu_per_gb" "${p50:-n/a}" >>"$RESULTS"
    printf '  round %s %-9s tcp1 %.2f Gbit/s  tcp4 %.2f  udp %.2f (loss %.0f%%)  rtt %s ms (median %s)  rcvbuf-drops %s  cpu %s s/GB\n' \
        "$round" "$impl" "$tcp1" "$tcp4" "$udp" "$loss" "${rtt:-n/a}" "${p50:-n/a}" "$rcvbuf" "$cpu_per_gb"
    teardown
}

wg genkey >"$TMP/ka"
wg genkey >"$TMP/kb"
chmod 600 "$TMP/ka" "$TMP/kb"
run=()
for i in $impls; do
    if available "$i"; then run+=("$i"); else echo "skipping $i: not installed (use --install)"; fi
done
echo "== $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, kernel $(uname -r), ${secs}s per test, $rounds rounds"
for i in "${run[@]}"; do echo "  $i: $(version_of "$i")"; done
for r in $(seq "$rounds"); do
    for i in "${run[@]}"; do measure "$i" "$r"; done
done

python3 - "$RESULTS" <<'PY'
import csv, statistics, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter="\t"))
def med(vals):
    v = [float(x) for x in vals if x not in ("n/a", "")]
    return statistics.median(v) if v else float("nan")
impls = []
for r in rows:
    if r[0] not in impls:
        impls.append(r[0])
print()
print("| implementation | TCP 1 stream (Gbit/s) | TCP 4 streams | UDP goodput (loss %) | idle ping avg (ms) | ping median | UdpRcvbufErrors | CPU s / GB |")
print("|---|---|---|---|---|---|---|---|")
for i in impls:
    rs = [r for r in rows if r[0] == i]
    col = lambda k: [r[k] for r in rs]
    print(f"| {i} | {med(col(2)):.2f} | {med(col(3)):.2f} | {med(col(4)):.2f} ({med(col(5)):.0f}) | {med(col(6)):.3f} | {med(col(9)):.3f} | {med(col(7)):.0f} | {med(col(8)):.2f} |")
print(f"\nmedians of {len(rows)//max(len(impls),1)} interleaved rounds")
PY
