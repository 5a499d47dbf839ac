#!/usr/bin/env bash
# WireGuard throughput benchmark: iperf3 TCP (1 and 4 streams) between two
# network namespaces joined by a veth pair, for
#   plaintext veth (the limit), wireguard-go <-> wireguard-go,
#   ours <-> ours, ours <-> wireguard-go,
# with CPU per Gbit/s (all CPU of the WireGuard processes and iperf3, from a
# cgroup of their own). Prints one table with ratios. Not a test: nothing
# here passes or fails on a number. Needs root.
#
# The last row turns off our TUN offload and UDP GSO/GRO, to show what they pay.
# Env: BENCH_SECONDS (default 5), MESH_WG_QUEUES (ours: TUN queues, default 2).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" -eq 0 ] || { echo "wireguard bench: needs root" >&2; exit 1; }
SECS=${BENCH_SECONDS:-5}
QUEUES=${MESH_WG_QUEUES:-2}
for t in iperf3 wireguard-go wg python3; do
  command -v "$t" >/dev/null || { echo "wireguard bench: $t missing (run scripts/setup.sh)" >&2; exit 1; }
done

echo "building mesh-wg (release)..." >&2
cargo build -q --release -p mesh-wireguard --bin mesh-wg
OURS=$PWD/target/release/mesh-wg

ID=$$
NA=mwbenchA$ID; NB=mwbenchB$ID
PAIR=0; IFA=mwbA$ID$PAIR; IFB=mwbB$ID$PAIR
WORK=$(mktemp -d /tmp/mesh-wg-bench.XXXXXX)
CGROOT=/sys/fs/cgroup/unified; [ -e $CGROOT/cgroup.procs ] || CGROOT=/sys/fs/cgroup
CG=$CGROOT/meshwork-bench-$ID
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del $NA 2>/dev/null || true
  ip netns del $NB 2>/dev/null || true
  rm -f /var/run/wireguard/$IFA.sock /var/run/wireguard/$IFB.sock
  if [ -d "$CG" ]; then
    while read -r p; do echo "$p" > "$CGROOT/cgroup.procs" 2>/dev/null || true; done < "$CG/cgroup.procs" || true
    rmdir "$CG" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir "$CG"
ip netns add $NA; ip netns add $NB
ip link add bva$ID type veth peer name bvb$ID
ip link set bva$ID netns $NA name u0; ip link set bvb$ID netns $NB name u0
ip -n $NA link set lo up; ip -n $NB link set lo up
ip -n $NA addr add 192.168.95.1/24 dev u0; ip -n $NA link set u0 up
ip -n $NB addr add 192.168.95.2/24 dev u0; ip -n $NB link set u0 up

# Runs a command in a namespace, inside the bench cgroup.
in_cg() { local ns=$1; shift; exec sh -c 'echo $$ > "$0/cgroup.procs"; exec "$@"' "$CG" ip netns exec "$ns" "$@"; }
cg_usec() { awk '/^usage_usec/ {print $2}' "$CG/cpu.stat"; }

start_dev() { # kind ns ifname statedir
  local kind=$1 ns=$2 ifn=$3 sd=$4
  mkdir -p "$sd"
  if [ "$kind" = ours ] || [ "$kind" = ours-nooff ]; then
    local extra=()
    [ "$kind" = ours-nooff ] && extra=(--no-offload)
    in_cg "$ns" "$OURS" --ifname "$ifn" --port 51871 --state-dir "$sd" --queues "$QUEUES" "${extra[@]}" 2>"$sd/log" &
  else
    WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 in_cg "$ns" wireguard-go -f "$ifn" >"$sd/log" 2>&1 &
  fi
  PIDS+=($!)
  for _ in $(seq 100); do [ -S "/var/run/wireguard/$ifn.sock" ] && break; sleep 0.05; done
  if ! ip netns exec "$ns" wg show "$ifn" >/dev/null 2>&1; then
    echo "$kind did not start: $(cat "$sd/log")" >&2
    exit 1
  fi
  if [ "$kind" = go ]; then
    (umask 077; wg genkey > "$sd/key")
    ip netns exec "$ns" wg set "$ifn" private-key "$sd/key" listen-port 51871
  fi
}

stop_devs() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
  rm -f /var/run/wireguard/$IFA.sock /var/run/wireguard/$IFB.sock
}

