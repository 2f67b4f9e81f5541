#!/usr/bin/env bash
# Makes a seed corpus for each fuzz target from small images qemu-img writes
# (fuzz/corpus/<target>/, not committed).
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
head -c 262144 /dev/urandom > "$tmp/guest.raw"; truncate -s 2M "$tmp/guest.raw"
# seed TARGET FORMAT OPTIONS [-c]
seed() {
  local target=$1 fmt=$2 opts=$3 compress=${4:-}
  mkdir -p "corpus/$target"
  qemu-img convert -q -f raw -O "$fmt" ${opts:+-o "$opts"} $compress "$tmp/guest.raw" "$tmp/x"
  cp "$tmp/x" "corpus/$target/$(echo "$fmt-$opts$compress" | tr -c 'a-zA-Z0-9-' _)"
  rm -f "$tmp"/x*
}
seed qcow2 qcow2 "cluster_size=512"
seed qcow2 qcow2 "compat=0.10,cluster_size=4096"
seed qcow2 qcow2 "cluster_size=4096" -c
seed qcow2 qcow2 "extended_l2=on,cluster_size=16k"
seed vmdk vmdk ""
seed vmdk vmdk "subformat=streamOptimized"
seed vdi vdi ""
seed vdi vdi "static=on"
seed vhd vpc ""
seed vhd vpc "subformat=fixed"
seed vhdx vhdx "block_size=1M"
mkdir -p corpus/iso corpus/detect
if command -v xorriso >/dev/null; then mkdir -p "$tmp/d"; echo star > "$tmp/d/f"; xorriso -as mkisofs -quiet -o corpus/iso/plain.iso "$tmp/d"; fi
for f in corpus/*/*; do case $f in corpus/detect/*) ;; *) cp "$f" corpus/detect/ ;; esac; done
echo "seeds in fuzz/corpus/"
