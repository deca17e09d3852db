#!/usr/bin/env bash
# The agent against a remote of many nodes, through the fake API server (release builds):
#
#   sudo benches/scale.sh [-n NODES] [-a KIB] [-i IDLE_SECONDS] [-q]
#
# One namespace runs the fake API server (serving as both the local and the remote
# cluster) with NODES remote nodes, each advertising a key and an endpoint that never
# answers; another runs the agent. Printed: seconds from process start and from the
# initial list to all peers programmed, the time from one node's change (in a quiet
# period) to its apply, the agent's RSS once settled, and its CPU use while idle (after
# the 90 s in which the handshakes to the silent peers are retried, and before). -a adds
# KIB KiB of unrelated annotations to every node (what the agent must not cache); -q
# skips the idle-CPU phases (about two minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=5000 ann_kib=0 idle=30 measure_idle=1
while [ $# -gt 0 ]; do
    case $1 in
        -n) nodes=$2; shift 2 ;;
        -a) ann_kib=$2; shift 2 ;;
        -i) idle=$2; shift 2 ;;
        -q) measure_idle=0; shift ;;
        *) echo "usage: $0 [-n NODES] [-a KIB] [-i IDLE_SECONDS] [-q]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
umask 077
cargo build --release --locked -j2 --bin semaphore-wireguard --bin fake-apiserver 2>&1 | tail -1
BIN="${SCALE_BIN:-$PWD/target/release/semaphore-wireguard}"
API="$PWD/target/release/fake-apiserver"
RID=$(printf '%04x' $(( (RANDOM ^ $$) & 0xffff )))
NS_API="swgs-$RID-api" NS_NODE="swgs-$RID-node"
TMP=$(mktemp -d /tmp/swg-scale.XXXXXX)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    ip netns del "$NS_API" 2>/dev/null || true
    ip netns del "$NS_NODE" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

ip netns add "$NS_API"
ip netns add "$NS_NODE"
ip link add "sa$RID" netns "$NS_API" type veth peer name "sn$RID" netns "$NS_NODE"
ip -n "$NS_API" addr add 192.168.250.1/24 dev "sa$RID"
ip -n "$NS_NODE" addr add 192.168.250.2/24 dev "sn$RID"
for ns in "$NS_API" "$NS_NODE"; do ip -n "$ns" link set lo up; done
ip -n "$NS_API" link set "sa$RID" up
ip -n "$NS_NODE" link set "sn$RID" up
# The remote nodes' endpoints (10.250/16 and up) lead nowhere: a blackhole route.
ip -n "$NS_NODE" route add blackhole 10.0.0.0/8

