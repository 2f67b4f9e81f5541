#!/usr/bin/env bash
# vmrepo inspect of a 2 GiB guest (a debootstrapped Debian with 768 MiB of
# STAR libraries, ext4 on MBR beside a swap partition) in every format.
# Targets: at most 0.5 s (warm and cold page cache), and at most 2 % of the allocated bytes read from
# the image file (counted by strace from outside, not by vmrepo).
# Side by side: debugfs reading one file (/etc/os-release) from the root
# filesystem's own image, the nearest native tool.
source "$(dirname "$0")/lib.sh"
need qemu-img qemu-utils
need mke2fs e2fsprogs
need debugfs e2fsprogs
need mkswap util-linux
need sfdisk fdisk
need strace strace
dir=$BENCH_DIR/inspect
mkdir -p "$dir"
raw=$dir/guest.raw
if [ ! -f "$raw" ]; then
  # The Debian tree of the test guests when it is there, else debootstrap's own.
  tar=$top/target/test-guests/debian-bookworm-amd64.tar
  if [ ! -f "$tar" ]; then
    need debootstrap debootstrap
    tar=$dir/debian-bookworm-amd64.tar
    rm -rf "$dir/deb"
    debootstrap --variant=minbase --arch=amd64 bookworm "$dir/deb" "${VMREPO_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
    tar -C "$dir/deb" -cf "$tar" . && rm -rf "$dir/deb"
  fi
  rm -rf "$dir/root" && mkdir -p "$dir/root"
  tar -C "$dir/root" -xf "$tar"
  for lib in SL08e SL10k; do
    mkdir -p "$dir/root/usr/local/star/packages/$lib/lib"
    for i in $(seq 1 24); do
      head -c 16M /dev/urandom > "$dir/root/usr/local/star/packages/$lib/lib/libStar$i.so"
    done
  done
  echo "star:x:500:500:STAR:/home/star:/bin/bash" >> "$dir/root/etc/passwd"
  mkdir -p "$dir/root/home/star"
  # p1: ext4 root (1536 MiB) at 1 MiB; p2: swap, to the end of 2 GiB.
  mke2fs -q -F -t ext4 -L root -d "$dir/root" "$dir/p1.img" 1536M
  truncate -s 511M "$dir/p2.img" && mkswap -q "$dir/p2.img" >/dev/null
  truncate -s 2G "$raw.tmp"
  printf 'label: dos\nstart=2048, size=3145728, type=83\nstart=3147776, type=82\n' | sfdisk -q "$raw.tmp"
  dd if="$dir/p1.img" of="$raw.tmp" bs=1M seek=1 conv=notrunc,sparse status=none
  dd if="$dir/p2.img" of="$raw.tmp" bs=1M seek=1537 conv=notrunc,sparse status=none
  rm -rf "$dir/root" "$dir/p2.img"
  mv "$raw.tmp" "$raw"
fi
# Bytes read from files whose path ends as given, from an strace log made with -y.
file_bytes() {
  python3 - "$1" "$2" <<'EOF'
import re, sys
n = 0
for line in open(sys.argv[1]):
    m = re.match(r'(?:\d+ +)?(?:read|pread64|preadv2?)\((\d+)<([^>]*)>.*\) += (\d+)', line)
    if m and m.group(2).endswith(sys.argv[2]):
        n += int(m.group(3))
print(n)
EOF
}
hyperfine -N --warmup 2 --runs "${RUNS:-20}" --export-json "$dir/debugfs.json" \
  "debugfs -R 'cat /etc/os-release' $dir/p1.img" >/dev/null 2>&1
d=$(mean "$dir/debugfs.json" 0)
report "| inspect reference: debugfs -R 'cat /etc/os-release' on the root filesystem's image | $(ms "$d") | |"
for spec in "raw:" "qcow2:" "vmdk:subformat=monolithicSparse" "vmdk:subformat=streamOptimized" "vdi:" "vpc:" "vhdx:"; do
  fmt=${spec%%:*}; opts=${spec#*:}
  if [ "$fmt" = raw ]; then img=$raw; else
    img=$dir/guest-$fmt$(echo "${opts#subformat=}" | tr -c 'a-zA-Z0-9\n' _ | sed 's/^./-&/').img
    [ -f "$img" ] || qemu-img convert -f raw -O "$fmt" ${opts:+-o "$opts"} "$raw" "$img"
  fi
  hyperfine -N --warmup 2 --runs "${RUNS:-20}" --export-json "$dir/inspect.json" "$V inspect $img" >/dev/null
  t=$(mean "$dir/inspect.json" 0)
  # Cold: the page cache dropped before each run (root only).
  cold="cold cache not measured (needs root)"
  if [ -w /proc/sys/vm/drop_caches ]; then
    hyperfine -N --runs 5 --prepare "sh -c 'sync; echo 3 > /proc/sys/vm/drop_caches'" \
      --export-json "$dir/cold.json" "$V inspect $img" >/dev/null
    c=$(mean "$dir/cold.json" 0); t=$(python3 -c "import sys; print(max(map(float, sys.argv[1:])))" "$t" "$c")
    cold="cold cache $(ms "$c")"
  fi
  strace -f -y -e trace=read,pread64,preadv,preadv2 -o "$dir/strace.log" "$V" inspect "$img" >/dev/null
  read_file=$(file_bytes "$dir/strace.log" "$(basename "$img")")
  read_guest=$("$V" --json inspect "$img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes_read"])')
  # Guest bytes stored: the image's tables say; a raw file's are its blocks on the host.
  allocated=$("$V" --json info "$img" | python3 -c 'import json,sys; i=json.load(sys.stdin); print(i["actual-size"] if i["format"] == "raw" else i["allocated-size"])')
  os=$("$V" --json inspect "$img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["os"]["osinfo"])')
  pct=$(python3 -c "import sys; print('%.2f' % (100 * int(sys.argv[1]) / int(sys.argv[2])))" "$read_file" "$allocated")
  report "| inspect, $fmt ${opts:-default} (2 GiB, $((allocated >> 20)) MiB allocated; found $os) | warm $(ms "$(mean "$dir/inspect.json" 0)"), $cold; read $((read_file >> 10)) KiB of the file ($((read_guest >> 10)) KiB of guest bytes) | $(s "$t") (target <= 0.5 s); $pct % of allocated (target <= 2 %) |"
done
