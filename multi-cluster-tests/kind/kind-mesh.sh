#!/usr/bin/env bash
# Meshwork on kind: N clusters with kind's default CNI and kube-proxy
# disabled, distinct pod CIDRs, the Meshwork chart installed, clusters
# connected with meshctl, and the end-to-end suite run against their contexts.
#
# Needs Docker, kind, helm, kubectl and cargo. It cannot run on machines
# without a Docker engine (the project's CI VMs): there the same suite runs
# against the local lab (`make test`).
#
#   kind-mesh.sh up   [--clusters N] [--encryption] [--dry-run]
#   kind-mesh.sh test [--clusters N] [--dry-run]
#   kind-mesh.sh down [--clusters N] [--dry-run]
#
# --dry-run prints every command it would run, one per line, prefixed "+ ".
set -euo pipefail

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }

action=${1:-}
[ -n "$action" ] || { usage; exit 2; }
shift
clusters=2
encryption=false
dry_run=false
while [ $# -gt 0 ]; do
  case "$1" in
    --clusters) clusters=${2:?--clusters needs a number}; shift 2 ;;
    --encryption) encryption=true; shift ;;
    --dry-run) dry_run=true; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "kind-mesh.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$clusters" in
  [1-8]) ;;
  *) echo "kind-mesh.sh: --clusters must be 1-8" >&2; exit 2 ;;
esac

repo=$(cd "$(dirname "$0")/../.." && pwd)
tag=${MESHWORK_IMAGE_TAG:-dev}
repository=${MESHWORK_IMAGE_REPOSITORY:-localhost/meshwork}
namespace=meshwork-system

run() {
  if $dry_run; then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

need() {
  $dry_run && return 0
  for t in "$@"; do
    command -v "$t" >/dev/null || { echo "kind-mesh.sh: $t is required (install it, then retry)" >&2; exit 1; }
  done
}

kind_config() {
  local i=$1
  cat <<CFG
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  disableDefaultCNI: true
  kubeProxyMode: none
  podSubnet: 10.${i}.0.0/16
  serviceSubnet: 10.96.0.0/16
nodes:
  - role: control-plane
  - role: worker
CFG
}

up() {
  need docker kind helm kubectl
  run make -C "$repo" images IMAGE_REPOSITORY="$repository" IMAGE_TAG="$tag"
  for i in $(seq 1 "$clusters"); do
    local name=meshwork-c$i
    local cfg="$repo/.kind/c$i.yaml"
    if $dry_run; then
      echo "# $cfg:"
      kind_config "$i" | sed 's/^/#   /'
    else
      mkdir -p "$repo/.kind"
      kind_config "$i" > "$cfg"
    fi
    run kind create cluster --name "$name" --config "$cfg"
    for image in node-agent mesh-apiserver meshctl; do
      run kind load docker-image --name "$name" "$repository/$image:$tag"
    done
    run helm install meshwork "$repo/helm/meshwork" \
      --kube-context "kind-$name" --namespace "$namespace" --create-namespace \
      --set "cluster.name=c$i" --set "cluster.id=$i" --set "ipam.podCIDR=10.$i.0.0/16" \
      --set "encryption.enabled=$encryption" \
      --set "k8sServiceHost=$name-control-plane" --set "k8sServicePort=6443" \
      --set "image.repository=$repository" --set "image.tag=$tag" --set "image.pullPolicy=Never" \
      --wait --timeout 5m
  done
  for i in $(seq 1 "$clusters"); do
    for j in $(seq $((i + 1)) "$clusters"); do
      run cargo run -q --manifest-path "$repo/Cargo.toml" -p meshctl -- \
        connect --context "kind-meshwork-c$i" --destination-context "kind-meshwork-c$j" --timeout 5m
    done
  done
}

suite() {
  need cargo kubectl
  local contexts=""
  for i in $(seq 1 "$clusters"); do
    contexts="${contexts:+$contexts,}kind-meshwork-c$i"
  done
  run env "MESHWORK_E2E_CONTEXTS=$contexts" cargo test --manifest-path "$repo/Cargo.toml" -p mesh-e2e --test contexts
}

down() {
  need kind
  for i in $(seq 1 "$clusters"); do
    run kind delete cluster --name "meshwork-c$i"
  done
}

case "$action" in
  up) up ;;
  test) suite ;;
  down) down ;;
  *) echo "kind-mesh.sh: unknown action $action" >&2; usage >&2; exit 2 ;;
esac
