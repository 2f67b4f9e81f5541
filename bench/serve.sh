#!/usr/bin/env bash
# vmrepo serve (issue 8), over loopback:
# (a) a 1 GiB image downloaded with curl -o /dev/null from vmrepo serve and
#     from Debian's nginx (sendfile on) serving the same stored file, the two
#     alternating for ROUNDS rounds; medians. Target: vmrepo >= 0.9 x nginx.
# (b) the API's find on the 20,000 images of bench/find.sh's tree, under
#     wrk -c 64 --latency for DURATION seconds: requests per second and the
#     latency percentiles, for a query with a few hits and for lib=sl08e (3,339
#     hits, the API's first page of 1000). Target: p99 <= 10 ms.
# Both servers listen on 127.0.0.1 and are stopped when the script ends.
source "$(dirname "$0")/lib.sh"
need curl curl
need wrk wrk
export PATH="$PATH:/usr/sbin"
need nginx nginx

pids=()
tmp=$(mktemp -d "$BENCH_DIR/serve.XXXXXX")
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# (a) 1 GiB download: vmrepo against nginx.
src=$BENCH_DIR/serve-1g.img
random_file "$src" 1024
repo=$BENCH_DIR/serve-repo
if [ ! -f "$repo/.vmrepo/repository" ]; then
  rm -rf "$repo"; "$V" init "$repo" >/dev/null
  "$V" --repo "$repo" -q add "$src" --vm kvm --os sl5.3 --arch x86 --bits 64 --lib sl08e --max-size 1GB
fi
file=$(cd "$repo/vm/kvm" && ls -- *.img | head -1)
start_serve "$repo"
start_nginx "$repo" "vm/kvm/$file"
cmp <(curl -s "$url/vm/kvm/$file" | sha256sum) <(curl -s "$nginx_url/vm/kvm/$file" | sha256sum) \
  || { echo "bench: the two servers sent different bytes" >&2; exit 1; }
load=$(cut -d' ' -f1 /proc/loadavg)
# The machine's load moves: the two servers alternate, one run each, for
# ROUNDS rounds, and the row gives the median of all runs.
rounds=${ROUNDS:-9}
rm -f "$tmp"/dl-*.json
hyperfine -N --warmup 2 --runs 1 "curl -s -o /dev/null $nginx_url/vm/kvm/$file" "curl -s -o /dev/null $url/vm/kvm/$file" >/dev/null
for ((r = 0; r < rounds; r++)); do
  hyperfine -N --runs 1 --export-json "$tmp/dl-$r.json" \
    "curl -s -o /dev/null $nginx_url/vm/kvm/$file" \
    "curl -s -o /dev/null $url/vm/kvm/$file" >/dev/null
done
# median of the times of command N over the rounds
median() { python3 -c "import glob,json,statistics,sys; print(statistics.median(t for f in glob.glob(sys.argv[1] + '/dl-*.json') for t in json.load(open(f))['results'][int(sys.argv[2])]['times']))" "$tmp" "$1"; }
gibs() { python3 -c "import sys; print('%.2f GiB/s' % (1 / float(sys.argv[1])))" "$1"; }
n=$(median 0); v=$(median 1)
report "| download 1 GiB over loopback, curl -o /dev/null, median of $rounds runs each, alternating (load $load) | nginx (sendfile) $(s "$n") = $(gibs "$n"); vmrepo serve $(s "$v") = $(gibs "$v") | vmrepo / nginx throughput = $(ratio "$n" "$v") (target >= 0.9) |"

# (b) find through the API on 20,000 images, wrk -c 64 --latency.
root=$BENCH_DIR/find-tree
if [ ! -f "$root/.vmrepo/repository" ]; then
  rm -rf "$root"
  python3 "$here/make-tree.py" "$root" 20000
  "$V" init "$root" >/dev/null
fi
start_serve "$root"
secs=${DURATION:-20}
# /healthz first: what the machine and the HTTP stack give with no catalog work.
for path in "/healthz" "/api/v1/images?q=vm=kvm+os=sl5.3+lib=sl10k+maxsize=16GB" \
  "/api/v1/images?q=os=sl5.3+maxsize%3E%3D8GB+lib=sl10k" "/api/v1/images?q=lib=sl08e"; do
  hits=$(curl -sf -D - -o /dev/null "$url$path" | tr -d '\r' | sed -n 's/^x-total-count: //Ip')
  hits=${hits:+$hits hits}
  load=$(cut -d' ' -f1 /proc/loadavg)
  wrk -t2 -c64 -d"${secs}s" --latency "$url$path" > "$tmp/wrk.txt"
  cat "$tmp/wrk.txt"
  if grep -q -e "Socket errors" -e "Non-2xx" "$tmp/wrk.txt"; then
    echo "bench: wrk saw errors" >&2; exit 1
  fi
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$tmp/wrk.txt")
  pct() { awk -v p="$1" '$1 == p {print $2}' "$tmp/wrk.txt"; }
  report "| API on 20,000 images, \`$path\` (${hits:-no query}), wrk -t2 -c64 -d${secs}s --latency (load $load) | $rps requests/s; latency p50 $(pct 50%), p90 $(pct 90%), p99 $(pct 99%) | target p99 <= 10 ms |"
done
