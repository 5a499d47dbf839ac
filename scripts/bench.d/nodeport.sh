#!/usr/bin/env bash
# NodePort: new TCP connections/s and connect latency from a host outside the
# cluster through our TC NodePort, kube-proxy-style iptables DNAT and the pod
# directly (no NAT), side by side. XDP acceleration is not implemented
# yet. Nothing passes or fails. Size: MESH_BENCH_CONNS (default 2000).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo bench -q -p mesh-bpf --bench nodeport
