# The seed's two-cluster scenario, shared by the e2e test and the demo. Sourced after
# lib.sh. Cluster aws (pods 10.2.0.0/16) and gcp (pods 10.4.0.0/16), two nodes each
# (NODES may name a third: aws3, gcp3), each cluster with its own fake API server; every
# node runs the real agent in run mode, in its own network namespace and its own mount
# namespace (so each node has a private /var/run/wireguard, as separate hosts would);
# every node has a "pod" behind a veth. Set before clusters_up:
#   MESH=1        every agent also meshes its own cluster (a remote named after it)
#   DUAL_STACK=1  nodes get an IPv6 pod CIDR too (fd00:<c>:<n>::/64), pods an IPv6 address,
#                 and pod subnets are "10.x.0.0/16,fd00:x::/32"
#   NAT_NODE=gcp3 that node sits behind a masquerading router (192.168.240.9); its
#                 InternalIP is 172.16.9.2, which the other cluster cannot reach
#   RESYNC=30s    every remote's resyncPeriod
#   GATEWAY_NODES="aws1 gcp1"  nodes labelled semaphore.uw.io/gateway=true
#   TOPOLOGY_aws=gateway       aws's agents reach gcp through an elected gateway (and
#                 TOPOLOGY_gcp likewise)
#   FORWARD_DROP="aws1"  those nodes' iptables FORWARD policy is DROP (as Docker sets it),
#                 through iptables-nft, or iptables-legacy for those also in
#                 FORWARD_DROP_LEGACY (hosts of either kind)
#   CNI_ROUTES=1  each node routes the pod CIDRs of the other nodes of its cluster via
#                 their node addresses, as a CNI would (gateway mode forwards over them)
#   CLUSTERS="aws gcp azr"  a third cluster, azr (pods 10.6.0.0/16, nodes azr1 and azr2);
#                 every agent then has a remote per other cluster (the first on port
#                 51820, the second on 51822)

: "${FAKE_APISERVER_BIN:?set FAKE_APISERVER_BIN to the fake-apiserver binary}"
NS_NET="swg-$RID-net"
NODES=${NODES:-"aws1 aws2 gcp1 gcp2"}
CLUSTERS=${CLUSTERS:-"aws gcp"}
MESH=${MESH:-}
DUAL_STACK=${DUAL_STACK:-}
NAT_NODE=${NAT_NODE:-}
RESYNC=${RESYNC:-30s}
GATEWAY_NODES=${GATEWAY_NODES:-}
CNI_ROUTES=${CNI_ROUTES:-}
FORWARD_DROP=${FORWARD_DROP:-}
FORWARD_DROP_LEGACY=${FORWARD_DROP_LEGACY:-}
NAT_PUBLIC_IP=192.168.240.9
TOKEN_aws="aws-token-$RID"
TOKEN_gcp="gcp-token-$RID"
TOKEN_azr="azr-token-$RID"
API_aws="http://192.168.240.100:6443"
API_gcp="http://192.168.240.101:6443"
API_azr="http://192.168.240.102:6443"

node_ip() {
    [ "$1" = "$NAT_NODE" ] && { echo 172.16.9.2; return; }
    case $1 in aws1) echo 192.168.240.1 ;; aws2) echo 192.168.240.2 ;; gcp1) echo 192.168.240.3 ;; gcp2) echo 192.168.240.4 ;; gcp3) echo 192.168.240.5 ;; aws3) echo 192.168.240.6 ;; azr1) echo 192.168.240.7 ;; azr2) echo 192.168.240.8 ;; esac
}
pod_cidr() { case $1 in aws1) echo 10.2.1.0/24 ;; aws2) echo 10.2.2.0/24 ;; aws3) echo 10.2.3.0/24 ;; gcp1) echo 10.4.1.0/24 ;; gcp2) echo 10.4.2.0/24 ;; gcp3) echo 10.4.3.0/24 ;; azr1) echo 10.6.1.0/24 ;; azr2) echo 10.6.2.0/24 ;; esac; }
pod_ip() { local c; c=$(pod_cidr "$1"); echo "${c%.0/24}.10"; }
# pod_cidr6 NODE: 10.<c>.<n>.0/24 -> fd00:<c>:<n>::/64; pod_ip6: its ::10.
pod_cidr6() { local c; c=$(pod_cidr "$1"); c=${c%.0/24}; c=${c#10.}; echo "fd00:${c/./:}::/64"; }
pod_ip6() { local c; c=$(pod_cidr6 "$1"); echo "${c%/64}10"; }
cluster_of() { echo "${1%[0-9]}"; }
other_cluster() { [ "$(cluster_of "$1")" = aws ] && echo gcp || echo aws; }
# other_clusters NODE: every other cluster of CLUSTERS, in order.
other_clusters() {
    local c
    for c in $CLUSTERS; do [ "$c" != "$(cluster_of "$1")" ] && echo "$c"; done
}
# cluster_subnet CLUSTER: its pod subnet as the config names it.
cluster_subnet() {
    local n
    case $1 in aws) n=2 ;; gcp) n=4 ;; azr) n=6 ;; esac
    if [ -n "$DUAL_STACK" ]; then echo "10.$n.0.0/16,fd00:$n::/32"; else echo "10.$n.0.0/16"; fi
}
node_ns() { echo "swg-$RID-$1"; }
pod_ns() { echo "swg-$RID-$1p"; }
# drop_backend NODE: the iptables that sets NODE's FORWARD policy of DROP.
drop_backend() { case " $FORWARD_DROP_LEGACY " in *" $1 "*) echo iptables-legacy ;; *) echo iptables-nft ;; esac; }

