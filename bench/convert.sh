#!/usr/bin/env bash
# vmrepo convert against qemu-img convert, side by side in one run (issue 11):
# a 4 GiB qcow2 holding 1 GiB of real files (a tar of /usr in an ext4 made by
# mke2fs -d) written as VMDK streamOptimized, VDI, VHD fixed and compressed
# qcow2. Targets: <= 1.0x qemu-img for uncompressed outputs, <= 0.6x for
# compressed ones. Uncompressed outputs: ROUNDS (default 8) rounds of two
# alternating runs each; compressed ones (half a minute for qemu-img):
# CROUNDS (default 1).
source "$(dirname "$0")/lib.sh"
need qemu-img qemu-utils
need mke2fs e2fsprogs
ROUNDS=${ROUNDS:-8}
CROUNDS=${CROUNDS:-1}
src=$BENCH_DIR/convert-src.qcow2
if [ ! -f "$src" ]; then
  stage=$BENCH_DIR/convert-stage
  rm -rf "$stage" && mkdir -p "$stage"
  tar cf - /usr 2>/dev/null | head -c $((1024 * 1048576)) > "$stage/usr.tar" || true
  rm -f "$BENCH_DIR/convert-src.raw"
  mke2fs -q -t ext4 -d "$stage" "$BENCH_DIR/convert-src.raw" 4G
  qemu-img convert -f raw -O qcow2 "$BENCH_DIR/convert-src.raw" "$src"
  rm -rf "$stage" "$BENCH_DIR/convert-src.raw"
fi
out=$BENCH_DIR/convert-out
report "## vmrepo convert vs qemu-img convert ($(date -u +%F), $(nproc) cores, $(qemu-img --version | head -1))"
report ""
report "Source: 4 GiB virtual qcow2, $(qemu-img info --output=json "$src" | python3 -c 'import json,sys; print(json.load(sys.stdin)["actual-size"] // 1048576)') MiB allocated."
report ""
report "| output | qemu-img convert | vmrepo convert | ratio (means) | ratio (medians) | target |"
report "|---|---|---|---|---|---|"
# One row: its third argument's number of rounds of two alternating runs
# each (lib.sh's alternate), then the mean and the median of all runs.
row() {
  local what=$1 target=$2 rounds=$3 q=$4 v=$5 a b am bm
  read -r a b am bm < <(alternate "$rounds" "$BENCH_DIR/convert" --prepare "rm -f $out; sync" "$q" "$v")
  report "| $what | $(s "$a") (median $(s "$am")) | $(s "$b") (median $(s "$bm")) | $(ratio "$b" "$a") | $(ratio "$bm" "$am") | <= $target |"
}
row "VMDK streamOptimized" 0.6 "$CROUNDS" \
  "qemu-img convert -f qcow2 -O vmdk -o subformat=streamOptimized $src $out" \
  "$V convert $src --to ec2 -o $out"
row "VDI dynamic" 1.0 "$ROUNDS" \
  "qemu-img convert -f qcow2 -O vdi $src $out" \
  "$V convert $src --to virtualBox -o $out"
row "VHD fixed" 1.0 "$ROUNDS" \
  "qemu-img convert -f qcow2 -O vpc -o subformat=fixed,force_size=on $src $out" \
  "$V convert $src --to ec2 -O vhd --subformat fixed -o $out"
row "qcow2 compressed (zlib)" 0.6 "$CROUNDS" \
  "qemu-img convert -f qcow2 -O qcow2 -c $src $out" \
  "$V convert $src --to kvm --compress -o $out"
row "qcow2 compressed (zstd)" 0.6 "$CROUNDS" \
  "qemu-img convert -f qcow2 -O qcow2 -c -o compression_type=zstd $src $out" \
  "$V convert $src --to kvm --compress zstd -o $out"
rm -f "$out"
