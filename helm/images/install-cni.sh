#!/bin/sh
# Init container of the node-agent DaemonSet: installs the mesh-cni binary and
# its network config on the host, atomically (a runtime never sees half a file).
# With HOST_PORT=true (chart hostPort.enabled) the reference portmap plugin is
# chained after mesh-cni, so a pod's hostPort is served on the node's
# addresses; the image's portmap is installed when the host has none.
set -eu
bin_dir=${CNI_BIN_DIR:-/host/opt/cni/bin}
conf_dir=${CNI_CONF_DIR:-/host/etc/cni/net.d}
host_port=${HOST_PORT:-false}
mkdir -p "$bin_dir" "$conf_dir"
cp /usr/local/bin/mesh-cni "$bin_dir/.mesh-cni.tmp"
mv "$bin_dir/.mesh-cni.tmp" "$bin_dir/mesh-cni"
portmap=""
if [ "$host_port" = "true" ]; then
  if [ ! -x "$bin_dir/portmap" ]; then
    cp /usr/lib/cni/portmap "$bin_dir/.portmap.tmp"
    mv "$bin_dir/.portmap.tmp" "$bin_dir/portmap"
  fi
  portmap=',
    {
      "type": "portmap",
      "capabilities": {"portMappings": true},
      "snat": true
    }'
fi
cat > "$conf_dir/.05-meshwork.conflist.tmp" <<CONF
{
  "cniVersion": "1.0.0",
  "name": "meshwork",
  "plugins": [
    {
      "type": "mesh-cni",
      "agentSocket": "/var/run/meshwork/agent.sock",
      "stateDir": "/var/lib/meshwork"
    }$portmap
  ]
}
CONF
mv "$conf_dir/.05-meshwork.conflist.tmp" "$conf_dir/05-meshwork.conflist"
echo "install-cni: mesh-cni installed in $bin_dir, config in $conf_dir/05-meshwork.conflist"
