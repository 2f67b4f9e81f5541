#!/usr/bin/env bash
# vmrepo publish of bench/find.sh's tree (20,000 images, empty files with
# their sidecars), signed, with --base-url (a Metalink file per image) and
# the static page: (a) to a fresh folder on the same filesystem (every image
# hard-linked, every sidecar written, one syncfs), against `cp -al` of the
# VM folders followed by `sync`; (b) again with nothing changed (no image
# placed, a stat per file through the ledger), against `rsync -a` of the
# VM folders onto an up-to-date copy (a stat per file, nothing copied).
# Target: (b) <= 2 s.
source "$(dirname "$0")/lib.sh"
need rsync rsync
root=$BENCH_DIR/find-tree
if [ ! -f "$root/.vmrepo/repository" ]; then
  rm -rf "$root"
  python3 "$here/make-tree.py" "$root" 20000
  "$V" init "$root" >/dev/null
fi
keys=$BENCH_DIR/publish-keys
[ -f "$keys/bench.key" ] || "$V" key generate -o "$keys" --name bench >/dev/null 2>&1
dest=$BENCH_DIR/publish-dest
ref=$BENCH_DIR/publish-ref
pub="$V --repo $root publish $dest --key $keys/bench.key --base-url https://vm.example.org/star"
load=$(cut -d' ' -f1 /proc/loadavg)
hyperfine --runs "${RUNS:-3}" --export-json "$BENCH_DIR/publish-fresh.json" \
  --prepare "rm -rf $dest $ref" \
  "sh -c 'mkdir -p $ref && cp -al $root/vm $ref/vm && sync'" \
  "$pub"
rm -rf "$ref"; mkdir -p "$ref"; cp -al "$root/vm" "$ref/vm"
hyperfine --warmup 1 --runs "${RUNS:-5}" --export-json "$BENCH_DIR/publish-again.json" \
  "rsync -a $root/vm/ $ref/vm/" \
  "$pub"
cf=$(mean "$BENCH_DIR/publish-fresh.json" 0); pf=$(mean "$BENCH_DIR/publish-fresh.json" 1)
ra=$(mean "$BENCH_DIR/publish-again.json" 0); pa=$(mean "$BENCH_DIR/publish-again.json" 1)
placed=$($pub --json | python3 -c "import json,sys; r=json.load(sys.stdin); print(r['linked'] + r['copied'])")
report "| publish 20,000 images, signed, Metalink + index.html (load $load) | fresh $(s "$pf") (cp -al + sync $(s "$cf")); again $(s "$pa"), $placed images placed (rsync -a $(s "$ra")) | fresh / cp -al = $(ratio "$pf" "$cf"), again / rsync = $(ratio "$pa" "$ra") (target again <= 2 s) |"
