#!/usr/bin/env bash
# vmrepo add of a 1 GiB image (page cache warm; MIB=512 for the size of
# issue 7, item 23) against md5sum of the same file alone, and against the
# specification's manual recipe (cp, then md5sum), as written and made
# durable like an import (sync of the copy).
# Target: add <= 1.15 x md5sum, and >= 1.6 x faster than the recipe.
source "$(dirname "$0")/lib.sh"
mib=${MIB:-1024}
src=$BENCH_DIR/add-${mib}m.img
random_file "$src" "$mib"
repo=$BENCH_DIR/add-repo
rm -rf "$repo" "$BENCH_DIR/recipe"; "$V" init "$repo" >/dev/null; mkdir -p "$BENCH_DIR/recipe"
cat "$src" > /dev/null
# The name's maximum size: the largest unit that divides the size.
if [ $((mib % 1024)) = 0 ]; then max=$((mib / 1024))GB; else max=${mib}MB; fi
name=sl5.3_x86_64_sl08e_$max
load=$(cut -d' ' -f1 /proc/loadavg)
hyperfine -N --warmup 1 --runs "${RUNS:-5}" --export-json "$BENCH_DIR/add.json" \
  --prepare "sync" "md5sum $src" \
  --prepare "sh -c 'rm -f $BENCH_DIR/recipe/*; sync'" \
  "sh -c 'cp $src $BENCH_DIR/recipe/$name.img && cd $BENCH_DIR/recipe && md5sum $name.img > $name.checksum'" \
  --prepare "sh -c 'rm -f $BENCH_DIR/recipe/*; sync'" \
  "sh -c 'cp $src $BENCH_DIR/recipe/$name.img && cd $BENCH_DIR/recipe && md5sum $name.img > $name.checksum && sync $name.img $name.checksum .'" \
  --prepare "sh -c '$V --repo $repo -q rm kvm/$name 2>/dev/null; sync'" \
  "$V --repo $repo -q add $src --vm kvm --os sl5.3 --arch x86 --bits 64 --lib sl08e --max-size $max"
m=$(mean "$BENCH_DIR/add.json" 0); c=$(mean "$BENCH_DIR/add.json" 1); d=$(mean "$BENCH_DIR/add.json" 2); a=$(mean "$BENCH_DIR/add.json" 3)
report "| add $mib MiB (load $load) | md5sum $(s "$m"); cp + md5sum $(s "$c"); cp + md5sum + sync $(s "$d"); vmrepo add $(s "$a") | add / md5sum = $(ratio "$a" "$m") (target <= 1.15); recipe / add = $(ratio "$c" "$a"), durable recipe / add = $(ratio "$d" "$a") (target >= 1.6) |"
