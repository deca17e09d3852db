#!/usr/bin/env bash
# Runs the root-only network-namespace tests: `run.sh [FILTER]`.
# Each test runs in its own subshell with its own namespaces; a summary line closes.
set -u
here=$(cd "$(dirname "$0")" && pwd)
: "${SWG_BIN:?set SWG_BIN to the semaphore-wireguard binary}"
: "${FAKE_APISERVER_BIN:?set FAKE_APISERVER_BIN to the fake-apiserver binary}"
export SWG_BIN FAKE_APISERVER_BIN
[ "$(id -u)" = 0 ] || { echo "netns tests need root" >&2; exit 1; }
filter=${1:-}
passed=0 failed=0 failures=()
for file in "$here"/tunnel.sh "$here"/dataplane.sh "$here"/clusters.sh "$here"/agent.sh "$here"/topologies.sh "$here"/gateway.sh "$here"/mirror.sh "$here"/upgrade.sh; do
    for t in $(grep -o '^test_[a-z0-9_]*' "$file"); do
        [ -n "$filter" ] && [[ $t != *$filter* ]] && continue
        start=$(date +%s.%N)
        (
            # shellcheck source=/dev/null
            source "$here/lib.sh"
            # shellcheck source=/dev/null
            source "$file"
            "$t"
        )
        rc=$?
        took=$(printf '%.1f' "$(echo "$(date +%s.%N) - $start" | bc)")
        if [ $rc = 0 ]; then
            echo "ok   $t (${took}s)"
            passed=$((passed + 1))
        else
            echo "FAIL $t (${took}s)"
            failed=$((failed + 1))
            failures+=("$t")
        fi
    done
done
leftover=$(ip netns list | grep -c '^swg-' || true)
if [ "$leftover" != 0 ]; then
    echo "FAIL leftover namespaces: $(ip netns list | grep '^swg-' | tr '\n' ' ')"
    failed=$((failed + 1))
fi
# Interface names are sw<4 hex digits><a|b>; nothing of ours may survive a test.
left_sockets=$(find /var/run/wireguard -maxdepth 1 -regextype posix-extended -regex '.*/sw[0-9a-f]{4}[ab]\.sock' 2>/dev/null)
if [ -n "$left_sockets" ]; then
    echo "FAIL leftover sockets: $left_sockets"
    failed=$((failed + 1))
fi
left_procs=$( (pgrep -af -- ' sw[0-9a-f]{4}[ab]$'; pgrep -af -- '/tmp/swg-netns\.') | grep -v pgrep || true)
if [ -n "$left_procs" ]; then
    echo "FAIL leftover processes: $left_procs"
    failed=$((failed + 1))
fi
echo "netns: $passed passed, $failed failed"
[ "$failed" = 0 ]
