#!/usr/bin/env bash
# mesh-apiserver export/import: 10k global services / 50k endpoints exported by
# cluster B, imported by A, watched by an A node-agent client: time to sync,
# RSS, propagation latency p50/p99 side by side with a raw etcd watch; then
# propagation from Kubernetes: a pod's Ready flipped in cluster C's (test)
# Kubernetes API server → event at the same A node-agent client
# (K8S_SERVICES global services × K8S_PODS pods in C, defaults 100 × 5).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p mesh-apiserver --bin mesh-apiserver --example export_bench
export K8S_SERVICES="${K8S_SERVICES:-100}" K8S_PODS="${K8S_PODS:-5}"
target/release/examples/export_bench target/release/mesh-apiserver "${SERVICES:-10000}" "${ENDPOINTS:-50000}" "${CHANGES:-1000}"
