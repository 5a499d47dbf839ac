#!/bin/sh
# Init container of the node-agent DaemonSet: installs the mesh-cni binary and
# its network config on the host, atomically (a runtime never sees half a file).
set -eu
bin_dir=${CNI_BIN_DIR:-/host/opt/cni/bin}
conf_dir=${CNI_CONF_DIR:-/host/etc/cni/net.d}
mkdir -p "$bin_dir" "$conf_dir"
cp /usr/local/bin/mesh-cni "$bin_dir/.mesh-cni.tmp"
mv "$bin_dir/.mesh-cni.tmp" "$bin_dir/mesh-cni"
cat > "$conf_dir/.05-meshwork.conflist.tmp" <<CONF
{
  "cniVersion": "1.0.0",
  "name": "meshwork",
  "plugins": [
    {
      "type": "mesh-cni",
      "agentSocket": "/var/run/meshwork/agent.sock",
      "stateDir": "/var/lib/meshwork"
    }
  ]
}
CONF
mv "$conf_dir/.05-meshwork.conflist.tmp" "$conf_dir/05-meshwork.conflist"
echo "install-cni: mesh-cni installed in $bin_dir, config in $conf_dir/05-meshwork.conflist"
