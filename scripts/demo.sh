#!/usr/bin/env bash
# The README's first command: a local multi-cluster Meshwork on this host.
# Builds, brings up 2 clusters x 2 nodes in network namespaces (mesh-lab) with
# WireGuard encryption on, connects them with meshctl, deploys a global service
# backed by a Deployment in both clusters, sends requests to it from a pod and reports
# which cluster answered each, and what the wire carried. The lab stays up
# until `make demo-down`.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each step is announced with the time the previous one took, so a long first
# build or a slow step is never silent.
started=$SECONDS
last=$SECONDS
say() {
  local took=$((SECONDS - last))
  last=$SECONDS
  [ "$took" -gt 0 ] && printf '   (%ds)\n' "$took"
  printf '\n\033[1m== %s\033[0m\n' "$*"
}
if [ "$(id -u)" -ne 0 ]; then
  echo "demo: needs root (network namespaces, eBPF, TUN devices)" >&2
  exit 1
fi
# MESHWORK_DEMO_STATE / MESHWORK_DEMO_NAME: where the lab keeps its state and
# the prefix of what it creates, so the suite's run never meets a person's demo.
state=${MESHWORK_DEMO_STATE:-.lab}
name=${MESHWORK_DEMO_NAME:-lab}
prefix=mw$name
lab=(target/debug/mesh-lab --state-dir "$state" --name "$name")
meshctl=target/debug/meshctl
KUBECONFIG="$(realpath -m "$state")/kubeconfig"
export KUBECONFIG

# MESHWORK_DEMO_PREBUILT=1: use the binaries already in target/debug (the
# suite sets it: it has just built and tested them with --all-targets, and a
# --bins build would compile the workspace again with other features).
if [ "${MESHWORK_DEMO_PREBUILT:-}" = 1 ]; then
  say "using the binaries already built in target/debug"
else
  say "building (the first time takes several minutes on 2 cores; cargo shows its progress)"
  cargo build --workspace --bins
fi
if [ -f "$state/state.json" ]; then
  say "removing the previous demo lab"
  "${lab[@]}" down
fi

say "bringing up 2 clusters x 2 nodes with encryption (test Kubernetes API, etcd, mesh-apiserver, node-agents)"
"${lab[@]}" up --clusters 2 --nodes 2 --encryption

say "connecting the clusters: meshctl connect --context lab-c1 --destination-context lab-c2"
$meshctl connect --context lab-c1 --destination-context lab-c2 --timeout 90s

say "deploying the global service shop/web: a Deployment of two backends in each cluster"
for c in 1 2; do
  kubectl --context "lab-c$c" create namespace shop >/dev/null
  kubectl --context "lab-c$c" -n shop create deployment web --image=mesh-echo --replicas=2 --port=8080 >/dev/null
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
for c in 1 2; do
  kubectl --context "lab-c$c" -n shop rollout status deployment/web --timeout=60s >/dev/null
  echo "lab-c$c: deployment shop/web $(kubectl --context "lab-c$c" -n shop get deployment web -o jsonpath='{.status.readyReplicas}/{.spec.replicas}') ready, pods on $(kubectl --context "lab-c$c" -n shop get pods -l app=web -o jsonpath='{.items[*].spec.nodeName}')"
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

say "requests to the global service from a pod in c1"
"${lab[@]}" pod add --cluster c1 --node c1-n1 --namespace shop --name client --label app=client >/dev/null
cip=$(kubectl --context lab-c1 -n shop get svc web -o jsonpath='{.spec.clusterIP}')
client=(ip netns exec "$prefix-pod-c1-shop-client" target/debug/mesh-echo)
for _ in $(seq 1 60); do
  "${client[@]}" ask "$cip:80" --timeout-ms 1000 >/dev/null 2>&1 && break
  sleep 0.5
done
pcap="$state/demo.pcap"
# --immediate-mode: without it most of a short burst is still buffered at
# SIGINT and lost, and "0 packets with a pod address" would prove nothing.
ip netns exec "$prefix-ul" tcpdump -Z root --immediate-mode -i br0 -nn -U -s 0 -w "$pcap" 2>/dev/null &
dump=$!
sleep 1
answers=$("${client[@]}" ask "$cip:80" -c 20 || true)
sleep 0.5
kill -INT "$dump"; wait "$dump" 2>/dev/null || true
echo "20 requests to shop/web at its ClusterIP $cip:80 in c1:"
# Exits 1 unless all 20 were answered and both clusters answered some.
served=0
printf '%s\n' "$answers" | python3 -c '
import collections, json, sys
by, clusters, failed = collections.Counter(), set(), 0
for line in sys.stdin:
    if not line.strip():
        continue
    a = json.loads(line).get("answer")
    if a:
        clusters.add(a["cluster"])
    else:
        failed += 1
    by[(a["cluster"] + " (" + a["pod"] + ")") if a else "failed"] += 1
for k, n in sorted(by.items()):
    print(f"  {n:3d} answered by {k}")
sys.exit(0 if sum(by.values()) == 20 and failed == 0 and len(clusters) == 2 else 1)
' || served=1
wg=$(tcpdump -r "$pcap" -nn 'udp port 51871' 2>/dev/null | wc -l)
plain=$(tcpdump -r "$pcap" -nn 'net 10.0.0.0/8' 2>/dev/null | wc -l)
echo "the underlay carried $wg WireGuard packets and $plain packets with a pod address (0: nothing left unencrypted)"

say "report"
for c in 1 2; do
  $meshctl status --context "lab-c$c"
  echo
done
echo "WireGuard on node c1-n1 (the stock wg tool reads Meshwork's device):"
ip netns exec "$prefix-c1-n1" wg show "mwg-${prefix}11" | sed 's/^/  /'
echo
echo "why shop/client reaches shop/web, hop by hop (meshctl explain):"
$meshctl explain --context lab-c1 shop/client shop/web:80 | sed 's/^/  /' || true
echo
say "explore"
cat <<TXT
  export KUBECONFIG=$KUBECONFIG
  target/debug/meshctl status --context lab-c1
  target/debug/meshctl explain --context lab-c1 shop/client shop/web:80
  target/debug/meshctl observe --context lab-c1 --pod shop/client --follow
  target/debug/meshctl services --context lab-c1
  target/debug/meshctl encryption status --context lab-c1
  ip netns exec $prefix-pod-c1-shop-client target/debug/mesh-echo ask $cip:80 -c 10
  kubectl --context lab-c2 get nodes,pods,svc -A
  kubectl --context lab-c1 -n shop scale deployment web --replicas=4   # c2 sees 4 backends in c1
  kubectl --context lab-c1 -n shop set env deployment/web COLOR=blue   # a rolling replacement
  ${lab[*]} status
  ${lab[*]} kill c2/mesh-apiserver   # then watch c1 keep c2's state, stale
  ${lab[*]} restart c2/mesh-apiserver
remove everything with: make demo-down
TXT
if [ "$served" -ne 0 ] || [ "$plain" -ne 0 ] || [ "$wg" -eq 0 ]; then
  echo "demo: FAILED: the global service was not served by both clusters, or the wire carried a pod address in the clear (see above; logs in $state/logs)" >&2
  exit 1
fi
printf '\ndemo: ready in %ds\n' "$((SECONDS - started))"
