#!/usr/bin/env bash
# vmrepo find os=sl5.3 on a repository of 20,000 images (empty files with
# their sidecars) against find ROOT -name 'sl5.3_*' on the same tree.
# Target: <= 15 ms per query and <= 0.25 x find.
source "$(dirname "$0")/lib.sh"
root=$BENCH_DIR/find-tree
if [ ! -f "$root/.vmrepo/repository" ]; then
  rm -rf "$root"
  python3 "$here/make-tree.py" "$root" 20000
  start=$(date +%s.%N); "$V" init "$root" >/dev/null; end=$(date +%s.%N)
  report "| catalog 20,000 images (init of the tree) | $(s "$(python3 -c "print($end - $start)")") | |"
fi
"$V" --repo "$root" list >/dev/null
hyperfine -N --warmup 5 --runs "${RUNS:-30}" --export-json "$BENCH_DIR/find.json" \
  "find $root -name sl5.3_*" \
  "$V --repo $root find os=sl5.3" \
  "$V --repo $root find lib=sl08e maxsize>=8GB"
f=$(mean "$BENCH_DIR/find.json" 0); q=$(mean "$BENCH_DIR/find.json" 1); q2=$(mean "$BENCH_DIR/find.json" 2)
n=$("$V" --repo "$root" find os=sl5.3 | tail -n +2 | wc -l)
report "| find os=sl5.3 in 20,000 images ($n hits) | find -name $(ms "$f"), vmrepo find $(ms "$q"); lib=sl08e maxsize>=8GB $(ms "$q2") | vmrepo / find = $(ratio "$q" "$f") (target <= 0.25, <= 15 ms) |"
