#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs (as root), then runs
# formatting, lints, unit and in-memory tests, the fuzz corpus, a fuzz build check, the
# crate boundary check and the root-only network-namespace tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

section() { printf '\n== %s\n' "$*"; }

# --- system packages -------------------------------------------------------------
need=()
command -v wg >/dev/null || need+=(wireguard-tools)
command -v wireguard-go >/dev/null || need+=(wireguard-go)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v ping >/dev/null || need+=(iputils-ping)
command -v ip >/dev/null || need+=(iproute2)
command -v bc >/dev/null || need+=(bc)
# The NAT router and the gateway tests (a FORWARD policy of DROP, the gateway's rules).
command -v iptables >/dev/null || need+=(iptables)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
    section "installing ${need[*]}"
    if [ "$(id -u)" = 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
        echo "missing ${need[*]}: run as root (or install them) for the network tests" >&2
    fi
fi

section "format"
cargo fmt --all --check

section "clippy"
cargo clippy --workspace --all-targets --locked -j2 -- -D warnings

section "unit and in-memory tests"
cargo test --workspace --locked -j2

section "crate boundaries"
if cargo tree -p dataplane -e normal --prefix none --locked | grep -E '^(kube|k8s-openapi|rtnetlink) '; then
    echo "dataplane must not depend on kube, k8s-openapi or rtnetlink" >&2
    exit 1
fi
if cargo tree -p control -e normal --depth 1 --prefix none --locked | grep -E '^(boringtun|tun-rs|socket2|quinn-udp) '; then
    echo "control must not depend on packet crates" >&2
    exit 1
fi
echo "ok"

section "no import cycles between modules"
python3 scripts/check-module-cycles.py dataplane/src control/src src fake-apiserver/src

section "fuzz targets build"
# Into the workspace's target directory: the dependencies checked for clippy are reused
# (the fuzz crate's own target directory would check them all again, about a minute more).
CARGO_TARGET_DIR="$PWD/target" cargo check --manifest-path fuzz/Cargo.toml --locked -j2 --bins

section "deploy manifests (kustomize + kubernetes-validate --strict)"
scripts/check-deploy.sh

section "TUN device tests (root)"
if [ "$(id -u)" = 0 ]; then
    cargo test --workspace --locked -j2 --test tun_device -- --ignored
elif [ "${CI:-}" = true ]; then
    echo "CI must run as root for the TUN device tests" >&2
    exit 1
else
    echo "skipped: not root (sudo scripts/test.sh runs them)"
fi

section "slow in-memory tests (in the background, beside the network namespace tests)"
# Mostly waiting (boringtun gives up an unanswered handshake after 90 s): run beside the
# netns tests rather than before them. The binary is run directly so that no cargo lock
# is held while the netns tests build.
slow_bin=$(cargo test --workspace --locked -j2 --test handshakes --no-run 2>&1 |
    sed -n 's/.*(\(target\/debug\/deps\/handshakes-[0-9a-f]*\)).*/\1/p' | head -1)
[ -x "$slow_bin" ] || { echo "no handshakes test binary" >&2; exit 1; }
"$slow_bin" --ignored --exact a_peer_that_never_answers_costs_nothing_after_90_s_and_is_reached_again \
    >/tmp/swg-slow-tests.log 2>&1 &
slow_pid=$!

section "network namespace tests (root)"
cargo build --locked -j2 --bin semaphore-wireguard --bin fake-apiserver
if [ "$(id -u)" = 0 ]; then
    # The takeover tests (upgrade.sh, and tunnel.sh's second tunnel process) hold a release
    # build to 2 lost pings per takeover (benches/upgrade.sh);
    # this debug build, sharing 2 cores with other agents, ping, iperf3 and the slow tests,
    # lost 0–2 in the agents' takeovers and once 3 in the tunnel's, and is allowed 3 so that
    # scheduling noise does not fail the suite.
    SWG_BIN="$PWD/target/debug/semaphore-wireguard" FAKE_APISERVER_BIN="$PWD/target/debug/fake-apiserver" \
        UPGRADE_MAX_LOST=3 tests/netns/run.sh
elif [ "${CI:-}" = true ]; then
    echo "CI must run as root for the network namespace tests" >&2
    exit 1
else
    echo "skipped: not root (sudo scripts/test.sh runs them)"
fi

section "slow in-memory tests: results"
if wait "$slow_pid"; then
    grep -E "^test .* ok$" /tmp/swg-slow-tests.log
else
    cat /tmp/swg-slow-tests.log >&2
    echo "slow in-memory tests failed" >&2
    exit 1
fi

section "container image (podman, FROM scratch, smoke test)"
if [ "$(id -u)" = 0 ]; then
    SWG_IMAGE_PROFILE=smoke scripts/container-test.sh
elif [ "${CI:-}" = true ]; then
    echo "CI must run as root for the container test" >&2
    exit 1
else
    echo "skipped: not root"
fi
