//! Nodes of every cluster → WireGuard peers, routes and the strict-mode
//! set: one pass of the agent's node controller, over the [`RouteTable`]
//! and [`EncryptionMap`] seams and the [`Encryption`] device. Peers go
//! first, so a route into the device never points at a missing peer.
//!
//! Strict mode: every other node's pod CIDR (all clusters) is listed in the
//! datapath's "must leave encrypted" set whether or not the node has a peer;
//! a node without a usable peer keeps its native route (so the choice stays
//! visible in `ip route`), and the datapath drops pod traffic that the route
//! would send around the device, with reason `encryption_required`. CIDRs
//! are listed before routes change and unlisted after, and enforcement is
//! switched off before routes leave the device and on after they enter it,
//! so neither a plaintext window nor a spurious drop opens during a pass.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use mesh_api::NodeRecord;

use crate::encryption::{Encryption, PeerOptions, desired_peers};
use crate::error::{Error, Result};
use crate::routes::{
    LocalNode, NODE_ENCRYPTION_MARK, NextHop, NodeEncryptionTable, Route, RouteTable, Tunnel,
    desired_routes, sync,
};

/// The routing part of `/v1/status`.
pub use mesh_agent_api::status::RoutingStatus;

/// The datapath's strict-mode maps (seam: [`BpfEncryptionMap`] for the
/// kernel, [`MemoryEncryptionMap`] for unit tests).
pub trait EncryptionMap {
    /// Lists every CIDR of `cidrs` (owned by the node IP given); with
    /// `prune`, unlists the others. Returns the changes as text.
    fn sync(&mut self, cidrs: &BTreeMap<Ipv4Net, Ipv4Addr>, prune: bool) -> Result<Vec<String>>;
    /// Sets enforcement.
    fn enforce(&mut self, mode: Enforce<'_>) -> Result<()>;
}

/// What strict mode does with traffic to a listed CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforce<'a> {
    /// Nothing (strict mode off).
    Off,
    /// It must leave through this WireGuard device.
    Through(&'a str),
    /// It is dropped: strict mode is on but no device is up (it failed
    /// to start, or went away). Never "off", never plaintext.
    Closed,
}

/// [`EncryptionMap`] over the pinned maps of mesh-bpf; the device's
/// ifindex is looked up in the calling thread's network namespace.
#[derive(Debug)]
pub struct BpfEncryptionMap {
    map: mesh_bpf::EncryptMap,
}

impl BpfEncryptionMap {
    /// Opens the maps pinned under `bpf_root` (the datapath must be loaded).
    pub fn open(bpf_root: &std::path::Path) -> Result<BpfEncryptionMap> {
        let map = mesh_bpf::EncryptMap::open(bpf_root).map_err(|e| Error::Datapath {
            op: "open strict-mode maps",
            target: bpf_root.display().to_string(),
            source: Box::new(e),
        })?;
        Ok(BpfEncryptionMap { map })
    }
}

fn strict_err(op: &'static str, target: String) -> impl FnOnce(mesh_bpf::Error) -> Error {
    move |e| Error::Datapath {
        op,
        target,
        source: Box::new(e),
    }
}

impl EncryptionMap for BpfEncryptionMap {
    fn sync(&mut self, cidrs: &BTreeMap<Ipv4Net, Ipv4Addr>, prune: bool) -> Result<Vec<String>> {
        let desired = cidrs
            .iter()
            .map(|(net, ip)| ((net.network(), net.prefix_len()), *ip))
            .collect();
        let done = self
            .map
            .sync(&desired, prune)
            .map_err(strict_err("sync strict-mode CIDRs", "mw_encrypt".into()))?;
        Ok(done
            .upserted
            .iter()
            .map(|(a, l)| format!("must encrypt {a}/{l}"))
            .chain(
                done.removed
                    .iter()
                    .map(|(a, l)| format!("no longer must encrypt {a}/{l}")),
            )
            .collect())
    }

