# Shared by the benchmark scripts: where data goes, the binary, the tools.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/vmrepo-bench}
mkdir -p "$BENCH_DIR"
need() {
  command -v "$1" >/dev/null || { echo "bench: $1 is missing: apt-get install $2" >&2; exit 1; }
}
need hyperfine hyperfine
need python3 python3
# The statically linked build (scripts/build-static.sh): what a site would
# install for the fastest start; NO_BUILD=1 takes an existing target/release/vmrepo.
if [ "${NO_BUILD:-}" != 1 ]; then V=$("$top/scripts/build-static.sh"); else V=${V:-$top/target/release/vmrepo}; fi
export V
# mean seconds of command N (0-based) in a hyperfine JSON export
mean() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['results'][int(sys.argv[2])]['mean'])" "$1" "$2"; }
ratio() { python3 -c "import sys; print('%.2f' % (float(sys.argv[1]) / float(sys.argv[2])))" "$1" "$2"; }
ms() { python3 -c "import sys; print('%.1f ms' % (float(sys.argv[1]) * 1000))" "$1"; }
s() { python3 -c "import sys; print('%.2f s' % float(sys.argv[1]))" "$1"; }
# a file of N MiB of random bytes, made once
random_file() {
  local path=$1 mib=$2
  if [ ! -f "$path" ] || [ "$(stat -c %s "$path")" != $((mib * 1048576)) ]; then
    head -c "$((mib * 1048576))" /dev/urandom > "$path.tmp" && mv "$path.tmp" "$path"
  fi
}
report() { echo "$*" | tee -a "$BENCH_DIR/results.md"; }