python3 - "$nodes" "$ann_kib" >"$TMP/nodes.json" <<'PY'
import base64, json, os, sys
n, kib = int(sys.argv[1]), int(sys.argv[2])
pad = "x" * (kib * 1024)
out = [{"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "aws1", "annotations": {}},
        "spec": {"podCIDR": "10.2.1.0/24"},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.250.2"}]}}]
for i in range(n):
    ann = {"aws.wireguard.semaphore.uw.io/pubKey": base64.b64encode(os.urandom(32)).decode(),
           "aws.wireguard.semaphore.uw.io/endpoint": f"10.250.{i // 250}.{i % 250 + 1}:51820"}
    if kib:
        ann["example.com/unrelated"] = pad
    out.append({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": f"gcp{i}", "annotations": ann,
                             "labels": {"kubernetes.io/hostname": f"gcp{i}"}},
                "spec": {"podCIDR": f"10.{4 + i // 65536}.{(i // 256) % 256}.{i % 256}/32"},
                "status": {"addresses": [{"type": "InternalIP", "address": f"10.250.{i // 250}.{i % 250 + 1}"}],
                           "images": [{"names": [f"registry.example/image-{j}:v1"], "sizeBytes": 1} for j in range(10)]}})
print(json.dumps(out))
PY
ip netns exec "$NS_API" "$API" --listen 192.168.250.1:6443 --token scale --nodes "$TMP/nodes.json" >"$TMP/api.log" 2>&1 &
pids+=("$!")
cat >"$TMP/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://192.168.250.1:6443"}}]
users: [{name: u, user: {token: scale}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
KC
cat >"$TMP/config.json" <<CFG
{"local": {"name": "aws", "kubeConfigPath": "$TMP/kubeconfig"},
 "remotes": [{"name": "gcp", "kubeConfigPath": "$TMP/kubeconfig", "podSubnet": "10.0.0.0/8",
              "wgListenPort": 51820}]}
CFG
# Wait until the last node is served (the server loads them after it starts listening).
for _ in $(seq 300); do
    ip netns exec "$NS_API" python3 -c "import urllib.request as u; r=u.Request('http://192.168.250.1:6443/api/v1/nodes/gcp$((nodes - 1))'); r.add_header('Authorization','Bearer scale'); u.urlopen(r, timeout=2)" 2>/dev/null && break
    sleep 0.1
done
mkdir -p "$TMP/keys" "$TMP/run"
start=$(date +%s.%N)
ip netns exec "$NS_NODE" unshare -m sh -c 'mount --bind "$0" /var/run/wireguard && exec "$@"' "$TMP/run" \
    env SWG_NODE_NAME=aws1 ${SCALE_ENV:-} ${SCALE_WRAP:-} "$BIN" -clusters-config "$TMP/config.json" -wg-key-path "$TMP/keys" \
    -listen-address 127.0.0.1:7773 -log-level "info,boringtun=off,control::sync=debug" >"$TMP/agent.log" 2>&1 &
AGENT=$!
pids+=("$AGENT")
metric() {
    ip netns exec "$NS_NODE" python3 -c 'import urllib.request,sys
try: print(urllib.request.urlopen("http://127.0.0.1:7773/metrics", timeout=5).read().decode())
except Exception: pass' | awk -v m="$1" 'index($0, m) == 1 {print $NF}'
}
# Done when the initial set is applied (the log says so; polling /metrics here would
# itself cost memory for every peer).
for _ in $(seq 600); do
    grep -q "initial peer set applied.* peers=$nodes" "$TMP/agent.log" && break
    sleep 0.05
done
grep -q "initial peer set applied.* peers=$nodes" "$TMP/agent.log" || { tail -20 "$TMP/agent.log"; echo "peers never reached $nodes" >&2; exit 1; }
ts() { date -d "$(sed -n "$1" "$TMP/agent.log" | head -1 | cut -d' ' -f1)" +%s.%N; }
listed=$(ts '/remote nodes listed/p')
applied=$(ts '/initial peer set applied/p')
rss() { awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$AGENT/status"; }
cpu() { awk '{print $14 + $15}' "/proc/$AGENT/stat"; }
sleep 3
rss_settled=$(rss)
[ "$(metric 'semaphore_wg_peers{device="wireguard.gcp"}')" = "$nodes" ] || { echo "the device does not have $nodes peers" >&2; exit 1; }
rss_scraped=$(rss)

# One node changes in a quiet period: its new endpoint applied how long after the write?
before=$(grep -c "peers applied" "$TMP/agent.log" || true)
written=$(ip netns exec "$NS_API" python3 - <<'PY'
import json, time, urllib.request
req = urllib.request.Request("http://192.168.250.1:6443/api/v1/nodes/gcp0", method="PATCH",
    data=json.dumps({"metadata": {"annotations": {"aws.wireguard.semaphore.uw.io/endpoint": "10.251.0.1:51820"}}}).encode())
req.add_header("Authorization", "Bearer scale")
req.add_header("Content-Type", "application/merge-patch+json")
sent = time.time()
urllib.request.urlopen(req, timeout=5).read()
print(sent)
PY
)
for _ in $(seq 200); do
    [ "$(grep -c "peers applied" "$TMP/agent.log" || true)" -gt "$before" ] && break
    sleep 0.01
done
change=$(grep "peers applied" "$TMP/agent.log" | tail -1 | cut -d' ' -f1)
change_ms=$(python3 -c "import sys; print(round(($(date -d "$change" +%s.%N) - $written) * 1000))")

# A burst: 500 nodes change within 2 s; how long after the last write does the device
# hold all 500 new endpoints? (Read over the UAPI socket, as `wg show` would.)
burst=$(( nodes < 500 ? nodes : 500 ))
ip netns exec "$NS_API" python3 - "$burst" >"$TMP/burst.out" <<'PY' &
import json, sys, time, urllib.request
n = int(sys.argv[1])
start = time.time()
for i in range(n):
    target = start + 2.0 * i / n
    if target > time.time():
        time.sleep(target - time.time())
    req = urllib.request.Request(f"http://192.168.250.1:6443/api/v1/nodes/gcp{i}", method="PATCH",
        data=json.dumps({"metadata": {"annotations": {
            "aws.wireguard.semaphore.uw.io/endpoint": f"10.252.{i // 250}.{i % 250 + 1}:51820"}}}).encode())
    req.add_header("Authorization", "Bearer scale")
    req.add_header("Content-Type", "application/merge-patch+json")
    urllib.request.urlopen(req, timeout=5).read()
print(time.time() - start, time.time())
PY
writer=$!
burst_ms=$(python3 - "$TMP/run/wireguard.gcp.sock" "$burst" "$TMP/burst.out" <<'PY'
import os, socket, sys, time
path, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
want = {f"10.252.{i // 250}.{i % 250 + 1}:51820" for i in range(n)}
def endpoints():
    s = socket.socket(socket.AF_UNIX); s.connect(path); s.sendall(b"get=1\n\n")
    buf = b""
    while not buf.endswith(b"\n\n"):
        chunk = s.recv(1 << 20)
        if not chunk: break
        buf += chunk
    s.close()
    return {l[len("endpoint="):] for l in buf.decode().splitlines() if l.startswith("endpoint=")}
deadline = time.time() + 30
while time.time() < deadline:
    have = endpoints()
    if want <= have and os.path.getsize(out) > 0:
        last = float(open(out).read().split()[1])
        print(round((time.time() - last) * 1000)); break
    time.sleep(0.02)
else:
    print("never")
PY
)
wait "$writer"
burst_span=$(awk '{printf "%.2f", $1}' "$TMP/burst.out")

early=- late=- tx=0 tx2=0
if [ "$measure_idle" = 1 ]; then
    # Idle CPU: the first 90 s retry the silent peers' handshakes; then they cost nothing.
    c0=$(cpu); t0=$(date +%s.%N)
    sleep "$idle"
    c1=$(cpu); t1=$(date +%s.%N)
    early=$(python3 -c "print(round(($c1 - $c0) / $(getconf CLK_TCK) / ($t1 - $t0) * 100, 1))")
    wait_more=$(python3 -c "print(max(0, 95 - ($t1 - $start)))")
    sleep "$wait_more"
    c2=$(cpu); t2=$(date +%s.%N)
    sleep "$idle"
    c3=$(cpu); t3=$(date +%s.%N)
    late=$(python3 -c "print(round(($c3 - $c2) / $(getconf CLK_TCK) / ($t3 - $t2) * 100, 1))")
    tx=$(metric 'semaphore_wg_dataplane_packets_total{device="wireguard.gcp",direction="tx"}')
    sleep 10
    tx2=$(metric 'semaphore_wg_dataplane_packets_total{device="wireguard.gcp",direction="tx"}')
fi
echo "== $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, commit $(git rev-parse --short HEAD), $nodes nodes, ${ann_kib} KiB of other annotations each"
python3 - <<PY
print("| measure | value |")
print("|---|---|")
print("| all peers programmed, from process start | %.2f s |" % ($applied - $start))
print("| initial peer set applied, from the initial list | %.2f s |" % ($applied - $listed))
print("| one node's change applied, from the API write | $change_ms ms |")
print("| $burst changes written in $burst_span s: all applied, from the last write | $burst_ms ms |")
print("| RSS, settled | $rss_settled MiB |")
print("| RSS, after one /metrics scrape | $rss_scraped MiB |")
print("| RSS, at the end | $(rss) MiB |")
print("| RSS, peak (VmHWM) | $(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$AGENT/status") MiB |")
print("| CPU while the silent peers' handshakes are retried (first ${idle} s) | $early % of a core |")
print("| CPU once they are given up (after 95 s) | $late % of a core |")
print("| datagrams sent in 10 s after that | $((tx2 - tx)) |")
PY