setup_pair() { # kindA kindB
  PAIR=$((PAIR + 1)); IFA=mwbA$ID$PAIR; IFB=mwbB$ID$PAIR
  start_dev "$1" $NA $IFA "$WORK/a$PAIR"
  start_dev "$2" $NB $IFB "$WORK/b$PAIR"
  local pa pb
  pa=$(ip netns exec $NA wg show $IFA public-key); pb=$(ip netns exec $NB wg show $IFB public-key)
  ip netns exec $NA wg set $IFA peer "$pb" endpoint 192.168.95.2:51871 allowed-ips 10.95.0.2/32
  ip netns exec $NB wg set $IFB peer "$pa" endpoint 192.168.95.1:51871 allowed-ips 10.95.0.1/32
  ip -n $NA addr add 10.95.0.1/24 dev $IFA; ip -n $NA link set $IFA up
  ip -n $NB addr add 10.95.0.2/24 dev $IFB; ip -n $NB link set $IFB up
  ip netns exec $NA ping -c 2 -W 2 10.95.0.2 >/dev/null || { echo "tunnel $1<->$2 does not pass ping" >&2; exit 1; }
}

declare -A GBPS CPU
measure() { # label server_ip
  local label=$1 ip=$2 srv
  for streams in 1 4; do
    in_cg $NB iperf3 -s -1 -B "$ip" -p 5202 >/dev/null 2>&1 &
    srv=$!
    sleep 0.3
    local before after json
    before=$(cg_usec)
    json=$(in_cg $NA iperf3 -c "$ip" -p 5202 -t "$SECS" -O 1 -P $streams -J)
    after=$(cg_usec)
    wait $srv 2>/dev/null || true
    local bps
    bps=$(printf '%s' "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])')
    # CPU cores busy (all cgroup processes) divided by Gbit/s.
    GBPS[$label,$streams]=$(python3 -c "print(f'{$bps/1e9:.2f}')")
    CPU[$label,$streams]=$(python3 -c "secs=$SECS+1; cores=($after-$before)/1e6/secs; print(f'{cores/($bps/1e9):.2f}')")
    echo "  $label, $streams stream(s): ${GBPS[$label,$streams]} Gbit/s, ${CPU[$label,$streams]} cores per Gbit/s" >&2
  done
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores (other jobs share this machine)"
measure plaintext 192.168.95.2
setup_pair go go;     measure go-go 10.95.0.2;     stop_devs
setup_pair ours ours; measure ours-ours 10.95.0.2; stop_devs
setup_pair ours go;   measure ours-go 10.95.0.2;   stop_devs
setup_pair ours-nooff ours-nooff; measure ours-nooff 10.95.0.2; stop_devs
echo "load after:  $(cut -d' ' -f1-3 /proc/loadavg)"

printf '\n%-34s %10s %10s %12s %12s %10s %10s\n' "path (iperf3 TCP, ${SECS}s)" "1 stream" "4 streams" "cores/Gb 1s" "cores/Gb 4s" "vs go 1s" "vs go 4s"
for l in plaintext go-go ours-ours ours-go ours-nooff; do
  case $l in
    plaintext) name="plaintext veth (limit)";; go-go) name="wireguard-go <-> wireguard-go";;
    ours-ours) name="mesh-wg <-> mesh-wg (queues=$QUEUES)";; ours-go) name="mesh-wg <-> wireguard-go";;
    ours-nooff) name="mesh-wg <-> mesh-wg, offload off";;
  esac
  r1=$(python3 -c "print(f'{${GBPS[$l,1]}/max(${GBPS[go-go,1]},0.001):.2f}x')")
  r4=$(python3 -c "print(f'{${GBPS[$l,4]}/max(${GBPS[go-go,4]},0.001):.2f}x')")
  printf '%-34s %8s G %8s G %12s %12s %10s %10s\n' "$name" "${GBPS[$l,1]}" "${GBPS[$l,4]}" "${CPU[$l,1]}" "${CPU[$l,4]}" "$r1" "$r4"
done

# Machine-readable figures, one line per path and stream count.
echo
for l in plaintext go-go ours-ours ours-go ours-nooff; do
  for s in 1 4; do
    echo "BENCH wireguard_throughput path=$l streams=$s gbit_per_s=${GBPS[$l,$s]} cores_per_gbit=${CPU[$l,$s]} seconds=$SECS"
  done
done
