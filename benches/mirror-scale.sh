#!/usr/bin/env bash
# The service mirror against a remote of many Services (release builds, loopback only):
#
#   benches/mirror-scale.sh [-s SERVICES] [-e ENDPOINTS_PER_SLICE]
#
# Two fake API servers, the local cluster and one remote. The remote holds SERVICES
# Services, each selected for mirroring and for a global Service, each with one
# EndpointSlice of ENDPOINTS_PER_SLICE endpoints. Then `semaphore-wireguard mirror` starts,
# and is timed until the local cluster holds every mirrored Service, mirrored slice,
# global Service and global slice. Printed: the seconds to converge, the mirror's RSS then
# and after 10 quiet seconds, its peak RSS, its CPU time, its API requests, and the time
# from one remote endpoint's change to both of its local copies.
set -euo pipefail
cd "$(dirname "$0")/.."
services=1000 endpoints=10
while [ $# -gt 0 ]; do
    case $1 in
        -s) services=$2; shift 2 ;;
        -e) endpoints=$2; shift 2 ;;
        *) echo "usage: $0 [-s SERVICES] [-e ENDPOINTS_PER_SLICE]" >&2; exit 2 ;;
    esac
done
cargo build --release --locked -j2 --bin semaphore-wireguard --bin fake-apiserver 2>&1 | tail -1
BIN="${MIRROR_BIN:-$PWD/target/release/semaphore-wireguard}"
API="$PWD/target/release/fake-apiserver"
TMP=$(mktemp -d /tmp/swg-mirror-scale.XXXXXX)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

start_api() {
    "$API" --listen 127.0.0.1:0 --token t --history 100000 >"$TMP/api-$1.log" 2>&1 &
    pids+=("$!")
    local i
    for i in $(seq 50); do
        url=$(sed -n 's/^listening on //p' "$TMP/api-$1.log")
        [ -n "$url" ] && break
        sleep 0.1
    done
    [ -n "$url" ] || { echo "fake API server $1 did not start" >&2; exit 1; }
    printf 'apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: %s\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n' \
        "$url" >"$TMP/$1.kubeconfig"
    eval "URL_$1=$url"
}
start_api local
start_api remote
cat >"$TMP/mirror.json" <<CFG
{
  "global": { "mirrorSvcLabelSelector": "m=true", "globalSvcLabelSelector": "g=true",
              "globalSvcRoutingStrategyLabel": "r=local-first", "mirrorNamespace": "mirror",
              "serviceSync": true, "endpointSliceSync": true },
  "localCluster": { "name": "local" },
  "remoteClusters": [ { "name": "remote", "kubeConfigPath": "$TMP/remote.kubeconfig", "servicePrefix": "r" } ]
}
CFG
port=$((20000 + RANDOM % 20000))
python3 - "$URL_local" "$URL_remote" "$services" "$endpoints" "$BIN" "$TMP" "$port" <<'PY'
import json, os, subprocess, sys, time, urllib.request

local, remote, n, e, binary, tmp, port = sys.argv[1:8]
n, e = int(n), int(e)

def call(base, method, path, body=None):
    req = urllib.request.Request(base + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Authorization", "Bearer t")
    req.add_header("Content-Type", "application/json")
    return json.load(urllib.request.urlopen(req, timeout=30))

def count(base, path, selector):
    return len(call(base, "GET", "%s?labelSelector=%s" % (path, urllib.request.quote(selector)))["items"])

def ns(base, name):
    call(base, "POST", "/api/v1/namespaces", {"metadata": {"name": name}})

labels = {"m": "true", "g": "true"}
def slice_of(i, first_octet):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "svc-%d-x1" % i, "namespace": "apps",
                         "labels": dict(labels, **{"kubernetes.io/service-name": "svc-%d" % i})},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.%d.%d.%d" % (first_octet, (i * e + j) // 250, (i * e + j) % 250 + 1)],
                           "conditions": {"ready": True}, "nodeName": "node-%d" % j} for j in range(e)],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}

