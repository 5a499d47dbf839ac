#!/usr/bin/env bash
# The README's first command. Until the local multi-cluster lab exists, it runs
# the most complete path that works end to end: a mesh CA for two clusters,
# their mesh-apiserver and node-agent certificates, a CA rotation with the
# dual-trust overlap, each step printed as meshctl shows it.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\n== %s\n' "$*"; }

say "building meshctl"
cargo build -q -p meshctl
meshctl=target/debug/meshctl
work=$(mktemp -d /tmp/meshwork-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT

say "create the mesh CA"
$meshctl ca create --ca-dir "$work/ca" --trust-domain demo.meshwork
say "issue certificates: mesh-apiservers of clusters c1 and c2, a node-agent of c1"
$meshctl ca issue server --ca-dir "$work/ca" --out-dir "$work/certs" --name c1-apiserver --san mesh.c1.demo >/dev/null
$meshctl ca issue cluster --ca-dir "$work/ca" --out-dir "$work/certs" --cluster c2 >/dev/null
$meshctl ca issue node --ca-dir "$work/ca" --out-dir "$work/certs" --cluster c1 --node worker-1 >/dev/null
$meshctl ca inspect "$work/certs/c2.crt" --bundle "$work/ca/bundle.crt"
say "rotate the CA: old and new trusted while certificates are reissued"
$meshctl ca rotate --ca-dir "$work/ca" | tail -n 4
mv "$work/certs/c2.crt" "$work/old-c2.crt"
$meshctl ca issue cluster --ca-dir "$work/ca" --out-dir "$work/certs" --cluster c2 >/dev/null
$meshctl ca rotate --ca-dir "$work/ca" --finish | tail -n 3
say "after the rotation: the reissued certificate is trusted, the old one is not"
$meshctl ca inspect "$work/certs/c2.crt" --bundle "$work/ca/bundle.crt" | grep verification
$meshctl ca inspect "$work/old-c2.crt" --bundle "$work/ca/bundle.crt" 2>&1 | grep -E 'verification|error' || true
say "done"
