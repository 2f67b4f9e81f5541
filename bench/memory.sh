#!/usr/bin/env bash
# Peak resident memory of vmrepo add and verify of a 4 GiB image. Target: < 64 MiB.
source "$(dirname "$0")/lib.sh"
src=$BENCH_DIR/mem-4g.img
random_file "$src" 4096
repo=$BENCH_DIR/mem-repo
rm -rf "$repo"; "$V" init "$repo" >/dev/null
add=$( { /usr/bin/time -f %M "$V" --repo "$repo" -q add "$src" --vm kvm --os sl5.3 --arch x86 --bits 64 --lib sl08e --max-size 4GB; } 2>&1 | tail -1)
ver=$( { /usr/bin/time -f %M "$V" --repo "$repo" -q verify --md5; } 2>&1 | tail -1)
report "| peak memory, 4 GiB image | add $((add / 1024)) MiB, verify --md5 $((ver / 1024)) MiB | target < 64 MiB |"
rm -rf "$repo"
