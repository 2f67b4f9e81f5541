#!/usr/bin/env bash
# vmrepo verify of 8 images of 256 MiB against md5sum -c over their .checksum
# files one after another. Target: verify <= 0.20 x md5sum -c.
source "$(dirname "$0")/lib.sh"
repo=$BENCH_DIR/verify-repo
if [ ! -d "$repo/vm/xen" ] || [ "$(ls "$repo/vm/xen" | wc -l)" != 24 ]; then
  rm -rf "$repo"; "$V" init "$repo" >/dev/null
  for i in 1 2 3 4 5 6 7 8; do
    random_file "$BENCH_DIR/part$i.img" 256
    "$V" --repo "$repo" -q add "$BENCH_DIR/part$i.img" --vm xen --os sl5.3 --arch x86 --bits 64 --lib sl08e --max-size 256MB --detail p$i --move
  done
fi
cat "$repo"/vm/xen/*.img > /dev/null
load=$(cut -d' ' -f1 /proc/loadavg)
hyperfine -N --warmup 1 --runs "${RUNS:-5}" --export-json "$BENCH_DIR/verify.json" \
  "sh -c 'cd $repo/vm/xen && for f in *.checksum; do md5sum -c --quiet \$f; done'" \
  "$V --repo $repo -q verify" \
  "$V --repo $repo -q verify --md5"
m=$(mean "$BENCH_DIR/verify.json" 0); v=$(mean "$BENCH_DIR/verify.json" 1); v5=$(mean "$BENCH_DIR/verify.json" 2)
report "| verify 8 x 256 MiB (load $load) | md5sum -c $(s "$m"), vmrepo verify $(s "$v"), verify --md5 $(s "$v5") | verify / md5sum -c = $(ratio "$v" "$m") (target <= 0.20); verify --md5 / md5sum -c = $(ratio "$v5" "$m") |"
