# The agent when things break under it: its device deleted, one of its remotes unable to
# come up. Each function is one test (topology in clusters-lib.sh).
# shellcheck disable=SC2154

pod_ping() { ip netns exec "$(pod_ns "$1")" ping -c 1 -W 2 "$(pod_ip "$2")" >/dev/null 2>&1; }
has_peers() { [ "$(peer_count "$1")" = "$2" ]; }
metric() { http_get "$1" /metrics | grep -F "$2" | awk '{print $NF}'; }
code() { http_get "$1" "$2" | cut -d' ' -f1; }

# `ip link del wireguard.gcp` under a running agent: the device, route and tunnel are
# rebuilt from the saved peers within seconds, and traffic flows again.
test_a_deleted_device_is_rebuilt() {
    # shellcheck source=clusters-lib.sh
    source "$(dirname "${BASH_SOURCE[0]}")/clusters-lib.sh"
    clusters_up
    wait_for 10 "pod aws1 -> pod gcp1" pod_ping aws1 gcp1
    ip -n "$(node_ns aws1)" link del wireguard.gcp || fail "link del"
    local t0
    t0=$(date +%s%N)
    wait_for 10 "wireguard.gcp back with its peers" has_peers aws1 2
    wait_for 10 "the route back" sh -c "ip -n $(node_ns aws1) route show 10.4.0.0/16 | grep -q wireguard.gcp"
    wait_for 10 "pod aws1 -> pod gcp1 again" pod_ping aws1 gcp1
    log "traffic flowed again $(( ($(date +%s%N) - t0) / 1000000 )) ms after the device was deleted"
    grep -q "packet path stopped" "$TMP/aws1/agent.log" || fail "no log line about the stopped tunnel"
    [ "$(code aws1 /healthz)" = 200 ] || fail "healthz: $(http_get aws1 /healthz)"
    [ "$(metric aws1 'semaphore_wg_remote_up{remote="gcp"}')" = 1 ] || fail "remote_up"
}

# aws1 gets a second remote whose UDP port is taken and whose API server does not
# answer: gcp keeps working, /readyz names the broken one, the process stays, and once
# the port is free the remote comes up by itself.
test_a_remote_that_cannot_come_up_does_not_stop_the_others() {
    # shellcheck source=clusters-lib.sh
    source "$(dirname "${BASH_SOURCE[0]}")/clusters-lib.sh"
    clusters_up
    stop_agent aws1
    # shellcheck disable=SC2034
    EXTRA_REMOTES_aws1=', { "name": "azr", "remoteAPIURL": "http://192.168.240.250:6443", "remoteCAURL": "http://192.168.240.250/ca", "remoteSATokenPath": "/nonexistent", "podSubnet": "10.6.0.0/16", "wgListenPort": 51821 }'
    # Another program holds aws1's port 51821.
    ip netns exec "$(node_ns aws1)" python3 -c 'import socket,time; s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.bind(("::", 51821)); time.sleep(60)' &
    local blocker=$!
    _pids+=("$blocker")
    sleep 0.3
    start_agent aws1
    wait_for 30 "gcp works on aws1" pod_ping aws1 gcp1
    wait_for 10 "readyz names azr" sh -c "ip netns exec $(node_ns aws1) python3 -c 'import urllib.request as u
try: u.urlopen(\"http://127.0.0.1:7773/readyz\")
except Exception as e: print(e.read().decode())' | grep -q wireguard.azr"
    [ "$(code aws1 /healthz)" = 200 ] || fail "healthz: $(http_get aws1 /healthz)"
    [ "$(metric aws1 'semaphore_wg_remote_up{remote="azr"}')" = 0 ] || fail "azr up?"
    [ "$(metric aws1 'semaphore_wg_remote_up{remote="gcp"}')" = 1 ] || fail "gcp not up"
    grep -q "cannot bring the remote's tunnel up.*wireguard.azr\|wireguard.azr.*cannot bring" "$TMP/aws1/agent.log" ||
        grep -q 'device=wireguard.azr.*port 51821\|51821.*device=wireguard.azr' "$TMP/aws1/agent.log" || fail "no log line naming azr and its port"
    kill "$blocker"
    # Its tunnel comes up once its port is free (its API server still does not answer).
    wait_for 40 "azr's tunnel comes up once its port is free" grep -q "device up cluster=azr" "$TMP/aws1/agent.log"
    pod_ping aws1 gcp1 || fail "gcp stopped working"
}

# A remote whose interface is named by `wgDeviceName`: traffic goes through that device,
# and the key file and the annotations keep the cluster's name (the public key does not
# change).
test_a_remote_with_its_own_device_name() {
    # shellcheck source=clusters-lib.sh
    source "$(dirname "${BASH_SOURCE[0]}")/clusters-lib.sh"
    clusters_up
    wait_for 10 "pod aws1 -> pod gcp1" pod_ping aws1 gcp1
    local key_before
    key_before=$(in_node aws1 wg show wireguard.gcp public-key)
    stop_agent aws1
    # Renaming leaves the old persistent device behind: the operator deletes it.
    ip -n "$(node_ns aws1)" link del wireguard.gcp
    # shellcheck disable=SC2034
    REMOTE_EXTRA_aws1=', "wgDeviceName": "wg-gcp"'
    start_agent aws1
    wait_for 30 "aws1 /readyz" ready aws1
    wait_for 10 "pod aws1 -> pod gcp1 through wg-gcp" pod_ping aws1 gcp1
    ip -n "$(node_ns aws1)" route show 10.4.0.0/16 | grep -q "dev wg-gcp" || fail "no route through wg-gcp"
    [ "$(in_node aws1 wg show wg-gcp public-key)" = "$key_before" ] || fail "the key changed"
    [ -f "$TMP/aws1/keys/wireguard.gcp.key" ] || fail "the key file was renamed"
    [ -f "$TMP/aws1/keys/wireguard.gcp.peers.json" ] || fail "the saved peers were renamed"
    [ "$(metric aws1 'semaphore_wg_remote_up{remote="gcp"}')" = 1 ] || fail "remote_up"
    http_get aws1 /metrics >"$TMP/metrics.txt"
    grep -q 'semaphore_wg_device_info{device="wg-gcp"' "$TMP/metrics.txt" || fail "metrics name the device"
}