# node_json NAME: a Node object as kubelet would have registered it.
node_json() {
    local cidrs="\"$(pod_cidr "$1")\"" gw=""
    [ -n "$DUAL_STACK" ] && cidrs="$cidrs,\"$(pod_cidr6 "$1")\""
    case " $GATEWAY_NODES " in *" $1 "*) gw=',"semaphore.uw.io/gateway":"true"' ;; esac
    printf '{"apiVersion":"v1","kind":"Node","metadata":{"name":"%s","labels":{"kubernetes.io/hostname":"%s"%s}},"spec":{"podCIDR":"%s","podCIDRs":[%s]},"status":{"addresses":[{"type":"InternalIP","address":"%s"},{"type":"Hostname","address":"%s"}]}}' \
        "$1" "$1" "$gw" "$(pod_cidr "$1")" "$cidrs" "$(node_ip "$1")" "$1"
}

# api CLUSTER METHOD PATH [BODY]: a request to a cluster's fake API server (with its token).
api() {
    local c=$1 method=$2 path=$3 body=${4:-}
    local url tok
    url=$(eval echo "\$API_$c")
    tok=$(eval echo "\$TOKEN_$c")
    ip netns exec "$NS_NET" python3 - "$method" "$url$path" "$tok" "$body" <<'PY'
import sys, urllib.request
method, url, tok, body = sys.argv[1:5]
req = urllib.request.Request(url, method=method, data=body.encode() if body else None)
req.add_header("Authorization", "Bearer " + tok)
if body:
    req.add_header("Content-Type", "application/merge-patch+json" if method == "PATCH" else "application/json")
try:
    print(urllib.request.urlopen(req, timeout=5).read().decode())
except urllib.error.HTTPError as e:
    print(e.read().decode()); sys.exit(1)
PY
}

# annotation CLUSTER NODE KEY: one annotation of a node, or nothing.
annotation() {
    api "$1" GET "/api/v1/nodes/$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"].get("annotations",{}).get(sys.argv[1],""))' "$3"
}

kubeconfig() {
    local c=$1 url tok
    url=$(eval echo "\$API_$c")
    tok=$(eval echo "\$TOKEN_$c")
    cat <<KC
apiVersion: v1
kind: Config
clusters:
- name: $c
  cluster:
    server: $url
users:
- name: agent
  user:
    token: $tok
contexts:
- name: $c
  context:
    cluster: $c
    user: agent
current-context: $c
KC
}

# agent_config NODE: the seed's config style, for a node of any cluster: a remote per
# other cluster (ports 51820, 51822). A test may add remotes for one node with
# EXTRA_REMOTES_<node> (JSON objects, comma first), and fields to its remotes with
# REMOTE_EXTRA_<node> (comma first). With MESH, the mesh of its own cluster: a remote
# named after the local cluster, no access fields (the local cluster's kubeconfig is
# used), port 51821.
agent_config() {
    local local_c remote_c mesh="" topology remotes="" port=51820
    local_c=$(cluster_of "$1")
    topology=$(eval echo "\${TOPOLOGY_$local_c:-node}")
    for remote_c in $(other_clusters "$1"); do
        [ -n "$remotes" ] && remotes="$remotes,"
        remotes="$remotes
    { \"name\": \"$remote_c\", \"kubeConfigPath\": \"$TMP/$remote_c.kubeconfig\",
      \"podSubnet\": \"$(cluster_subnet "$remote_c")\", \"wgDeviceMTU\": 1420, \"wgListenPort\": $port, \"resyncPeriod\": \"$RESYNC\",
      \"topology\": \"$topology\"
      $(eval echo "\${REMOTE_EXTRA_$1:-}") }"
        port=$((port + 2))
    done
    [ -n "$MESH" ] && mesh=", { \"name\": \"$local_c\", \"podSubnet\": \"$(cluster_subnet "$local_c")\", \"wgListenPort\": 51821, \"resyncPeriod\": \"$RESYNC\" }"
    cat <<CFG
{
  "local": { "name": "$local_c", "kubeConfigPath": "$TMP/$local_c.kubeconfig" },
  "remotes": [$remotes
      $mesh
      $(eval echo "\${EXTRA_REMOTES_$1:-}")
  ]
}
CFG
}

