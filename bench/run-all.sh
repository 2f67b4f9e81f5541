#!/usr/bin/env bash
# Runs every benchmark and prints a Markdown table for docs/benchmarks.md,
# headed by the machine it ran on.
source "$(dirname "$0")/lib.sh"
: > "$BENCH_DIR/results.md"
{
  echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(uname -sr), $(df -T "$BENCH_DIR" | awk 'NR==2 {print $2}') on $(df "$BENCH_DIR" | awk 'NR==2 {print $1}'); $(date -u +%Y-%m-%d); vmrepo $(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo
  echo "| benchmark | figures | ratio |"
  echo "| --- | --- | --- |"
} | tee -a "$BENCH_DIR/results.md"
export NO_BUILD=1
for b in ${BENCHES:-add verify find memory info cat inspect serve serve-catalog upload publish convert align}; do
  bash "$here/$b.sh" > "$BENCH_DIR/$b.log" 2>&1 || { echo "bench $b failed: see $BENCH_DIR/$b.log" >&2; exit 1; }
done
echo; cat "$BENCH_DIR/results.md"
