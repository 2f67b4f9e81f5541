#!/usr/bin/env bash
# Builds vmrepo with the C library linked statically, for this host, and
# prints the binary's path. vmrepo's commands run for a millisecond or two, so
# start-up counts: static linking saves the dynamic loader's work (about a
# third of `vmrepo info`; see docs/benchmarks.md). The target is named on the
# command line, for this host only, so that the flag applies to vmrepo's code
# and not to the compiler's plug-ins (proc macros), which must stay dynamic.
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" cargo build --release -q --target "$host" "$@"
echo "$PWD/target/$host/release/vmrepo"
