#!/usr/bin/env bash
# vmrepo info against qemu-img info on the same image, for every format.
# Target: vmrepo info <= 0.3 x qemu-img info.
source "$(dirname "$0")/lib.sh"
need qemu-img qemu-utils
dir=$BENCH_DIR/info
mkdir -p "$dir"
raw=$dir/guest.raw
if [ ! -f "$raw" ]; then
  # A 4 GiB disk holding 1 GiB of data in 16 stretches.
  truncate -s 4G "$raw"
  for i in $(seq 0 15); do
    head -c 64M /dev/urandom | dd of="$raw" bs=1M seek=$((i * 256)) conv=notrunc status=none
  done
fi
for spec in "qcow2:" "qcow2:compression_type=zstd" "vmdk:subformat=monolithicSparse" "vmdk:subformat=streamOptimized" "vdi:" "vpc:" "vhdx:"; do
  fmt=${spec%%:*}; opts=${spec#*:}
  out=$dir/$fmt-$(echo "$opts" | tr -c 'a-zA-Z0-9' _).img
  [ -f "$out" ] || qemu-img convert -f raw -O "$fmt" ${opts:+-o "$opts"} "$raw" "$out"
  hyperfine -N --warmup 3 --runs "${RUNS:-30}" --export-json "$dir/info.json" "qemu-img info -f $fmt $out" "$V info $out" >/dev/null
  q=$(mean "$dir/info.json" 0); v=$(mean "$dir/info.json" 1)
  report "| info, $fmt ${opts:-default} (4 GiB, 1 GiB allocated) | qemu-img info $(ms "$q"), vmrepo info $(ms "$v") | $(ratio "$v" "$q") (target <= 0.3) |"
done
hyperfine -N --warmup 3 --runs "${RUNS:-30}" --export-json "$dir/info.json" "qemu-img info -f raw $raw" "$V info $raw" >/dev/null
q=$(mean "$dir/info.json" 0); v=$(mean "$dir/info.json" 1)
report "| info, raw (4 GiB sparse) | qemu-img info $(ms "$q"), vmrepo info $(ms "$v") | $(ratio "$v" "$q") (target <= 0.3) |"
