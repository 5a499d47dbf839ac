#!/usr/bin/env bash
# Issue 3 benchmark: TCP connect latency and conn/s to a ClusterIP through the
# socket LB, the TC LB, kube-proxy-style iptables rules and the pod IP directly,
# at 1k and 10k services; and the time to apply one backend change (BPF map
# update vs iptables-restore). Figures side by side; nothing passes or fails.
# Sizes: MESH_BENCH_SERVICES (default "1000,10000"), MESH_BENCH_CONNS (2000).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo bench -q -p mesh-bpf --bench socket_lb
