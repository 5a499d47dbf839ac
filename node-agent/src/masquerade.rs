//! BPF masquerade, the agent's side: which destinations keep a pod's own
//! address (the exempt set: the pod CIDRs of every node of every cluster,
//! each configured remote cluster's declared pod CIDR, every node address,
//! and `--non-masquerade-cidrs`, like ip-masq-agent's nonMasqueradeCIDRs),
//! and the switch with this node's address, pod CIDR and port range.
//!
//! The same switch carries the address and ports NodePort flows to a
//! backend on another node are SNATed with, which happens whether or not
//! masquerade is on.
//!
//! One pass ([`sync`]) writes the exempt set first and turns masquerade on
//! only once it holds, so the datapath never masquerades traffic to a pod
//! it was not told about yet; when the set cannot be written, masquerade is
//! turned off (pods keep their address: outside destinations may not
//! answer, but no peer inside sees a pod as its node, which a policy
//! admitting `remote-node` would let in). Pure planning beside the
//! [`MasqueradeTable`] seam; [`BpfMasqueradeTable`] is the kernel's.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;

use ipnet::{IpNet, Ipv4Net};
use mesh_api::NodeRecord;

use crate::error::{Error, Result};
use crate::routes::LocalNode;

/// The masquerade part of `/v1/status`.
pub use mesh_agent_api::status::MasqueradeStatus;

/// What the flags and the node give masquerade (and NodePort SNAT, which
/// uses the same address and ports whether or not masquerade is on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasqueradeSettings {
    /// `--enable-bpf-masquerade`.
    pub masquerade: bool,
    /// The node's address (its Node's first InternalIP, read at start-up:
    /// the node programs are attached to the interface holding it).
    pub node_ip: Option<Ipv4Addr>,
    /// Ports translated flows get (outside the node's ephemeral range).
    pub ports: RangeInclusive<u16>,
    /// `--non-masquerade-cidrs`.
    pub extra_exempt: Vec<Ipv4Net>,
}

/// The destinations that keep a pod's own address.
pub fn exempt(
    nodes: &[NodeRecord],
    local: &LocalNode,
    remote_cidrs: &[Ipv4Net],
    extra: &[Ipv4Net],
) -> BTreeSet<Ipv4Net> {
    let v4 = |c: &IpNet| match c {
        IpNet::V4(v4) => Some(v4.trunc()),
        IpNet::V6(_) => None,
    };
    let mut out: BTreeSet<Ipv4Net> = nodes
        .iter()
        .flat_map(|n| n.pod_cidrs.iter())
        .chain(local.pod_cidrs.iter())
        .filter_map(v4)
        .collect();
    out.extend(remote_cidrs.iter().map(Ipv4Net::trunc));
    out.extend(extra.iter().map(Ipv4Net::trunc));
    out.extend(
        nodes
            .iter()
            .flat_map(|n| n.ips.iter())
            .filter_map(|ip| match ip {
                IpAddr::V4(a) => Some(Ipv4Net::from(*a)),
                IpAddr::V6(_) => None,
            }),
    );
    out
}

/// The switch as the datapath takes it, or why masquerade stays off.
pub fn plan(
    settings: &MasqueradeSettings,
    local: &LocalNode,
) -> std::result::Result<mesh_bpf::MasqueradeConfig, String> {
    let node_addr = settings.node_ip.ok_or(
        "this node's address is not known (the Node had no IPv4 InternalIP when the agent started, or Kubernetes was not reachable)",
    )?;
    let pod_cidr = local
        .pod_cidrs
        .iter()
        .find_map(|c| match c {
            IpNet::V4(v4) => Some(v4.trunc()),
            IpNet::V6(_) => None,
        })
        .ok_or("this node has no IPv4 pod CIDR")?;
    Ok(mesh_bpf::MasqueradeConfig {
        node_addr,
        masquerade: settings.masquerade,
        pod_cidr: (pod_cidr.network(), pod_cidr.prefix_len()),
        ports: settings.ports.clone(),
    })
}

/// The datapath's masquerade maps (seam).
pub trait MasqueradeTable {
    /// Makes the exempt set `cidrs`; returns the changes as text.
    fn sync_exempt(&mut self, cidrs: &BTreeSet<Ipv4Net>) -> Result<Vec<String>>;
    /// Turns masquerade on with `config`, or off.
    fn set_config(&mut self, config: Option<&mesh_bpf::MasqueradeConfig>) -> Result<()>;
}