    fn enforce(&mut self, mode: Enforce<'_>) -> Result<()> {
        let want = match mode {
            Enforce::Through(dev) => mesh_bpf::EncryptConfig {
                strict: true,
                wg_ifindex: mesh_bpf::netns::ifindex(dev)
                    .map_err(strict_err("look up WireGuard device", dev.to_string()))?,
            },
            // No device index: nothing listed may leave at all.
            Enforce::Closed => mesh_bpf::EncryptConfig {
                strict: true,
                wg_ifindex: 0,
            },
            Enforce::Off => mesh_bpf::EncryptConfig::default(),
        };
        let have = self.map.config().map_err(strict_err(
            "read strict-mode switch",
            "mw_encrypt_cfg".into(),
        ))?;
        if have != want {
            self.map.set_config(want).map_err(strict_err(
                "set strict-mode switch",
                "mw_encrypt_cfg".into(),
            ))?;
            tracing::info!(
                strict = want.strict,
                wg_ifindex = want.wg_ifindex,
                "strict-mode enforcement set"
            );
        }
        Ok(())
    }
}

/// An in-memory [`EncryptionMap`] (unit tests).
#[derive(Debug, Clone, Default)]
pub struct MemoryEncryptionMap {
    /// Listed CIDRs.
    pub cidrs: BTreeMap<Ipv4Net, Ipv4Addr>,
    /// Enforcement device (`closed`: strict without a device).
    pub device: Option<String>,
    /// Operations, in order (`list …`, `unlist …`, `enforce …`,
    /// `closed`, `off`).
    pub log: Vec<String>,
}

impl EncryptionMap for MemoryEncryptionMap {
    fn sync(&mut self, cidrs: &BTreeMap<Ipv4Net, Ipv4Addr>, prune: bool) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for (net, ip) in cidrs {
            if self.cidrs.insert(*net, *ip) != Some(*ip) {
                out.push(format!("list {net}"));
            }
        }
        if prune {
            let gone: Vec<Ipv4Net> = self
                .cidrs
                .keys()
                .filter(|n| !cidrs.contains_key(n))
                .copied()
                .collect();
            for n in gone {
                self.cidrs.remove(&n);
                out.push(format!("unlist {n}"));
            }
        }
        self.log.extend(out.iter().cloned());
        Ok(out)
    }

    fn enforce(&mut self, mode: Enforce<'_>) -> Result<()> {
        let device = match mode {
            Enforce::Off => None,
            Enforce::Through(d) => Some(d),
            Enforce::Closed => Some("closed"),
        };
        if self.device.as_deref() != device {
            self.device = device.map(str::to_string);
            self.log.push(match mode {
                Enforce::Through(d) => format!("enforce {d}"),
                Enforce::Closed => "closed".into(),
                Enforce::Off => "off".into(),
            });
        }
        Ok(())
    }
}

/// Every other node's IPv4 pod CIDR (all clusters, with or without a key)
/// with its node's IP, and every configured remote cluster's declared pod
/// CIDR (node IP 0.0.0.0: whether or not its nodes are known): what strict
/// mode requires to leave encrypted. A remote CIDR that overlaps this
/// node's own pods is left out (the mesh-apiserver refuses such a remote;
/// this is the second line).
pub fn must_encrypt(
    nodes: &[&NodeRecord],
    local: &LocalNode,
    remote_cidrs: &[Ipv4Net],
) -> BTreeMap<Ipv4Net, Ipv4Addr> {
    let own: Vec<Ipv4Net> = nodes
        .iter()
        .filter(|n| local.is(n))
        .flat_map(|n| n.pod_cidrs.iter())
        .chain(local.pod_cidrs.iter())
        .filter_map(|c| match c {
            ipnet::IpNet::V4(v4) => Some(*v4),
            ipnet::IpNet::V6(_) => None,
        })
        .collect();
    let overlaps = |a: &Ipv4Net, b: &Ipv4Net| a.contains(&b.network()) || b.contains(&a.network());
    let mut must: BTreeMap<Ipv4Net, Ipv4Addr> = remote_cidrs
        .iter()
        .filter(|c| !own.iter().any(|o| overlaps(o, c)))
        .map(|c| (c.trunc(), Ipv4Addr::UNSPECIFIED))
        .collect();
    must.extend(desired_routes(nodes, local, None).into_iter().filter_map(
        |(net, hop)| match hop {
            NextHop::Via(ip) => Some((net, ip)),
            NextHop::Dev(_) => None,
        },
    ));
    must
}

