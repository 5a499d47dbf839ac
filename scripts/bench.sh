#!/usr/bin/env bash
# Benchmarks. Each prints its figures side by side with the peer it is measured
# against, in one run. Not tests: nothing here passes or fails on a number.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "bench: needs root (eBPF, network namespaces, TUN devices)" >&2
  exit 1
fi
ran=0
for b in scripts/bench.d/*.sh; do
  [ -e "$b" ] || continue
  echo "== $(basename "$b" .sh)"
  bash "$b"
  ran=$((ran + 1))
done
[ "$ran" -gt 0 ] || { echo "bench: no benchmarks are defined yet (scripts/bench.d/*.sh)" >&2; exit 1; }
