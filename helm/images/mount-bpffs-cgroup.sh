#!/bin/sh
# Init container of the node-agent DaemonSet: makes sure bpffs is mounted at
# /sys/fs/bpf (pinned maps survive agent restarts) and a cgroup v2 hierarchy
# is mounted at /run/meshwork/cgroupv2 (socket load balancing attaches there).
set -eu
if ! grep -qs ' /sys/fs/bpf bpf ' /proc/mounts; then
  mount -t bpf bpf /sys/fs/bpf
  echo "mounted bpffs at /sys/fs/bpf"
fi
if ! grep -qs ' /run/meshwork/cgroupv2 cgroup2 ' /proc/mounts; then
  mkdir -p /run/meshwork/cgroupv2
  mount -t cgroup2 none /run/meshwork/cgroupv2
  echo "mounted cgroup2 at /run/meshwork/cgroupv2"
fi