/// Where a pass writes: the routing table, and the datapath's strict-mode
/// maps (None: the datapath is not open yet).
pub struct Targets<'a> {
    /// The routing table.
    pub routes: &'a mut dyn RouteTable,
    /// The strict-mode maps.
    pub strict_map: Option<&'a mut dyn EncryptionMap>,
    /// Node encryption's table and rule
    /// ([`crate::routes::NODE_ENCRYPTION_TABLE`]).
    pub node_encryption: Option<&'a mut dyn NodeEncryptionTable>,
}

impl std::fmt::Debug for Targets<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Targets")
            .field("strict_map", &self.strict_map.is_some())
            .finish_non_exhaustive()
    }
}

/// Node encryption on (`device` given): the device marks its own packets,
/// the rule sends every other packet through the table, the table routes
/// other nodes' addresses into the device. Off: the same steps undone in
/// reverse order, so no packet is ever routed into a tunnel that would
/// carry itself.
fn sync_node_encryption(
    device: Option<&Encryption>,
    hosts: &BTreeMap<Ipv4Net, NextHop>,
    table: &mut dyn NodeEncryptionTable,
    changes: &mut Vec<String>,
    failures: &mut Vec<String>,
) {
    let mut routes =
        |table: &mut dyn NodeEncryptionTable, want: &BTreeMap<Ipv4Net, NextHop>| match sync(
            table, want,
        ) {
            Ok(rs) => {
                changes.extend(
                    rs.replaced
                        .iter()
                        .map(|r| format!("node encryption route {r}")),
                );
                changes.extend(
                    rs.deleted
                        .iter()
                        .map(|r| format!("node encryption route removed {r}")),
                );
                rs.failed.is_empty()
            }
            Err(e) => {
                failures.push(format!("node encryption routes: {e}"));
                false
            }
        };
    match device {
        Some(dev) => {
            if let Err(e) = dev.set_fwmark(NODE_ENCRYPTION_MARK) {
                failures.push(format!("node encryption: {e}"));
                return;
            }
            if let Err(e) = table.set_rule(true) {
                failures.push(format!("node encryption rule: {e}"));
                return;
            }
            routes(table, hosts);
        }
        None => {
            if routes(table, &BTreeMap::new())
                && let Err(e) = table.set_rule(false)
            {
                failures.push(format!("node encryption rule: {e}"));
            }
        }
    }
}

