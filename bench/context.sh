#!/usr/bin/env bash
# vmrepo context: 1,000 NoCloud seeds (ISO 9660, volume cidata) in one run,
# against the reference made per node from the same files: genisoimage
# -volid cidata -joliet -rock (what cloud-localds runs), and cloud-localds
# itself when cloud-image-utils is installed. Also --format plain (the three
# files per node, no ISO). Target: 1,000 seeds <= 1 s.
source "$(dirname "$0")/lib.sh"
need genisoimage genisoimage
n=${NODES:-1000}
repo=$BENCH_DIR/context-repo
out=$BENCH_DIR/context-out
rm -rf "$repo" "$out"; mkdir -p "$out"
"$V" init "$repo" >/dev/null
head -c 1048576 /dev/urandom > "$BENCH_DIR/context.img"
"$V" --repo "$repo" -q add "$BENCH_DIR/context.img" --vm kvm --os sl5.3 --arch x86 --bits 64 --lib sl08e --max-size 1MB --force
img=sl5.3_x86_64_sl08e_1MB
mkdir -p "$repo/keys"
ssh-keygen -q -t ed25519 -N '' -C bench -f "$BENCH_DIR/context-key" <<<y >/dev/null 2>&1 || true
cp "$BENCH_DIR/context-key.pub" "$repo/keys/bench.pub"
args=(--repo "$repo" -q context "$img" --nodes "rcas1..rcas$n" --domain star.example.org --keys --force)
# The files the references put on their ISOs: vmrepo's own plain output.
"$V" "${args[@]}" --format plain -o "$out/plain"
cat > "$BENCH_DIR/context-ref.sh" <<SH
#!/bin/sh
set -e
mkdir -p $out/ref
for d in $out/plain/*/; do
  node=\$(basename "\$d")
  genisoimage -quiet -output $out/ref/\$node.iso -volid cidata -joliet -rock \
    "\$d/user-data" "\$d/meta-data" "\$d/network-config"
done
sync -f $out/ref
SH
chmod +x "$BENCH_DIR/context-ref.sh"
cmds=("$V ${args[*]} --format nocloud -o $out/iso" "$V ${args[*]} --format plain -o $out/plain" "$BENCH_DIR/context-ref.sh")
if command -v cloud-localds >/dev/null; then
  cat > "$BENCH_DIR/context-localds.sh" <<SH
#!/bin/sh
set -e
mkdir -p $out/localds
for d in $out/plain/*/; do
  node=\$(basename "\$d")
  cloud-localds -N "\$d/network-config" $out/localds/\$node.iso "\$d/user-data" "\$d/meta-data"
done
sync -f $out/localds
SH
  chmod +x "$BENCH_DIR/context-localds.sh"
  cmds+=("$BENCH_DIR/context-localds.sh")
fi
load=$(cut -d' ' -f1 /proc/loadavg)
hyperfine -N --warmup 1 --runs "${RUNS:-5}" --export-json "$BENCH_DIR/context.json" "${cmds[@]}"
i=$(mean "$BENCH_DIR/context.json" 0); p=$(mean "$BENCH_DIR/context.json" 1); g=$(mean "$BENCH_DIR/context.json" 2)
line="| context $n nodes (load $load) | nocloud $(s "$i"); plain $(s "$p"); genisoimage per node $(s "$g")"
if [ ${#cmds[@]} = 4 ]; then c=$(mean "$BENCH_DIR/context.json" 3); line="$line; cloud-localds per node $(s "$c")"; fi
report "$line | genisoimage / nocloud = $(ratio "$g" "$i") (target: nocloud <= 1 s) |"
rm -rf "$out"
