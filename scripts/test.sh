#!/usr/bin/env bash
# Runs the whole test suite: unit, datapath, WireGuard, component, chart and
# lab end-to-end tests. The kernel-facing tests need root (eBPF, network
# namespaces, TUN): they fail loudly, never skip, when not root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "test: the suite needs root (eBPF, network namespaces, TUN devices); run it as root" >&2
  exit 1
fi
# Build everything once: the end-to-end suite drives the workspace's binaries
# (mesh-lab, meshctl, the servers, the agent, mesh-cni) from target/.
cargo build --workspace --all-targets
# Every crate's tests run even if one fails; the exit code reflects all of them.
cargo test --workspace --no-fail-fast