/// Runs one pass; updates `status`. With `strict`, traffic to the
/// strict-mode set must leave through `encryption`'s device, and is
/// dropped while there is none; the set (nodes' and `remote_cidrs`) is
/// kept in any case.
#[allow(clippy::too_many_arguments)]
pub fn sync_nodes(
    nodes: &[NodeRecord],
    local: &LocalNode,
    encryption: Option<&Encryption>,
    opts: &PeerOptions,
    targets: Targets<'_>,
    strict: bool,
    remote_cidrs: &[Ipv4Net],
    status: &mut RoutingStatus,
) {
    let Targets {
        routes: table,
        mut strict_map,
        node_encryption,
    } = targets;
    let refs: Vec<&NodeRecord> = nodes.iter().collect();
    let mut failures = Vec::new();
    let mut changes = Vec::new();
    let mut carried = Vec::new();
    let mut node_hosts = BTreeMap::new();
    if let Some(enc) = encryption {
        let peers = desired_peers(&refs, local, &enc.public_key(), opts);
        node_hosts = crate::encryption::node_routes(&peers, enc.ifname());
        carried = peers
            .iter()
            .flat_map(|p| p.allowed_ips.iter().copied())
            .collect();
        match enc.apply(&peers) {
            Ok(ps) => {
                for k in &ps.added {
                    changes.push(format!("peer added {k}"));
                }
                for k in &ps.updated {
                    changes.push(format!("peer updated {k}"));
                }
                for k in &ps.removed {
                    changes.push(format!("peer removed {k}"));
                }
                failures.extend(ps.rejected.iter().map(|e| format!("peer refused: {e}")));
            }
            Err(e) => failures.push(format!("{e}")),
        }
    }
    let tunnel = encryption.map(|e| Tunnel {
        dev: e.ifname(),
        carried: &carried,
    });
    let desired: BTreeMap<Ipv4Net, NextHop> = desired_routes(&refs, local, tunnel);
    let must = must_encrypt(&refs, local, remote_cidrs);
    let enforce_dev = encryption.filter(|_| strict).map(Encryption::ifname);
    // Off and closed act before routes change (closed: the device is gone,
    // drop now); through the device only after routes lead into it.
    let early = match (strict, enforce_dev) {
        (false, _) => Some(Enforce::Off),
        (true, None) => Some(Enforce::Closed),
        (true, Some(_)) => None,
    };
    if let Some(m) = strict_map.as_deref_mut() {
        match m.sync(&must, false) {
            Ok(c) => changes.extend(c),
            Err(e) => failures.push(format!("strict mode: {e}")),
        }
        if let Some(mode) = early
            && let Err(e) = m.enforce(mode)
        {
            failures.push(format!("strict mode {mode:?}: {e}"));
        }
    }
    match sync(table, &desired) {
        Ok(rs) => {
            changes.extend(rs.replaced.iter().map(|r| format!("route {r}")));
            changes.extend(rs.deleted.iter().map(|r| format!("route removed {r}")));
            failures.extend(rs.failed);
        }
        Err(e) => failures.push(format!("list routes: {e}")),
    }
    if let Some(node_table) = node_encryption {
        sync_node_encryption(
            encryption.filter(|_| opts.node_encryption),
            &node_hosts,
            node_table,
            &mut changes,
            &mut failures,
        );
    }
    if let Some(m) = strict_map {
        if let Some(dev) = enforce_dev
            && let Err(e) = m.enforce(Enforce::Through(dev))
        {
            failures.push(format!("strict mode on: {e}"));
        }
        match m.sync(&must, true) {
            Ok(c) => changes.extend(c),
            Err(e) => failures.push(format!("strict mode: {e}")),
        }
        status.strict_mode = strict;
        let closed = early == Some(Enforce::Closed);
        if closed != status.strict_closed {
            if closed {
                tracing::warn!(
                    "strict mode is on but no WireGuard device is up: traffic to other nodes' and remote clusters' pods is dropped (encryption_required) until it is"
                );
            } else {
                tracing::info!(
                    "strict mode: traffic to other nodes' pods leaves through the WireGuard device again"
                );
            }
        }
        status.strict_closed = closed;
    }
    status.must_encrypt = must.keys().copied().collect();
    let unencrypted: Vec<Ipv4Net> = match encryption {
        Some(_) => desired
            .iter()
            .filter(|(_, hop)| matches!(hop, NextHop::Via(_)))
            .map(|(net, _)| *net)
            .collect(),
        None => Vec::new(),
    };
    if unencrypted != status.unencrypted && !unencrypted.is_empty() {
        tracing::warn!(
            cidrs = ?unencrypted,
            strict_mode = enforce_dev.is_some(),
            "encryption is on but these nodes' pods have no WireGuard peer: {}",
            if enforce_dev.is_some() {
                "strict mode drops their traffic"
            } else {
                "their traffic is routed in clear (turn on encryption.strictMode to drop it)"
            }
        );
    }
    status.unencrypted = unencrypted;
    if status.node_ip.is_none() {
        status.node_ip = nodes
            .iter()
            .find(|n| local.is(n))
            .and_then(|n| n.ips.first().copied());
    }
    status.routes = desired
        .into_iter()
        .map(|(dst, next_hop)| Route { dst, next_hop })
        .collect();
    status.passes += 1;
    if !changes.is_empty() {
        tracing::info!(changes = ?changes, "nodes → routes/peers");
        status.last_changes = changes;
    }
    for f in &failures {
        tracing::warn!(failure = %f, "node sync");
    }
    status.failures = failures;
}

#[cfg(test)]
mod tests;
