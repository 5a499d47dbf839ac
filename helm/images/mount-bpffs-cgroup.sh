#!/bin/sh
# Init container of the node-agent DaemonSet: makes sure bpffs is mounted at
# $BPFFS_ROOT (pinned maps survive agent restarts) and the host's cgroup v2
# hierarchy at $CGROUP_ROOT (the socket load balancer attaches to its root).
# Both paths are hostPath volumes with Bidirectional propagation, so what is
# mounted here is the host's.
#
# On a cgroup v2 host the container runtime gives every container a private
# cgroup namespace: a cgroup2 mounted from it would be this pod's own subtree,
# where no other pod's process lives. So the mount is made from the host's
# cgroup namespace, entered through the host's /proc ($HOST_PROC, a hostPath
# of /proc): its pid 1 is the host's init. Only the cgroup namespace is
# entered; the mount namespace stays this container's, so its own `mount` runs
# and the mount reaches the host through the volume.
set -eu
BPFFS_ROOT=${BPFFS_ROOT:-/sys/fs/bpf}
CGROUP_ROOT=${CGROUP_ROOT:-/run/meshwork/cgroupv2}
HOST_PROC=${HOST_PROC:-/hostproc}
# The host's cgroup namespace (a test may name another process's).
HOST_CGROUP_NS=${HOST_CGROUP_NS:-$HOST_PROC/1/ns/cgroup}

if ! grep -qs " $BPFFS_ROOT bpf " /proc/mounts; then
  mount -t bpf bpf "$BPFFS_ROOT"
  echo "mounted bpffs at $BPFFS_ROOT"
fi
if ! grep -qs " $CGROUP_ROOT cgroup2 " /proc/mounts; then
  if [ ! -e "$HOST_CGROUP_NS" ]; then
    echo "mount-bpffs-cgroup: $HOST_CGROUP_NS not found: mount the host's /proc at $HOST_PROC (hostPath /proc) so cgroup v2 is mounted from the host's cgroup namespace" >&2
    exit 1
  fi
  mkdir -p "$CGROUP_ROOT"
  nsenter --cgroup="$HOST_CGROUP_NS" -- mount -t cgroup2 none "$CGROUP_ROOT"
  echo "mounted the host's cgroup v2 at $CGROUP_ROOT"
fi
