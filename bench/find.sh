#!/usr/bin/env bash
# vmrepo find on a repository of 20,000 images (empty files with their
# sidecars) against find ROOT -name 'sl5.3_*' on the same tree, in one
# hyperfine run: lib=sl08e (3,339 hits) printed as a table and as --json
# (every field of every record), and a query on two fields.
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
load=$(cut -d' ' -f1 /proc/loadavg)
hyperfine -N --warmup 5 --runs "${RUNS:-30}" --export-json "$BENCH_DIR/find.json" \
  "find $root -name sl5.3_*" \
  "$V --repo $root find lib=sl08e" \
  "$V --repo $root --json find lib=sl08e" \
  "$V --repo $root find os=sl5.3 maxsize>=8GB"
f=$(mean "$BENCH_DIR/find.json" 0); t=$(mean "$BENCH_DIR/find.json" 1); j=$(mean "$BENCH_DIR/find.json" 2); q2=$(mean "$BENCH_DIR/find.json" 3)
n=$("$V" --repo "$root" find lib=sl08e | tail -n +2 | wc -l)
n2=$("$V" --repo "$root" find os=sl5.3 'maxsize>=8GB' | tail -n +2 | wc -l)
report "| find lib=sl08e in 20,000 images ($n hits; load $load) | find -name $(ms "$f"); vmrepo find $(ms "$t"), --json $(ms "$j"); os=sl5.3 maxsize>=8GB ($n2 hits) $(ms "$q2") | vmrepo / find = $(ratio "$t" "$f"), --json $(ratio "$j" "$f") (target <= 0.25, <= 15 ms) |"