ns(local, "mirror")
ns(remote, "apps")
t = time.time()
for i in range(n):
    call(remote, "POST", "/api/v1/namespaces/apps/services",
         {"apiVersion": "v1", "kind": "Service",
          "metadata": {"name": "svc-%d" % i, "namespace": "apps", "labels": labels},
          "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}})
    call(remote, "POST", "/apis/discovery.k8s.io/v1/namespaces/apps/endpointslices", slice_of(i, 4))
print("remote populated: %d Services, %d EndpointSlices of %d endpoints (%.1f s)" % (n, n, e, time.time() - t))

log = open(os.path.join(tmp, "mirror.log"), "w")
start = time.time()
proc = subprocess.Popen([binary, "mirror", "-config", os.path.join(tmp, "mirror.json"),
                         "-kube-config", os.path.join(tmp, "local.kubeconfig"),
                         "-listen-address", "127.0.0.1:" + port], stdout=log, stderr=log)

def status(field):
    for line in open("/proc/%d/status" % proc.pid):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024

def cpu():
    f = open("/proc/%d/stat" % proc.pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

targets = [("mirrored Services", "/api/v1/namespaces/mirror/services", "mirror-svc-prefix-sync=r"),
           ("mirrored slices", "/apis/discovery.k8s.io/v1/namespaces/mirror/endpointslices", "mirror-svc-prefix-sync=r"),
           ("global Services", "/api/v1/namespaces/mirror/services", "global-svc=true"),
           ("global slices", "/apis/discovery.k8s.io/v1/namespaces/mirror/endpointslices", "mirror-endpointslice-sync-name=remote")]
done = {}
try:
    while len(done) < len(targets):
        if proc.poll() is not None:
            sys.exit("the mirror exited: see its log")
        if time.time() - start > 600:
            sys.exit("no convergence in 600 s: %s" % done)
        for what, path, sel in targets:
            if what not in done and count(local, path, sel) == n:
                done[what] = time.time() - start
        time.sleep(0.2)
    converged = max(done.values())
    rss_converged = status("VmRSS")
    cpu_converged = cpu()
    for what, _, _ in targets:
        print("  %-18s %d in %.1f s" % (what, n, done[what]))
    print("converged: %.1f s after start; RSS %.1f MiB; CPU %.1f s" % (converged, rss_converged, cpu_converged))
    time.sleep(10)
    print("after 10 quiet seconds: RSS %.1f MiB, peak %.1f MiB; CPU %.1f s (%.2f s while quiet)" % (
        status("VmRSS"), status("VmHWM"), cpu(), cpu() - cpu_converged))
    metrics = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % port, timeout=5).read().decode()
    requests = sum(float(l.rsplit(" ", 1)[1]) for l in metrics.splitlines()
                   if l.startswith("semaphore_service_mirror_kube_http_request_total{"))
    print("API requests (both clusters): %d" % requests)
    # One endpoint of one remote slice changes: time to both local copies.
    changed = slice_of(n // 2, 44)
    t = time.time()
    call(remote, "PUT", "/apis/discovery.k8s.io/v1/namespaces/apps/endpointslices/svc-%d-x1" % (n // 2), changed)
    want = changed["endpoints"][0]["addresses"][0]
    copies = ["r-apps-svc-%d-x1" % (n // 2), "gl-svc-%d-x1" % (n // 2)]
    seen = set()
    while len(seen) < 2 and time.time() - t < 30:
        for name in copies:
            s = call(local, "GET", "/apis/discovery.k8s.io/v1/namespaces/mirror/endpointslices/" + name)
            if s["endpoints"][0]["addresses"][0] == want:
                seen.add(name)
        time.sleep(0.005)
    print("one endpoint changed: both local copies in %.0f ms" % ((time.time() - t) * 1000) if len(seen) == 2
          else "one endpoint changed: not mirrored within 30 s")
finally:
    proc.terminate()
    proc.wait()
PY
