# The service mirror end to end: a local cluster (aws) and two remotes (gcp, azr), the
# wireguard agents running on every node, remote pods serving HTTP behind labelled
# Services. The real binary's `mirror` subcommand (in the API servers' namespace, as a
# Deployment's pod would reach them) mirrors them into aws; a local pod reaches every
# address the mirrored and global EndpointSlices list, through the tunnels (no kube-proxy
# here, so the addresses are dialled directly). Then a remote endpoint goes, a remote API
# server goes away (what is mirrored stays and still carries traffic), and a remote
# Service goes.
# shellcheck disable=SC2154

MIRROR_NS=sys-semaphore

# serve NODE: its pod answers GET /who with the node's name on port 8080.
serve() {
    mkdir -p "$TMP/www-$1"
    echo "$1" >"$TMP/www-$1/who"
    ip netns exec "$(pod_ns "$1")" python3 -m http.server 8080 --bind "$(pod_ip "$1")" \
        --directory "$TMP/www-$1" >"$TMP/www-$1.log" 2>&1 &
    _pids+=("$!")
}

# fetch_who FROM ADDRESS PORT: what the pod of FROM gets from ADDRESS:PORT/who.
fetch_who() {
    ip netns exec "$(pod_ns "$1")" python3 -c '
import sys, urllib.request
print(urllib.request.urlopen("http://%s:%s/who" % (sys.argv[1], sys.argv[2]), timeout=3).read().decode().strip())' "$2" "$3"
}

# service_json NAME LABELS: a ClusterIP Service with port 80 -> 8080.
service_json() {
    printf '{"apiVersion":"v1","kind":"Service","metadata":{"name":"%s","namespace":"foo","labels":%s},"spec":{"type":"ClusterIP","ports":[{"name":"http","port":80,"targetPort":8080,"protocol":"TCP"}]}}' "$1" "$2"
}

# slice_json NAME SERVICE LABELS NODE...: an EndpointSlice of SERVICE with the NODEs' pods.
slice_json() {
    local name=$1 svc=$2 labels=$3 eps="" n
    shift 3
    for n in "$@"; do
        [ -n "$eps" ] && eps="$eps,"
        eps="$eps{\"addresses\":[\"$(pod_ip "$n")\"],\"conditions\":{\"ready\":true},\"nodeName\":\"$n\"}"
    done
    printf '{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"%s","namespace":"foo","labels":%s},"addressType":"IPv4","endpoints":[%s],"ports":[{"name":"http","port":8080,"protocol":"TCP"}]}' \
        "$name" "$(echo "$labels" | sed "s/}\$/,\"kubernetes.io\/service-name\":\"$svc\"}/")" "$eps"
}

# endpoints_of SERVICE: "address:port" of every endpoint of the local mirror namespace's
# slices of SERVICE, sorted, one line.
endpoints_of() {
    api aws GET "/apis/discovery.k8s.io/v1/namespaces/$MIRROR_NS/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3D$1" |
        python3 -c '
import json, sys
out = []
for s in json.load(sys.stdin)["items"]:
    port = s["ports"][0]["port"]
    for e in s.get("endpoints") or []:
        out += ["%s:%s" % (a, port) for a in e["addresses"]]
print(" ".join(sorted(out)))'
}

endpoints_are() { [ "$(endpoints_of "$1")" = "$2" ]; }
local_service_exists() { api aws GET "/api/v1/namespaces/$MIRROR_NS/services/$1" >/dev/null; }
local_service_gone() { ! local_service_exists "$1"; }
clusters_annotation() {
    api aws GET "/api/v1/namespaces/$MIRROR_NS/services/gl-foo-73736d-web" |
        python3 -c 'import json,sys; print(",".join(sorted(json.load(sys.stdin)["metadata"]["annotations"]["global-svc-clusters"].split(","))))'
}
clusters_are() { [ "$(clusters_annotation)" = "$1" ]; }

