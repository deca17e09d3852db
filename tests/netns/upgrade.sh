# Upgrades in place: a second agent started on a node while one runs (a DaemonSet surge
# pod) takes the running one's tunnels over. Topology in clusters-lib.sh.
# shellcheck disable=SC2154

metric() { http_get "$1" /metrics | awk -v m="$2" 'index($0, m) == 1 {print $NF}'; }
pod_ping() { ip netns exec "$(pod_ns "$1")" ping -c 1 -W 2 "$(pod_ip "$2")" >/dev/null 2>&1; }

# Three takeovers in a row (two on the sending side, one on the answering side) under a
# ping every 10 ms and an iperf3 TCP stream: at most 2 pings lost per takeover
# (UPGRADE_MAX_LOST; the test suite allows its debug build 3, see scripts/test.sh), no
# half-second of the stream at zero, the same keys afterwards. Then, for comparison, the
# blackout of `kill -9` and a restart.
test_an_upgrade_hands_the_tunnels_over_without_loss() {
    # shellcheck source=clusters-lib.sh
    source "$(dirname "${BASH_SOURCE[0]}")/clusters-lib.sh"
    clusters_up
    wait_for 10 "pod aws1 -> pod gcp1" pod_ping aws1 gcp1
    local key_before
    key_before=$(in_node aws1 wg show wireguard.gcp public-key)
    ip netns exec "$(pod_ns gcp1)" iperf3 -s -1 -B "$(pod_ip gcp1)" >"$TMP/iperf-s.log" 2>&1 &
    _pids+=("$!")
    wait_for 5 "iperf3 server" ip netns exec "$(pod_ns gcp1)" sh -c "ss -ltn | grep -q 5201"
    # The stream is capped (UPGRADE_IPERF_RATE, default 200M) so that on a 2-core machine
    # running four agents it does not starve the agents of CPU: the test is about the
    # takeover. benches/upgrade.sh runs it uncapped on a release build.
    ip netns exec "$(pod_ns aws1)" timeout 40 iperf3 -c "$(pod_ip gcp1)" -t 14 -i 0.5 -b "${UPGRADE_IPERF_RATE:-200M}" -J >"$TMP/iperf.json" 2>&1 &
    local iperf=$!
    _pids+=("$iperf")
    sleep 1
    local i node
    for i in 1 2 3; do
        node=aws1
        [ "$i" = 2 ] && node=gcp1
        takeover_under_pings "$node" aws1 gcp1 "takeover-$i"
        sleep 0.5
    done
    wait "$iperf" || { cat "$TMP/iperf.json" >&2; fail "iperf3 failed during the takeovers"; }
    python3 - "$TMP/iperf.json" <<'PY' || fail "iperf3 had a half-second at zero"
import json, sys
r = json.load(open(sys.argv[1]))
rates = [i["sum"]["bits_per_second"] / 1e9 for i in r["intervals"]]
print("    iperf3 during the takeovers: %d intervals of 0.5 s, slowest %.2f Gbit/s, mean %.2f Gbit/s"
      % (len(rates), min(rates), sum(rates) / len(rates)), file=sys.stderr)
sys.exit(0 if min(rates) > 0 else 1)
PY
    [ "$(grep -c 'took over; the old agent exits' "$TMP/aws1/agent.log")" = 2 ] || fail "aws1's log does not show two takeovers"
    [ "$(in_node aws1 wg show wireguard.gcp public-key)" = "$key_before" ] || fail "the public key changed"
    [ "$(in_node aws1 wg show wireguard.gcp peers | wc -l)" = 2 ] || fail "peers lost"
    [ "$(metric aws1 'semaphore_wg_took_over ')" = 1 ] || fail "took_over metric"

    # For comparison: a crash and a restart.
    ping_burst aws1 gcp1 300 "$TMP/ping-kill.txt" &
    local pinger=$!
    sleep 0.8
    kill -9 "$AGENT_PID_aws1"
    wait "$AGENT_PID_aws1" 2>/dev/null
    start_agent aws1
    wait "$pinger"
    log "kill -9 and restart: $(lost "$TMP/ping-kill.txt") of 300 pings lost, longest gap $(longest_gap "$TMP/ping-kill.txt") ms"
    wait_for 10 "pod aws1 -> pod gcp1 after the restart" pod_ping aws1 gcp1
}

# A successor that cannot open a TUN device fails half-way: it exits non-zero saying why,
# the old agent takes its tunnel back and serves on, and a later takeover works.
test_a_failed_takeover_leaves_the_old_agent_serving() {
    # shellcheck source=clusters-lib.sh
    source "$(dirname "${BASH_SOURCE[0]}")/clusters-lib.sh"
    clusters_up
    wait_for 10 "pod aws1 -> pod gcp1" pod_ping aws1 gcp1
    local old=$AGENT_PID_aws1 rc
    start_agent aws1 no-tun
    local successor=$AGENT_PID_aws1
    wait "$successor"
    rc=$?
    [ "$rc" != 0 ] || fail "the failing successor exited 0"
    grep -q "the takeover failed; the running agent serves on" "$TMP/aws1/agent.log" || fail "no message saying why"
    kill -0 "$old" 2>/dev/null || fail "the old agent is gone"
    wait_for 5 "pod aws1 -> pod gcp1 through the old agent" pod_ping aws1 gcp1
    [ "$(metric aws1 semaphore_wg_takeover_failures_total)" = 1 ] || fail "failure metric: $(metric aws1 semaphore_wg_takeover_failures_total)"
    [ "$(http_get aws1 /healthz | cut -d' ' -f1)" = 200 ] || fail "healthz"
    eval "AGENT_PID_aws1=$old"
    take_over aws1
    wait_for 5 "pod aws1 -> pod gcp1 after a good takeover" pod_ping aws1 gcp1
}

# In a pod (SWG_WAIT_AFTER_HANDOVER, as the DaemonSet sets it) the old agent stays idle
# after handing over, holding nothing: a successor that restarts binds its ports again.
# The old one exits 0 on SIGTERM (its pod's deletion).
test_in_a_pod_the_old_agent_waits_for_its_deletion() {
    # shellcheck source=clusters-lib.sh
    source "$(dirname "${BASH_SOURCE[0]}")/clusters-lib.sh"
    clusters_up
    stop_agent aws1
    AGENT_ENV="SWG_WAIT_AFTER_HANDOVER=true" start_agent aws1
    wait_for 30 "aws1 /readyz" ready aws1
    local old=$AGENT_PID_aws1
    start_agent aws1
    local successor=$AGENT_PID_aws1
    wait_for 10 "the old agent idles" grep -q "idle until SIGTERM" "$TMP/aws1/agent.log"
    kill -0 "$old" 2>/dev/null || fail "the old agent exited"
    wait_for 5 "pod aws1 -> pod gcp1 through the successor" pod_ping aws1 gcp1
    [ "$(metric aws1 'semaphore_wg_took_over ')" = 1 ] || fail "the successor does not serve HTTP"
    # The successor restarts (a crash, say): the idle old agent holds no port.
    stop_agent aws1
    start_agent aws1
    wait_for 30 "aws1 /readyz after the successor's restart" ready aws1
    wait_for 5 "pod aws1 -> pod gcp1 again" pod_ping aws1 gcp1
    kill -0 "$old" 2>/dev/null || fail "the old agent exited"
    kill -TERM "$old"
    wait "$old" || fail "the idle old agent exited with $? on SIGTERM"
    [ "$successor" != "$AGENT_PID_aws1" ] || fail "bookkeeping"
}
