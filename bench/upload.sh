#!/usr/bin/env bash
# An upload of a 1 GiB raw image with curl -T to vmrepo serve (on 127.0.0.1)
# against vmrepo add of the same file (page cache warm, both durable).
# Target (issue 8): upload <= 1.2 x add.
source "$(dirname "$0")/lib.sh"
need curl curl
mib=${MIB:-1024}
src=$BENCH_DIR/upload-${mib}m.img
random_file "$src" "$mib"
# A partition table, so that the content is a disk whose size the name can say.
python3 - "$src" "$mib" <<'PY'
import struct, sys
with open(sys.argv[1], 'r+b') as f:
    mbr = bytearray(512)
    sectors = int(sys.argv[2]) * 2048
    mbr[446 + 4] = 0x83
    mbr[446 + 8:446 + 16] = struct.pack('<II', 2048, sectors - 2048)
    mbr[510:512] = b'\x55\xaa'
    f.write(mbr)
PY
repo=$BENCH_DIR/upload-repo
rm -rf "$repo"; "$V" init "$repo" >/dev/null
token=$("$V" --repo "$repo" token add bench 2>/dev/null)
"$V" --repo "$repo" --json serve --listen 127.0.0.1:0 > "$BENCH_DIR/upload-url.json" 2>/dev/null &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -s "$BENCH_DIR/upload-url.json" ] && break; sleep 0.1; done
url=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['url'])" "$BENCH_DIR/upload-url.json")
cat "$src" > /dev/null
if [ $((mib % 1024)) = 0 ]; then max=$((mib / 1024))GB; else max=${mib}MB; fi
name=sl5.3_x86_64_sl08e_$max
load=$(cut -d' ' -f1 /proc/loadavg)
# The disk's write-back moves from run to run: the two commands alternate, one
# run each, for ROUNDS rounds (each after rm and sync), and the row gives the
# median of each and the median of the rounds' ratios.
rounds=${ROUNDS:-9}
rm -f "$BENCH_DIR"/upload-*.run.json
for ((r = 0; r < rounds; r++)); do
  hyperfine -N --runs 1 --export-json "$BENCH_DIR/upload-$r.run.json" \
    --prepare "sh -c '$V --repo $repo -q rm kvm/$name.img 2>/dev/null; sync'" \
    "$V --repo $repo -q add $src --vm kvm --os sl5.3 --arch x86 --bits 64 --lib sl08e --max-size $max" \
    --prepare "sh -c '$V --repo $repo -q rm kvm/$name.img 2>/dev/null; sync'" \
    "curl -sf -o /dev/null -T $src -H 'Authorization: Bearer $token' ${url}vm/kvm/$name.img" >/dev/null
done
read -r a u q <<<"$(python3 - "$BENCH_DIR" <<'PY'
import glob, json, statistics, sys
runs = [json.load(open(f))['results'] for f in glob.glob(sys.argv[1] + '/upload-*.run.json')]
add = [r[0]['times'][0] for r in runs]
up = [r[1]['times'][0] for r in runs]
print(statistics.median(add), statistics.median(up), '%.2f' % statistics.median(u / a for a, u in zip(add, up)))
PY
)"
report "| upload $mib MiB, median of $rounds alternating rounds (load $load) | vmrepo add $(s "$a"); curl -T to vmrepo serve $(s "$u") | upload / add = $(ratio "$u" "$a") (median of the rounds' ratios $q; target <= 1.2) |"