# in_node NODE CMD...: run CMD in the node's network and mount namespace view.
in_node() {
    local n=$1
    shift
    ip netns exec "$(node_ns "$n")" unshare -m sh -c 'mount --bind "$0" /var/run/wireguard && exec "$@"' "$TMP/$n/run" "$@"
}

# start_agent NODE [no-tun]: the real binary in run mode ("no-tun": in a mount namespace
# where /dev/net/tun is /dev/null, so that it cannot open a TUN device), with the
# variables in AGENT_ENV and AGENT_ENV_<node> ("NAME=value ...") if set.
start_agent() {
    local n=$1 hide=/dev/null
    [ "${2:-}" = no-tun ] && hide=/dev/net/tun
    mkdir -p "$TMP/$n/run" "$TMP/$n/keys"
    agent_config "$n" >"$TMP/$n/config.json"
    # Not through in_node: $! must be the agent itself (each step execs the next).
    ip netns exec "$(node_ns "$n")" unshare -m sh -c 'mount --bind "$0" /var/run/wireguard && mount --bind /dev/null "$1" && shift && exec "$@"' "$TMP/$n/run" "$hide" \
        env SWG_NODE_NAME="$n" ${AGENT_ENV:-} $(eval echo "\${AGENT_ENV_$n:-}") "$SWG_BIN" -clusters-config "$TMP/$n/config.json" \
        -wg-key-path "$TMP/$n/keys" -listen-address 127.0.0.1:7773 -log-level debug >>"$TMP/$n/agent.log" 2>&1 &
    _pids+=("$!")
    eval "AGENT_PID_$n=$!"
}

stop_agent() {
    local pid
    pid=$(eval echo "\$AGENT_PID_$1")
    kill -TERM "$pid" 2>/dev/null
    # The agent gives each task up to 5 s to end; one slow API request must not fail a test.
    for _ in $(seq 120); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    fail "agent on $1 did not stop within 12 s of SIGTERM"
}

# http_get NODE PATH: the agent's HTTP endpoint; prints "CODE BODY".
http_get() {
    ip netns exec "$(node_ns "$1")" python3 - "$2" <<'PY'
import sys, urllib.request
try:
    r = urllib.request.urlopen("http://127.0.0.1:7773" + sys.argv[1], timeout=3)
    print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
except Exception as e:
    print(0, e)
PY
}

