#!/usr/bin/env bash
# BPF masquerade: new TCP connections/s and connect latency from a pod to a
# host outside the cluster network through BPF masquerade, iptables
# MASQUERADE and no NAT (the limit), side by side. Nothing passes or fails.
# Size: MESH_BENCH_CONNS (default 2000).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo bench -q -p mesh-bpf --bench masquerade
