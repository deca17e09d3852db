#!/usr/bin/env bash
# Stages this Debian system's iptables into DEST, for the FROM scratch image:
# `image-iptables.sh DEST`. A gateway adds FORWARD rules where the node's policy drops
# (control/src/firewall.rs), in whichever backend holds that policy, so both are staged:
# xtables-nft-multi and xtables-legacy-multi as iptables-nft, ip6tables-nft,
# iptables-legacy and ip6tables-legacy, with the match and target extensions, the shared
# libraries they load (ldd), the dynamic loader, and the packages' copyright files.
# Used by the Dockerfile's builder stage and, for the offline `host` stage, by
# scripts/container-test.sh.
set -euo pipefail
dest=${1:?usage: image-iptables.sh DEST}
nft=$(command -v xtables-nft-multi || true)
legacy=$(command -v xtables-legacy-multi || true)
[ -n "$nft" ] && [ -n "$legacy" ] || { echo "image-iptables.sh: install Debian's iptables package first" >&2; exit 1; }
xt=
for d in /usr/lib/*-linux-gnu/xtables /usr/lib/xtables /usr/lib64/xtables; do
    [ -d "$d" ] && { xt=$d; break; }
done
[ -n "$xt" ] || { echo "image-iptables.sh: no xtables extension directory" >&2; exit 1; }

case $(realpath -m "$dest") in /) echo "image-iptables.sh: refusing to replace /" >&2; exit 1 ;; esac
rm -rf "$dest"
mkdir -p "$dest/usr/sbin" "$dest$xt" "$dest/usr/share/doc"
install -m 0755 "$nft" "$dest/usr/sbin/xtables-nft-multi"
install -m 0755 "$legacy" "$dest/usr/sbin/xtables-legacy-multi"
for b in nft legacy; do
    for t in iptables ip6tables; do ln -s "xtables-$b-multi" "$dest/usr/sbin/$t-$b"; done
done
cp -L "$xt"/*.so "$dest$xt/"

# Every library the programs and extensions load, at the path the loader looks in.
files=("$nft" "$legacy" "$xt"/*.so)
libs=$(for f in "${files[@]}"; do ldd "$f"; done | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u)
for lib in $libs; do
    mkdir -p "$dest$(dirname "$lib")"
    cp -L "$lib" "$dest$lib"
done

# The licences of what is shipped (Debian's packages; their sources are Debian's).
pkg_of() {
    local p
    for p in "$1" "$(realpath "$1")" "/usr$1"; do
        dpkg -S "$p" 2>/dev/null | head -1 | cut -d: -f1 && return 0
    done
}
for f in "${files[@]}" $libs; do pkg_of "$f"; done | sort -u | while read -r pkg; do
    [ -n "$pkg" ] && [ -f "/usr/share/doc/$pkg/copyright" ] || continue
    mkdir -p "$dest/usr/share/doc/$pkg"
    cp "/usr/share/doc/$pkg/copyright" "$dest/usr/share/doc/$pkg/"
done
echo "image-iptables.sh: $(find "$dest" -type f | wc -l) files, $(du -sh "$dest" | cut -f1) in $dest"