/// One pass: the exempt set, then the switch. Returns the status, with
/// changes appended to `changes` and failures to `failures`.
pub fn sync(
    settings: &MasqueradeSettings,
    nodes: &[NodeRecord],
    local: &LocalNode,
    remote_cidrs: &[Ipv4Net],
    table: &mut dyn MasqueradeTable,
    changes: &mut Vec<String>,
    failures: &mut Vec<String>,
) -> MasqueradeStatus {
    let set = exempt(nodes, local, remote_cidrs, &settings.extra_exempt);
    let mut status = MasqueradeStatus {
        enabled: settings.masquerade,
        active: false,
        node_ip: None,
        ports: format!("{}-{}", settings.ports.start(), settings.ports.end()),
        exempt: set.iter().copied().collect(),
        reason: None,
    };
    let off = |table: &mut dyn MasqueradeTable, failures: &mut Vec<String>| {
        if let Err(e) = table.set_config(None) {
            failures.push(format!("masquerade off: {e}"));
        }
    };
    match table.sync_exempt(&set) {
        Ok(c) => changes.extend(c),
        Err(e) => {
            failures.push(format!("masquerade exempt set: {e}"));
            status.reason = Some(format!(
                "the exempt set cannot be written ({e}); off rather than masquerading traffic to pods"
            ));
            off(table, failures);
            return status;
        }
    }
    match plan(settings, local) {
        Ok(config) => match table.set_config(Some(&config)) {
            Ok(()) => {
                status.active = config.masquerade;
                status.node_ip = Some(config.node_addr);
                if !config.masquerade {
                    status.reason = Some(
                        "--enable-bpf-masquerade is off (NodePort SNAT still uses the node's address)"
                            .into(),
                    );
                }
            }
            Err(e) => {
                failures.push(format!("masquerade on: {e}"));
                status.reason = Some(e.to_string());
            }
        },
        Err(why) => {
            status.reason = Some(why);
            off(table, failures);
        }
    }
    status
}

/// The ephemeral port range of the calling thread's network namespace
/// (`/proc/sys/net/ipv4/ip_local_port_range`), and the masquerade ports
/// outside it.
pub fn ports_for_this_node() -> Result<RangeInclusive<u16>> {
    let path = "/proc/sys/net/ipv4/ip_local_port_range";
    let text = std::fs::read_to_string(path).map_err(Error::io("read", path))?;
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    let (Some(Ok(lo)), Some(Ok(hi))) = (it.next(), it.next()) else {
        return Err(Error::Config {
            flag: "enable-bpf-masquerade",
            reason: format!("{path}: cannot parse {text:?}"),
        });
    };
    mesh_bpf::ports_outside(lo..=hi).ok_or_else(|| Error::Config {
        flag: "enable-bpf-masquerade",
        reason: format!(
            "{path} is {lo}-{hi}: no room for 1024 masquerade ports above or below it (narrow it, or turn masquerade off)"
        ),
    })
}

/// [`MasqueradeTable`] over the pinned maps of mesh-bpf.
#[derive(Debug)]
pub struct BpfMasqueradeTable {
    map: mesh_bpf::MasqueradeMap,
}

impl BpfMasqueradeTable {
    /// Opens the pinned maps under `bpf_root` (after the datapath loaded).
    pub fn open(bpf_root: &std::path::Path) -> Result<BpfMasqueradeTable> {
        let map = mesh_bpf::MasqueradeMap::open(bpf_root).map_err(|e| Error::Datapath {
            op: "open masquerade maps",
            target: bpf_root.display().to_string(),
            source: Box::new(e),
        })?;
        Ok(BpfMasqueradeTable { map })
    }
}

impl MasqueradeTable for BpfMasqueradeTable {
    fn sync_exempt(&mut self, cidrs: &BTreeSet<Ipv4Net>) -> Result<Vec<String>> {
        let want = cidrs
            .iter()
            .map(|c| (c.network(), c.prefix_len()))
            .collect();
        let (added, removed) = self.map.sync_exempt(&want).map_err(map_err("sync"))?;
        Ok(added
            .iter()
            .map(|(a, l)| format!("masquerade exempt {a}/{l}"))
            .chain(
                removed
                    .iter()
                    .map(|(a, l)| format!("masquerade exempt removed {a}/{l}")),
            )
            .collect())
    }

    fn set_config(&mut self, config: Option<&mesh_bpf::MasqueradeConfig>) -> Result<()> {
        let have = self.map.config().map_err(map_err("read"))?;
        if have.as_ref() == config {
            return Ok(());
        }
        self.map.set_config(config).map_err(map_err("set"))?;
        match config {
            Some(c) => tracing::info!(
                node = %c.node_addr, pod_cidr = %format!("{}/{}", c.pod_cidr.0, c.pod_cidr.1),
                ports = %format!("{}-{}", c.ports.start(), c.ports.end()),
                "BPF masquerade on: pod traffic to destinations outside the exempt set leaves with the node's address"
            ),
            None => tracing::info!("BPF masquerade off"),
        }
        Ok(())
    }
}

fn map_err(op: &'static str) -> impl FnOnce(mesh_bpf::Error) -> Error {
    move |e| Error::Datapath {
        op,
        target: "masquerade maps".into(),
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests;
