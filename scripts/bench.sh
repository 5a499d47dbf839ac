#!/usr/bin/env bash
# Benchmarks. Each prints its figures side by side with the peer it is measured
# against, in one run, and ends with one machine-readable line per figure:
# `BENCH <name> key=value ...`. Not tests: nothing here passes or fails on a
# number (only a benchmark without BENCH lines is an error).
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
  out=$(mktemp)
  bash "$b" | tee "$out"
  # Each benchmark ends with one machine-readable line per figure.
  if ! grep -q '^BENCH [a-z0-9_]* [a-z0-9_]*=' "$out"; then
    echo "bench: $(basename "$b") printed no 'BENCH <name> key=value ...' line" >&2
    rm -f "$out"
    exit 1
  fi
  rm -f "$out"
  ran=$((ran + 1))
done
[ "$ran" -gt 0 ] || { echo "bench: no benchmarks are defined yet (scripts/bench.d/*.sh)" >&2; exit 1; }