# every_endpoint_answers SERVICE: aws1's pod gets the right node's name from each address.
every_endpoint_answers() {
    local ep addr node n got
    for ep in $(endpoints_of "$1"); do
        addr=${ep%:*}
        node=""
        for n in $NODES; do [ "$(pod_ip "$n")" = "$addr" ] && node=$n; done
        [ -n "$node" ] || fail "$1 lists $addr, which is no pod"
        got=$(fetch_who aws1 "$addr" "${ep##*:}") || fail "aws1's pod cannot reach $ep of $1"
        [ "$got" = "$node" ] || fail "$ep of $1 answered $got, not $node"
    done
}

test_mirrored_and_global_services_are_reachable_through_the_tunnels() {
    CLUSTERS="aws gcp azr"
    NODES="aws1 aws2 gcp1 gcp2 azr1"
    CNI_ROUTES=1
    # shellcheck source=clusters-lib.sh
    source "$(dirname "${BASH_SOURCE[0]}")/clusters-lib.sh"
    clusters_up
    local c n
    for c in $CLUSTERS; do api "$c" POST /api/v1/namespaces '{"metadata":{"name":"foo"}}' >/dev/null || fail "namespace foo in $c"; done
    api aws POST /api/v1/namespaces "{\"metadata\":{\"name\":\"$MIRROR_NS\"}}" >/dev/null || fail "namespace $MIRROR_NS"
    for n in aws2 gcp1 gcp2 azr1; do serve "$n"; done
    # The remote Services (mirrored and global), and the local one (global only).
    local both='{"m":"true","g":"true"}'
    api gcp POST /api/v1/namespaces/foo/services "$(service_json web "$both")" >/dev/null || fail "gcp service"
    api gcp POST /apis/discovery.k8s.io/v1/namespaces/foo/endpointslices "$(slice_json web-g1 web "$both" gcp1 gcp2)" >/dev/null || fail "gcp slice"
    api azr POST /api/v1/namespaces/foo/services "$(service_json web "$both")" >/dev/null || fail "azr service"
    api azr POST /apis/discovery.k8s.io/v1/namespaces/foo/endpointslices "$(slice_json web-z1 web "$both" azr1)" >/dev/null || fail "azr slice"
    api aws POST /api/v1/namespaces/foo/services "$(service_json web '{"g":"true"}')" >/dev/null || fail "aws service"
    api aws POST /apis/discovery.k8s.io/v1/namespaces/foo/endpointslices "$(slice_json web-a1 web '{"g":"true"}' aws2)" >/dev/null || fail "aws slice"

    cat >"$TMP/mirror.json" <<CFG
{
  "global": { "mirrorSvcLabelSelector": "m=true", "globalSvcLabelSelector": "g=true",
              "globalSvcRoutingStrategyLabel": "r=local-first", "mirrorNamespace": "$MIRROR_NS",
              "serviceSync": true, "endpointSliceSync": true },
  "localCluster": { "name": "aws", "zones": ["z1"] },
  "remoteClusters": [
    { "name": "gcp", "kubeConfigPath": "$TMP/gcp.kubeconfig", "servicePrefix": "gcp", "resyncPeriod": "2s" },
    { "name": "azr", "kubeConfigPath": "$TMP/azr.kubeconfig", "servicePrefix": "azr" }
  ]
}
CFG
    ip netns exec "$NS_NET" "$SWG_BIN" mirror -config "$TMP/mirror.json" -kube-config "$TMP/aws.kubeconfig" \
        -listen-address 127.0.0.1:8080 >"$TMP/mirror.log" 2>&1 &
    _pids+=("$!")
    local mirror_pid=$!

    wait_for 20 "gcp's Service mirrored" local_service_exists gcp-foo-73736d-web
    wait_for 10 "azr's Service mirrored" local_service_exists azr-foo-73736d-web
    wait_for 10 "the global Service" local_service_exists gl-foo-73736d-web
    local g1 g2 z1 a2
    g1="$(pod_ip gcp1):8080" g2="$(pod_ip gcp2):8080" z1="$(pod_ip azr1):8080" a2="$(pod_ip aws2):8080"
    wait_for 10 "gcp's endpoints mirrored" endpoints_are gcp-foo-73736d-web "$g1 $g2"
    wait_for 10 "azr's endpoints mirrored" endpoints_are azr-foo-73736d-web "$z1"
    wait_for 10 "every cluster's endpoints in the global Service" endpoints_are gl-foo-73736d-web "$a2 $g1 $g2 $z1"
    wait_for 10 "the global Service names every cluster" clusters_are aws,azr,gcp
    # The tunnels carry a local pod to every endpoint (the first packets wait for handshakes).
    wait_for 20 "aws1's pod reaches gcp1's pod" fetch_who aws1 "$(pod_ip gcp1)" 8080
    wait_for 20 "aws1's pod reaches azr1's pod" fetch_who aws1 "$(pod_ip azr1)" 8080
    every_endpoint_answers gcp-foo-73736d-web
    every_endpoint_answers azr-foo-73736d-web
    every_endpoint_answers gl-foo-73736d-web
    ip netns exec "$NS_NET" python3 -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:8080/metrics").read().decode())' >"$TMP/mirror-metrics" ||
        fail "mirror /metrics"
    grep -q '^semaphore_service_mirror_kube_http_request_total{host="192.168.240.101:6443",code="200",method="GET"}' "$TMP/mirror-metrics" ||
        fail "no request counter for gcp's API server: $(grep kube_http "$TMP/mirror-metrics")"
    grep -q '^semaphore_service_mirror_kube_watcher_objects{watcher="gcp-serviceWatcher",kind="service",runner="mirror-gcp"} 1$' "$TMP/mirror-metrics" ||
        fail "gcp's service watcher series: $(grep gcp-serviceWatcher "$TMP/mirror-metrics")"
    grep -q '^semaphore_service_mirror_queue_adds_total{name="azr-global-service"} [1-9]' "$TMP/mirror-metrics" ||
        fail "azr's global service queue series: $(grep azr-global-service "$TMP/mirror-metrics")"

    # gcp2's endpoint goes: it leaves the mirrored and the global Service.
    api gcp PUT /apis/discovery.k8s.io/v1/namespaces/foo/endpointslices/web-g1 "$(slice_json web-g1 web "$both" gcp1)" >/dev/null ||
        fail "update gcp's slice"
    wait_for 10 "gcp2 leaves the mirrored endpoints" endpoints_are gcp-foo-73736d-web "$g1"
    wait_for 10 "gcp2 leaves the global endpoints" endpoints_are gl-foo-73736d-web "$a2 $g1 $z1"

    # azr's API server goes away: its mirrors stay, and still carry traffic.
    kill "$API_PID_azr"
    wait "$API_PID_azr" 2>/dev/null
    wait_for 10 "the mirror notices azr's outage" grep -q 'cluster.*azr.*watching the remote failed\|watching the remote failed.*azr' "$TMP/mirror.log"
    sleep 3
    local_service_exists azr-foo-73736d-web || fail "azr's mirror went with its API server"
    endpoints_are azr-foo-73736d-web "$z1" || fail "azr's endpoints during the outage: $(endpoints_of azr-foo-73736d-web)"
    endpoints_are gl-foo-73736d-web "$a2 $g1 $z1" || fail "global endpoints during the outage: $(endpoints_of gl-foo-73736d-web)"
    every_endpoint_answers azr-foo-73736d-web

    # gcp's Service goes (and its slice, as Kubernetes' garbage collector would do).
    api gcp DELETE /apis/discovery.k8s.io/v1/namespaces/foo/endpointslices/web-g1 >/dev/null || fail "delete gcp's slice"
    api gcp DELETE /api/v1/namespaces/foo/services/web >/dev/null || fail "delete gcp's service"
    wait_for 10 "gcp's mirror goes" local_service_gone gcp-foo-73736d-web
    wait_for 10 "gcp's mirrored endpoints go" endpoints_are gcp-foo-73736d-web ""
    wait_for 10 "gcp leaves the global Service" clusters_are aws,azr
    wait_for 10 "gcp's endpoints leave the global Service" endpoints_are gl-foo-73736d-web "$a2 $z1"
    every_endpoint_answers gl-foo-73736d-web
    kill -0 "$mirror_pid" || fail "the mirror died: $(tail -5 "$TMP/mirror.log")"
}