# wait_for SECONDS DESCRIPTION CMD...: poll until CMD succeeds.
wait_for() {
    local secs=$1 what=$2
    shift 2
    local i
    for i in $(seq $((secs * 5))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    fail "timed out after ${secs}s waiting for: $what"
}

ready() { [ "$(http_get "$1" /readyz | cut -d' ' -f1)" = 200 ]; }

# nat_router_up NODE_NS: the node behind a masquerading router (its own namespace, on the
# bridge as $NAT_PUBLIC_IP); the node is 172.16.9.2 with the router as default gateway.
nat_router_up() {
    local ns=$1 nat="swg-$RID-nat"
    new_ns "$nat"
    ip link add "u${RID}nat" type veth peer name eth0 netns "$nat"
    ip link set "u${RID}nat" netns "$NS_NET"
    ip -n "$NS_NET" link set "u${RID}nat" master br0 up
    ip -n "$nat" addr add "$NAT_PUBLIC_IP/24" dev eth0
    ip -n "$nat" link set eth0 up
    ip link add "n${RID}in" netns "$nat" type veth peer name eth0 netns "$ns"
    ip -n "$nat" addr add 172.16.9.1/24 dev "n${RID}in"
    ip -n "$nat" link set "n${RID}in" up
    ip -n "$ns" addr add 172.16.9.2/24 dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via 172.16.9.1
    ip netns exec "$nat" sysctl -qw net.ipv4.ip_forward=1
    ip netns exec "$nat" iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE
}

# ping_burst NODE PEER COUNT OUT: COUNT pings 10 ms apart from NODE's pod to PEER's pod,
# each reply time-stamped (-D), into OUT.
ping_burst() { ip netns exec "$(pod_ns "$1")" ping -D -i 0.01 -c "$3" -W 1 "$(pod_ip "$2")" >"$4" 2>&1; }

# take_over NODE: starts a second agent on NODE and waits for the first to exit 0.
take_over() {
    local n=$1 old rc
    old=$(eval echo "\$AGENT_PID_$n")
    start_agent "$n"
    for _ in $(seq 100); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$old" 2>/dev/null && fail "the old agent on $n still runs 10 s after its successor started"
    wait "$old"
    rc=$?
    [ "$rc" = 0 ] || fail "the old agent on $n exited with $rc"
}

# takeover_under_pings NODE FROM TO WHAT: a second agent on NODE takes over while FROM's
# pod pings TO's pod every 10 ms (300 pings, into $TMP/ping-WHAT.txt); at most
# UPGRADE_MAX_LOST (2) may be lost. WHAT names the takeover in the log line.
takeover_under_pings() {
    local node=$1 from=$2 to=$3 what=$4 pinger l
    ping_burst "$from" "$to" 300 "$TMP/ping-$what.txt" &
    pinger=$!
    sleep 0.8
    take_over "$node"
    wait "$pinger"
    l=$(lost "$TMP/ping-$what.txt")
    log "$what ($node): $l of 300 pings lost, longest gap between replies $(longest_gap "$TMP/ping-$what.txt") ms"
    [ -n "$l" ] && [ "$l" -le "${UPGRADE_MAX_LOST:-2}" ] || fail "$what lost $l pings"
}

peer_count() { in_node "$1" wg show "wireguard.$(other_cluster "$1")" peers | wc -l; }

# clusters_up: the whole topology, both API servers, all agents, all pods.
clusters_up() {
    mkdir -p /var/run/wireguard
    new_ns "$NS_NET"
    ip -n "$NS_NET" link add br0 type bridge
    ip -n "$NS_NET" addr add 192.168.240.100/24 dev br0
    ip -n "$NS_NET" addr add 192.168.240.101/24 dev br0
    ip -n "$NS_NET" addr add 192.168.240.102/24 dev br0
    ip -n "$NS_NET" link set br0 up
    local c n
    for c in $CLUSTERS; do
        kubeconfig "$c" >"$TMP/$c.kubeconfig"
        local nodes="[" sep=""
        for n in $NODES; do
            [ "$(cluster_of "$n")" = "$c" ] || continue
            nodes="$nodes$sep$(node_json "$n")"
            sep=","
        done
        echo "$nodes]" >"$TMP/$c-nodes.json"
        local addr
        addr=$(eval echo "\$API_$c")
        addr=${addr#http://}
        ip netns exec "$NS_NET" "$FAKE_APISERVER_BIN" --listen "$addr" --token "$(eval echo "\$TOKEN_$c")" \
            --nodes "$TMP/$c-nodes.json" >"$TMP/api-$c.log" 2>&1 &
        _pids+=("$!")
        eval "API_PID_$c=$!"
    done
    for n in $NODES; do
        local ns pns
        ns=$(node_ns "$n")
        pns=$(pod_ns "$n")
        new_ns "$ns"
        new_ns "$pns"
        if [ "$n" = "$NAT_NODE" ]; then
            nat_router_up "$ns"
        else
            ip link add "u$RID$n" type veth peer name eth0 netns "$ns"
            ip link set "u$RID$n" netns "$NS_NET"
            ip -n "$NS_NET" link set "u$RID$n" master br0 up
            ip -n "$ns" addr add "$(node_ip "$n")/24" dev eth0
            ip -n "$ns" link set eth0 up
        fi
        ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
        ip link add "p$RID$n" netns "$ns" type veth peer name eth0 netns "$pns"
        local gw
        gw=$(pod_ip "$n" | sed 's/\.10$/.1/')
        ip -n "$ns" addr add "$gw/24" dev "p$RID$n"
        ip -n "$ns" link set "p$RID$n" up
        ip -n "$pns" addr add "$(pod_ip "$n")/24" dev eth0
        ip -n "$pns" link set eth0 up
        ip -n "$pns" route add default via "$gw"
        case " $FORWARD_DROP " in *" $n "*) ip netns exec "$ns" "$(drop_backend "$n")" -P FORWARD DROP ;; esac
        if [ -n "$CNI_ROUTES" ]; then
            local other
            for other in $NODES; do
                [ "$other" != "$n" ] && [ "$(cluster_of "$other")" = "$(cluster_of "$n")" ] &&
                    ip -n "$ns" route add "$(pod_cidr "$other")" via "$(node_ip "$other")"
            done
        fi
        if [ -n "$DUAL_STACK" ]; then
            ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.forwarding=1
            ip -n "$ns" addr add "$(pod_ip6 "$n" | sed 's/::10$/::1/')/64" dev "p$RID$n" nodad
            ip -n "$pns" addr add "$(pod_ip6 "$n")/64" dev eth0 nodad
            ip -n "$pns" -6 route add default via "$(pod_ip6 "$n" | sed 's/::10$/::1/')"
        fi
    done
    for c in $CLUSTERS; do wait_for 10 "fake API server of $c" api "$c" GET /api/v1/nodes; done
    for n in $NODES; do start_agent "$n"; done
    for n in $NODES; do
        wait_for 30 "$n /readyz" ready "$n"
    done
}
