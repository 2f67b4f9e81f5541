#!/usr/bin/env bash
# vmrepo serve --sign-key (issue 9) on the 20,000 images of bench/find.sh's tree:
# (a) building the signed catalog: the first GET /catalog.json of a server
#     just started (every record and description read, signed, sent) against
#     vmrepo find --json of the same 20,000 records (the records alone).
#     vmrepo publish writes the same catalog but fsyncs 40,000 sidecars on
#     the way (minutes on a shared disk), which says nothing of the catalog;
# (b) the catalog kept: GET /catalog.json (about 27 MB) from vmrepo serve
#     against Debian's nginx (sendfile on) serving the same bytes from a
#     file, curl -o /dev/null under hyperfine, and the builds /metrics counted.
# Both servers listen on 127.0.0.1 and are stopped when the script ends.
source "$(dirname "$0")/lib.sh"
need curl curl
export PATH="$PATH:/usr/sbin"
need nginx nginx

pids=()
tmp=$(mktemp -d "$BENCH_DIR/serve-catalog.XXXXXX")
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

root=$BENCH_DIR/find-tree
if [ ! -f "$root/.vmrepo/repository" ]; then
  rm -rf "$root"
  python3 "$here/make-tree.py" "$root" 20000
  "$V" init "$root" >/dev/null
fi
"$V" key generate -o "$tmp/keys" --name bench >/dev/null 2>&1
rm -f "$root/.vmrepo/serve-catalog.json"
load=$(cut -d' ' -f1 /proc/loadavg)

# (a) find --json against the first build of a started server.
start=$(date +%s.%N)
"$V" --repo "$root" --json find > "$tmp/find.json"
find=$(python3 -c "print($(date +%s.%N) - $start)")
start_serve "$root" --sign-key "$tmp/keys/bench.key"
first=$(curl -sf -o "$tmp/served.json" -w '%{time_total}' "$url/catalog.json")
python3 -c "import json,sys; assert len(json.load(open(sys.argv[1]))['images']) == len(json.load(open(sys.argv[2])))" \
  "$tmp/served.json" "$tmp/find.json" || { echo "bench: the catalog does not list every image" >&2; exit 1; }
mkdir -p "$tmp/www" && cp "$tmp/served.json" "$tmp/www/catalog.json"
size=$(stat -c %s "$tmp/served.json")
report "| signed catalog of 20,000 images (load $load) | vmrepo find --json (the records alone) $(s "$find"); vmrepo serve --sign-key, first GET /catalog.json $(s "$first") ($size bytes) | first GET / find --json = $(ratio "$first" "$find") |"

# (b) the kept catalog against nginx sending the same bytes.
start_nginx "$tmp/www" catalog.json
hyperfine -N --warmup 2 --runs "${RUNS:-20}" --export-json "$tmp/kept.json" \
  "curl -s -o /dev/null $nginx_url/catalog.json" \
  "curl -s -o /dev/null $url/catalog.json" >/dev/null
n=$(mean "$tmp/kept.json" 0); v=$(mean "$tmp/kept.json" 1)
built=$(curl -sf "$url/metrics" | awk '/^vmrepo_catalogs_signed_total/ {print $2}')
report "| GET /catalog.json kept, $size bytes, curl -o /dev/null (load $load) | nginx (sendfile, the same bytes) $(ms "$n"); vmrepo serve $(ms "$v"); catalogs built over all the requests: $built | vmrepo / nginx = $(ratio "$v" "$n") |"
