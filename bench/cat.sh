#!/usr/bin/env bash
# vmrepo cat of a 1 GiB qcow2, half allocated, not compressed, against
# qemu-img convert -O raw of it. Target: at least as fast (issue 7, item 25).
source "$(dirname "$0")/lib.sh"
need qemu-img qemu-utils
dir=$BENCH_DIR/cat
mkdir -p "$dir"
img=$dir/half.qcow2
if [ ! -f "$img" ]; then
  # Every other MiB holds data.
  raw=$dir/half.raw
  truncate -s 1G "$raw"
  head -c 512M /dev/urandom > "$dir/data"
  python3 - "$raw" "$dir/data" <<'PY'
import sys
with open(sys.argv[1], "r+b") as out, open(sys.argv[2], "rb") as data:
    for i in range(512):
        out.seek(2 * i * 1048576)
        out.write(data.read(1048576))
PY
  qemu-img convert -f raw -O qcow2 "$raw" "$img"
  rm -f "$raw" "$dir/data"
fi
cat "$img" > /dev/null
# The two commands alternate, two runs each, for ROUNDS rounds (lib.sh's
# alternate), and the row gives the mean and the median of all runs.
rounds=${ROUNDS:-10}
hyperfine -N --warmup 1 --runs 1 \
  --prepare "rm -f $dir/out-q.raw" "qemu-img convert -f qcow2 -O raw $img $dir/out-q.raw" \
  --prepare "rm -f $dir/out-v.raw" "$V cat $img -o $dir/out-v.raw" >/dev/null
read -r q v qm vm < <(alternate "$rounds" "$dir/cat" -N \
  --prepare "rm -f $dir/out-q.raw" "qemu-img convert -f qcow2 -O raw $img $dir/out-q.raw" \
  --prepare "rm -f $dir/out-v.raw" "$V cat $img -o $dir/out-v.raw")
cmp "$dir/out-q.raw" "$dir/out-v.raw" || { echo "bench: cat output differs from qemu-img convert" >&2; exit 1; }
report "| cat 1 GiB qcow2, half allocated | qemu-img convert -O raw $(s "$q") (median $(s "$qm")), vmrepo cat $(s "$v") (median $(s "$vm")); $((2 * rounds)) runs each, alternating | vmrepo / qemu-img = $(ratio "$v" "$q"), of medians $(ratio "$vm" "$qm") (target <= 1.0) |"
