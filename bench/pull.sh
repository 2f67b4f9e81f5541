#!/usr/bin/env bash
# vmrepo pull (issue 9), over loopback from Debian's nginx (sendfile on):
# (a) a 1 GiB image (random bytes), published and signed, pulled into an
#     empty repository (catalog and signature checked, SHA-256 and MD5 while
#     downloading, fsync, imported) against `curl -o F && sync F` (a download
#     made as durable as an import, with no check) and plain `curl -o F`; the
#     three alternate for ROUNDS rounds; medians.
#     Target: pull >= 0.9 x the throughput of curl -o + sync.
# (b) a pull killed (SIGKILL) once half the image is in its partial file:
#     the second pull's --json `transferred`. Target: <= 55 % of the image.
# nginx listens on 127.0.0.1 on a free port and is stopped when the script ends.
source "$(dirname "$0")/lib.sh"
need curl curl
export PATH="$PATH:/usr/sbin"
need nginx nginx

pids=()
tmp=$(mktemp -d "$BENCH_DIR/pull.XXXXXX")
# nginx's workers run as another user: the published tree is readable by all.
chmod 755 "$tmp"
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

mib=${MIB:-1024}
src=$BENCH_DIR/pull-${mib}m.img
random_file "$src" "$mib"
repo=$BENCH_DIR/pull-repo
if [ ! -f "$repo/.vmrepo/repository" ]; then
  rm -rf "$repo"; "$V" init "$repo" >/dev/null
  "$V" --repo "$repo" -q add --force "$src" --vm kvm --os sl5.3 --arch x86 --bits 64 --lib sl08e --max-size 1GB
fi
"$V" key generate -o "$tmp/keys" --name bench >/dev/null 2>&1
"$V" --repo "$repo" -q publish "$tmp/pub" --key "$tmp/keys/bench.key"
chmod -R a+rX "$tmp/pub"
path=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['images'][0]['path'])" "$tmp/pub/catalog.json")
size=$(stat -c %s "$src")

start_nginx "$tmp/pub" catalog.json
url=$nginx_url

# A fresh repository that trusts the key, for each pull.
site=$BENCH_DIR/pull-site
fresh() { rm -rf "$site" && "$V" init "$site" >/dev/null && "$V" --repo "$site" -q trust add "$tmp/keys/bench.pub"; }
export -f fresh; export site tmp V
cat "$src" > /dev/null
load=$(cut -d' ' -f1 /proc/loadavg)
rounds=${ROUNDS:-5}
dl=$BENCH_DIR/pull-curl.img
for ((r = 0; r < rounds; r++)); do
  hyperfine --shell bash --runs 1 --export-json "$tmp/dl-$r.json" \
    --prepare "rm -f $dl; sync" "curl -s -o $dl $url/$path && sync $dl" \
    --prepare "rm -f $dl; sync" "curl -s -o $dl $url/$path" \
    --prepare "fresh; sync" "$V --repo $site -q pull $url" >/dev/null
  cmp -s "$dl" "$src" || { echo "bench: curl fetched other bytes" >&2; exit 1; }
  cmp -s "$site/$path" "$src" || { echo "bench: pull imported other bytes" >&2; exit 1; }
done
rm -f "$dl"
median() { python3 -c "import glob,json,statistics,sys; print(statistics.median(t for f in glob.glob(sys.argv[1] + '/dl-*.json') for t in json.load(open(f))['results'][int(sys.argv[2])]['times']))" "$tmp" "$1"; }
gibs() { python3 -c "import sys; print('%.2f GiB/s' % ($size / 1073741824 / float(sys.argv[1])))" "$1"; }
d=$(median 0); c=$(median 1); p=$(median 2)
report "| pull $mib MiB over loopback from nginx (sendfile), median of $rounds runs each, alternating (load $load) | curl -o + sync $(s "$d") = $(gibs "$d"); curl -o $(s "$c") = $(gibs "$c"); vmrepo pull $(s "$p") = $(gibs "$p") | pull / (curl -o + sync) throughput = $(ratio "$d" "$p") (target >= 0.9); pull / curl -o = $(ratio "$c" "$p") |"

# (b) killed at half way, then pulled again.
fresh
part=$site/.vmrepo/pull
"$V" --repo "$site" -q pull "$url" &
victim=$!
half=$((size / 2))
while :; do
  have=$(stat -c %s "$part"/*.part 2>/dev/null || echo 0)
  [ "$have" -ge "$half" ] && break
  kill -0 "$victim" 2>/dev/null || { echo "bench: the pull ended before half way" >&2; exit 1; }
  sleep 0.005
done
kill -9 "$victim"; wait "$victim" 2>/dev/null || true
kept=$(stat -c %s "$part"/*.part)
out=$("$V" --repo "$site" --json pull "$url")
moved=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['transferred'])" "$out")
cmp -s "$site/$path" "$src" || { echo "bench: the resumed pull imported other bytes" >&2; exit 1; }
pct() { python3 -c "import sys; print('%.1f %%' % (100 * int(sys.argv[1]) / int(sys.argv[2])))" "$1" "$2"; }
report "| pull $mib MiB killed (SIGKILL) once half is in its partial file, then again | $(pct "$kept" "$size") kept; the second pull transferred $moved bytes | $(pct "$moved" "$size") of the image (target <= 55 %) |"
rm -rf "$site"
