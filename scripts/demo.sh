#!/usr/bin/env bash
# The README's first command: a local multi-cluster Meshwork on this host.
# Builds, brings up 2 clusters x 2 nodes in network namespaces (mesh-lab),
# connects them with meshctl, deploys a global service with backends in both
# clusters, and prints a short report. The lab stays up until `make demo-down`.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
if [ "$(id -u)" -ne 0 ]; then
  echo "demo: needs root (network namespaces, eBPF, TUN devices)" >&2
  exit 1
fi
state=.lab
lab=(target/debug/mesh-lab --state-dir "$state")
meshctl=target/debug/meshctl
export KUBECONFIG="$PWD/$state/kubeconfig"

say "building (first time: a few minutes)"
cargo build -q --workspace --bins
if [ -f "$state/state.json" ]; then
  say "removing the previous demo lab"
  "${lab[@]}" down
fi

say "bringing up 2 clusters x 2 nodes (test Kubernetes API, etcd, mesh-apiserver, node-agents)"
"${lab[@]}" up --clusters 2 --nodes 2

say "connecting the clusters: meshctl connect --context lab-c1 --destination-context lab-c2"
$meshctl connect --context lab-c1 --destination-context lab-c2 --timeout 90s

say "deploying the global service shop/web: two backends in each cluster"
for c in 1 2; do
  for n in 1 2; do
    "${lab[@]}" pod add --cluster "c$c" --node "c$c-n$n" --namespace shop --name "web-c$c-n$n" --label app=web >/dev/null
  done
  kubectl --context "lab-c$c" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  annotations:
    service.meshwork.io/global: "true"
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
YAML
done

say "waiting until each cluster has imported the other's global service"
for pair in lab-c1:c2 lab-c2:c1; do
  set -- "${pair%%:*}" "${pair##*:}"
  for _ in $(seq 1 60); do
    n=$($meshctl status --context "$1" -o json | python3 -c "import json,sys; r=json.load(sys.stdin)['remotes'].get('$2',{}); print(r.get('counts',{}).get('services',0))")
    [ "$n" = 1 ] && break
    sleep 0.5
  done
  echo "$1 imports $n global service(s) from $2"
done

say "report"
for c in 1 2; do
  $meshctl status --context "lab-c$c"
  echo
done
echo "pods of shop/web in each cluster:"
for c in 1 2; do
  kubectl --context "lab-c$c" -n shop get pods -o wide
done
echo
echo "each backend answers with its pod, node and cluster (asked from inside its node):"
for c in 1 2; do
  for n in 1 2; do
    ip=$(kubectl --context "lab-c$c" -n shop get pod "web-c$c-n$n" -o jsonpath='{.status.podIP}')
    ip netns exec "mwlab-c$c-n$n" target/debug/mesh-echo ask "$ip:8080" | sed "s/^/  /"
  done
done

say "explore"
cat <<TXT
  export KUBECONFIG=$KUBECONFIG
  target/debug/meshctl status --context lab-c1
  kubectl --context lab-c2 get nodes,pods,svc -A
  target/debug/mesh-lab --state-dir $state status
  target/debug/mesh-lab --state-dir $state kill c2/mesh-apiserver   # then watch c1 keep c2's state, stale
  target/debug/mesh-lab --state-dir $state restart c2/mesh-apiserver
remove everything with: make demo-down
TXT
