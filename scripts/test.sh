#!/usr/bin/env bash
# Runs the whole test suite. Datapath, WireGuard and component tests need root
# (eBPF, network namespaces, TUN): they fail loudly, never skip, when not root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "test: the suite needs root (eBPF, network namespaces, TUN devices); run it as root" >&2
  exit 1
fi
# Build every test binary once, then run them; a failure in one crate still lets
# the others report, and the exit code reflects every failure.
cargo test --workspace --no-run
cargo test --workspace --no-fail-fast
