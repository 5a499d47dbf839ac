#!/usr/bin/env bash
# Runs the whole test suite: unit, datapath, WireGuard, component, chart and
# lab end-to-end tests, then the README's first command (`make demo`, then
# `make demo-down`) as on a fresh machine. The kernel-facing tests need root
# (eBPF, network namespaces, TUN): they fail loudly, never skip, when not root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "test: the suite needs root (eBPF, network namespaces, TUN devices); run it as root" >&2
  exit 1
fi
started=$SECONDS
step() { printf '\n\033[1m== test: %s\033[0m (at %ds)\n' "$*" "$((SECONDS - started))"; }

# Build everything once: the end-to-end suite drives the workspace's binaries
# (mesh-lab, meshctl, the servers, the agent, mesh-cni) from target/.
step "building the workspace (the first time takes several minutes on 2 cores)"
cargo build --workspace --all-targets

# Every crate's tests run even if one fails; the exit code reflects all of them.
step "cargo test --workspace"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo_rc=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || cargo_rc=$?

# The README's first command on a fresh machine, which has no bpffs at
# /sys/fs/bpf: in a private mount namespace where /sys/fs/bpf is an empty
# tmpfs (whatever this host has mounted there), so a demo that relies on
# anything the host happened to have fails here. Its own state dir and name,
# so a person's demo on this machine is left alone.
step "make demo, then make demo-down, with /sys/fs/bpf empty (a fresh machine)"
export MESHWORK_DEMO_STATE="$PWD/target/demo-fresh-machine"
export MESHWORK_DEMO_NAME=fresh
export MESHWORK_DEMO_PREBUILT=1
demo_rc=0
# shellcheck disable=SC2016 # expanded by the inner shell
unshare --mount --propagation private -- bash -c '
  set -u
  mount -t tmpfs -o mode=0700 fresh-machine /sys/fs/bpf || exit 1
  if [ -n "$(ls -A /sys/fs/bpf)" ]; then echo "test: /sys/fs/bpf is not empty" >&2; exit 1; fi
  make -s demo; rc=$?
  make -s demo-down || rc=1
  exit $rc
' || demo_rc=$?

# One closing line for the whole run: cargo test's counts plus the demo.
passed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^passed;?$/) s += $i } END { print s + 0 }' "$log")
failed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^failed;?$/) s += $i } END { print s + 0 }' "$log")
if [ "$demo_rc" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "test: the fresh-machine demo FAILED" >&2; fi
if [ "$cargo_rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
  # cargo failed without a failed test (a build or harness error).
  failed=1
fi
printf '\ntest: finished in %ds\n' "$((SECONDS - started))"
echo "test: $passed passed, $failed failed"
[ "$cargo_rc" -eq 0 ] && [ "$demo_rc" -eq 0 ]
