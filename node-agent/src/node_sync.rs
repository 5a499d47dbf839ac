//! Nodes of every cluster → WireGuard peers and routes: one pass of the
//! agent's node controller, over the [`RouteTable`] seam and the
//! [`Encryption`] device. Peers go first, so a route into the device never
//! points at a missing peer.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::Ipv4Net;
use mesh_api::NodeRecord;
use serde::{Deserialize, Serialize};

use crate::encryption::{Encryption, PeerOptions, desired_peers};
use crate::routes::{LocalNode, NextHop, Route, RouteTable, Tunnel, desired_routes, sync};

/// The routing part of `/v1/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingStatus {
    /// This node's IP (Node InternalIP, else its record from the mesh feed).
    pub node_ip: Option<IpAddr>,
    /// The routes the agent wants (and, after a clean pass, holds).
    pub routes: Vec<Route>,
    /// Passes run.
    pub passes: u64,
    /// Routes written in the last pass that changed something.
    pub last_changes: Vec<String>,
    /// Failures of the last pass (retried on the next).
    pub failures: Vec<String>,
}

/// Runs one pass; updates `status`.
pub fn sync_nodes(
    nodes: &[NodeRecord],
    local: &LocalNode,
    encryption: Option<&Encryption>,
    opts: &PeerOptions,
    table: &mut dyn RouteTable,
    status: &mut RoutingStatus,
) {
    let refs: Vec<&NodeRecord> = nodes.iter().collect();
    let mut failures = Vec::new();
    let mut changes = Vec::new();
    let mut carried = Vec::new();
    if let Some(enc) = encryption {
        let peers = desired_peers(&refs, local, &enc.public_key(), opts);
        carried = peers
            .iter()
            .flat_map(|p| p.allowed_ips.iter().copied())
            .collect();
        let ps = enc.apply(&peers);
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
    let tunnel = encryption.map(|e| Tunnel {
        dev: e.ifname(),
        carried: &carried,
    });
    let desired: BTreeMap<Ipv4Net, NextHop> = desired_routes(&refs, local, tunnel);
    match sync(table, &desired) {
        Ok(rs) => {
            changes.extend(rs.replaced.iter().map(|r| format!("route {r}")));
            changes.extend(rs.deleted.iter().map(|r| format!("route removed {r}")));
            failures.extend(rs.failed);
        }
        Err(e) => failures.push(format!("list routes: {e}")),
    }
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
