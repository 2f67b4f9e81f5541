#!/usr/bin/env bash
# How fast the kernel copies a read into the caller's buffer, by where the
# buffer starts (docs/benchmarks.md, "Aligned I/O buffers"): a 1 GiB file in
# the page cache read with 1 MiB preadv calls into one buffer that starts 0,
# 16, 64 or 4096 bytes past a page. 16 is where glibc's malloc puts a large
# Vec<u8>; vmrepo's IoBuf starts on a page. ROUNDS (default 5) rounds, system
# time per GiB, best and median.
source "$(dirname "$0")/lib.sh"
file=$BENCH_DIR/align-1g
random_file "$file" 1024
cat "$file" > /dev/null
report "## Kernel copy into a read buffer, by its offset past a page ($(date -u +%F), $(nproc) cores, $(uname -r))"
report ""
report "| offset | system time per GiB, best | median |"
report "|---|---|---|"
python3 - "$file" "${ROUNDS:-5}" <<'PY' | while read -r line; do report "$line"; done
import mmap, os, statistics, sys

path, rounds = sys.argv[1], int(sys.argv[2])
piece = 1 << 20
arena = mmap.mmap(-1, piece + 2 * 4096)  # page-aligned, as mmap always is
fd = os.open(path, os.O_RDONLY)
size = os.fstat(fd).st_size
results = {}
for _ in range(rounds):
    for offset in (0, 16, 64, 4096):
        buf = memoryview(arena)[offset:offset + piece]
        start = os.times().system
        pos = 0
        while pos < size:
            n = os.preadv(fd, [buf], pos)
            if n <= 0:
                break
            pos += n
        results.setdefault(offset, []).append((os.times().system - start) * (1 << 30) / size)
for offset, t in results.items():
    print(f"| {offset} | {min(t):.2f} s | {statistics.median(t):.2f} s |")
PY
