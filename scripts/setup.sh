#!/usr/bin/env bash
# Installs what building, demoing and testing Meshwork needs on a fresh Debian
# machine of the project's kind. Idempotent: it installs only what is missing and
# says what it did. Called by `make demo` and `make test`; safe to run by hand.
set -euo pipefail

say() { printf 'setup: %s\n' "$*"; }

# Debian packages, one line per reason.
DEB_PACKAGES=(
  clang llvm libbpf-dev linux-libc-dev bpftool    # eBPF programs in C, bpftool for map dumps
  iproute2 iptables ethtool tcpdump iperf3        # namespaces, veth, bridges; captures; benchmarks
  iputils-ping socat                              # test clients inside namespaces
  openssl                                         # independent certificate verifier in tests
  shellcheck                                      # the kind scripts are shellcheck-clean (tested)
  curl                                            # mesh-apiserver tests read /status and /metrics over HTTP
  protobuf-compiler libprotobuf-dev               # etcd-client's build script needs protoc and the well-known .proto files
  etcd-server                                     # the real store for component tests and the lab
  containernetworking-plugins                     # the reference portmap plugin the lab chains for hostPort
  wireguard-tools wireguard-go                    # `wg` and an independent WireGuard peer
  python3-kubernetes                              # the official Python client drives the lab's test API server in tests
)
# Python packages (PyPI).
PIP_PACKAGES=(
  helm-python-sdk                                 # Helm v4 engine as a library: render and lint the chart in tests
)

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    say "missing Debian packages: ${missing[*]}; run this script as root (or install them) and retry" >&2
    exit 1
  fi
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends: wireguard-tools would otherwise pull in a kernel image.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "Debian packages present"
fi

for p in "${PIP_PACKAGES[@]}"; do
  if python3 -m pip show "${p%%=*}" >/dev/null 2>&1; then
    continue
  fi
  say "installing PyPI package: $p"
  python3 -m pip install -q "$p"
done

# Rust components used by `make lint`.
for c in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$c" || { say "adding rustup component $c"; rustup component add "$c"; }
done
command -v cargo-nextest >/dev/null || say "cargo-nextest not found: tests run with cargo test"
say "ready"
