#!/usr/bin/env bash
# Runs fuzz targets one after another for SECONDS each and reports runs, corpus size and
# crashes: `scripts/fuzz-campaign.sh SECONDS TARGET...`. New inputs go to a working corpus
# under /tmp (the committed seeds in fuzz/corpus/ are read, never written). As root,
# inbound_session writes to a real offloading TUN (SWG_FUZZ_TUN=1). Needs cargo-fuzz
# (`cargo install cargo-fuzz --locked`); RUSTC_BOOTSTRAP=1 lets the stable compiler act
# as the nightly one cargo-fuzz wants.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:?usage: $0 SECONDS TARGET...}
shift
export RUSTC_BOOTSTRAP=1
[ "$(id -u)" = 0 ] && export SWG_FUZZ_TUN=1
for target in "$@"; do
    work=/tmp/swg-fuzz-corpus/$target
    mkdir -p "$work"
    log=/tmp/swg-fuzz-$target.log
    echo "== $target: $(date -u +%Y-%m-%dT%H:%MZ), ${secs} s, commit $(git rev-parse --short HEAD)"
    if cargo fuzz run "$target" "$work" "corpus/$target" -j 1 -- -max_total_time="$secs" >"$log" 2>&1; then
        result=ok
    else
        result="FAILED (see $log)"
    fi
    runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -1)
    [ -n "$runs" ] || runs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
    echo "   $result; $runs runs; working corpus $(find "$work" -type f | wc -l) inputs; $(grep -c '^==.*ERROR\|panicked' "$log" || true) crash reports"
done
