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
# nginx as the reference web server (sendfile, no access log) serving ROOT on
# a free 127.0.0.1 port, started once PROBE (a path under ROOT) answers. Needs
# the caller's $tmp and pids array (its EXIT trap kills them); sets nginx_url.
start_nginx() {
  local root=$1 probe=$2 dir=$tmp/nginx port
  port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
  mkdir -p "$dir/logs"
  cat > "$dir/nginx.conf" <<EOF
worker_processes auto;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  default_type application/octet-stream;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  server {
    listen 127.0.0.1:$port;
    root $root;
  }
}
EOF
  nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' 2> "$dir/stderr" &
  pids+=($!)
  nginx_url=http://127.0.0.1:$port
  for _ in $(seq 50); do curl -sf -o /dev/null -r 0-0 "$nginx_url/$probe" && return 0; sleep 0.1; done
  echo "bench: nginx did not start: $(cat "$dir/stderr" "$dir/error.log" 2>/dev/null)" >&2
  exit 1
}
# `vmrepo serve` on REPO (and any further serve options), port 0; sets url
# (without the final slash) once the server says where it listens. Not to be
# called in a subshell: the server's pid must reach the caller's pids array.
start_serve() {
  local repo=$1 out=$tmp/serve-$RANDOM.json
  shift
  "$V" --repo "$repo" -q --json serve --listen 127.0.0.1:0 "$@" > "$out" 2> "$tmp/serve.log" &
  pids+=($!)
  for _ in $(seq 100); do
    url=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['url'].rstrip('/'))" "$out" 2>/dev/null) && return 0
    sleep 0.1
  done
  echo "bench: vmrepo serve did not start: $(cat "$tmp/serve.log")" >&2
  exit 1
}
# On a virtual machine shared with other work, one run in five or ten can take
# several times the others (pages the host must back again). alternate ROUNDS
# PREFIX HYPERFINE-ARGS... runs hyperfine ROUNDS times with two runs of each
# command (so the commands alternate round by round), exporting
# PREFIX-N.json, then prints the mean of each command's runs over all rounds,
# then the median of each.
alternate() {
  local rounds=$1 prefix=$2 r
  shift 2
  rm -f "$prefix"-*.json
  for ((r = 0; r < rounds; r++)); do
    hyperfine --runs 2 --export-json "$prefix-$r.json" "$@" >&2
  done
  python3 - "$prefix" <<'PY'
import glob, json, statistics, sys
times = {}
for f in glob.glob(sys.argv[1] + "-*.json"):
    for i, r in enumerate(json.load(open(f))["results"]):
        times.setdefault(i, []).extend(r["times"])
runs = [times[i] for i in sorted(times)]
print(*(statistics.mean(t) for t in runs), *(statistics.median(t) for t in runs))
PY
}
