//! Native routing between nodes: for every other node of every cluster
//! (the local cluster too), a route `<its pod CIDR> via <its node IP>` in the
//! agent's network namespace; with encryption on, `<its pod CIDR> dev
//! <wireguard interface>` for nodes that have a WireGuard key (the device
//! carries them).
//!
//! [`desired_routes`] is pure (node records + the local node → routes);
//! [`plan`] diffs it against what the table holds (minimal replace/delete,
//! never a flush); [`RouteTable`] is the seam to the kernel, implemented over
//! rtnetlink by [`NetlinkRoutes`]. The agent's routes carry their own route
//! protocol number ([`ROUTE_PROTOCOL`]), so a restarted agent recognises
//! them, keeps the ones still wanted and removes only the rest, and never
//! touches routes it did not make.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use futures::TryStreamExt as _;
use ipnet::{IpNet, Ipv4Net};
use mesh_api::{ClusterName, NodeName, NodeRecord};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::{Handle, RouteMessageBuilder};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Routes as `/v1/status` reports them.
pub use mesh_agent_api::status::{NextHop, Route};

/// The route protocol number marking the agent's routes (`ip route show
/// proto 193`); outside the numbers iproute2 names.
pub const ROUTE_PROTOCOL: u8 = 193;

/// The node the agent runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    /// Its cluster.
    pub cluster: ClusterName,
    /// Its name.
    pub name: NodeName,
    /// Its pod CIDRs (never routed away).
    pub pod_cidrs: Vec<IpNet>,
}

impl LocalNode {
    /// Whether `node` is this node.
    pub fn is(&self, node: &NodeRecord) -> bool {
        node.cluster == self.cluster && node.name == self.name
    }
}

/// A node's first IPv4 address (InternalIP first in records).
pub fn node_ipv4(node: &NodeRecord) -> Option<Ipv4Addr> {
    node.ips.iter().find_map(|ip| match ip {
        std::net::IpAddr::V4(v4) => Some(*v4),
        std::net::IpAddr::V6(_) => None,
    })
}

/// The WireGuard side of routing: the device, and the CIDRs its peers carry.
#[derive(Debug, Clone, Copy)]
pub struct Tunnel<'a> {
    /// The device's interface.
    pub dev: &'a str,
    /// The AllowedIPs of its peers: only these go into the device.
    pub carried: &'a [IpNet],
}

/// The routes this node wants: every other node's IPv4 pod CIDRs, via its
/// IPv4 address, or through the tunnel's device when a peer carries that
/// CIDR (a node without a key yet, or refused as a peer, stays on native
/// routing rather than being blackholed). Nodes without an IPv4 address,
/// and CIDRs overlapping the local node's, are skipped (the first node
/// listed wins a CIDR claimed twice; records come sorted by cluster and
/// name).
pub fn desired_routes(
    nodes: &[&NodeRecord],
    local: &LocalNode,
    tunnel: Option<Tunnel<'_>>,
) -> BTreeMap<Ipv4Net, NextHop> {
    let mut out = BTreeMap::new();
    for node in nodes {
        if local.is(node) {
            continue;
        }
        let Some(ip) = node_ipv4(node) else { continue };
        for cidr in &node.pod_cidrs {
            let IpNet::V4(v4) = cidr else { continue };
            let v4 = v4.trunc();
            let next_hop = match tunnel {
                Some(t) if t.carried.contains(&IpNet::V4(v4)) => NextHop::Dev(t.dev.to_string()),
                _ => NextHop::Via(ip),
            };
            let local_overlap = local.pod_cidrs.iter().any(|l| match l {
                IpNet::V4(l) => l.contains(&v4.network()) || v4.contains(&l.network()),
                IpNet::V6(_) => false,
            });
            if local_overlap {
                continue;
            }
            out.entry(v4).or_insert(next_hop);
        }
    }
    out
}

/// What to change so the table holds exactly the desired routes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutePlan {
    /// Routes to add or replace (a changed next hop is one replace).
    pub replace: Vec<Route>,
    /// Routes to remove (ours, no longer wanted).
    pub delete: Vec<Route>,
}

impl RoutePlan {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.replace.is_empty() && self.delete.is_empty()
    }
}

/// Diffs the agent's `current` routes against `desired`.
pub fn plan(current: &[Route], desired: &BTreeMap<Ipv4Net, NextHop>) -> RoutePlan {
    let mut have: BTreeMap<Ipv4Net, Vec<&NextHop>> = BTreeMap::new();
    for r in current {
        have.entry(r.dst).or_default().push(&r.next_hop);
    }
    let mut out = RoutePlan::default();
    for (dst, hop) in desired {
        let ok = have
            .get(dst)
            .is_some_and(|hops| hops.len() == 1 && hops[0] == hop);
        if !ok {
            out.replace.push(Route {
                dst: *dst,
                next_hop: hop.clone(),
            });
        }
    }
    for r in current {
        // Duplicates of a wanted destination go away with the replace.
        if !desired.contains_key(&r.dst) {
            out.delete.push(r.clone());
        }
    }
    out
}

/// The kernel routing table, as far as the agent's routes go.
pub trait RouteTable {
    /// The routes carrying the agent's protocol number.
    fn list(&mut self) -> Result<Vec<Route>>;
    /// Adds `route`, replacing any route to the same destination.
    fn replace(&mut self, route: &Route) -> Result<()>;
    /// Removes `route` (absent: not an error).
    fn delete(&mut self, route: &Route) -> Result<()>;
}

/// What one [`sync`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSync {
    /// Routes written.
    pub replaced: Vec<String>,
    /// Routes removed.
    pub deleted: Vec<String>,
    /// Routes that failed, with the reason (retried on the next pass).
    pub failed: Vec<String>,
}

/// Brings `table` to `desired`: lists, plans, applies. One failing route
/// does not stop the others.
pub fn sync(table: &mut dyn RouteTable, desired: &BTreeMap<Ipv4Net, NextHop>) -> Result<RouteSync> {
    let current = table.list()?;
    let plan = plan(&current, desired);
    let mut out = RouteSync::default();
    for r in &plan.delete {
        match table.delete(r) {
            Ok(()) => out.deleted.push(r.to_string()),
            Err(e) => out.failed.push(format!("delete {r}: {e}")),
        }
    }
    for r in &plan.replace {
        match table.replace(r) {
            Ok(()) => out.replaced.push(r.to_string()),
            Err(e) => out.failed.push(format!("replace {r}: {e}")),
        }
    }
    Ok(out)
}

/// An in-memory [`RouteTable`] (unit tests, dry runs).
#[derive(Debug, Clone, Default)]
pub struct MemoryRoutes {
    /// The routes, in insertion order.
    pub routes: Vec<Route>,
    /// Operations applied, as text (`replace …`, `delete …`).
    pub log: Vec<String>,
}

impl RouteTable for MemoryRoutes {
    fn list(&mut self) -> Result<Vec<Route>> {
        Ok(self.routes.clone())
    }

    fn replace(&mut self, route: &Route) -> Result<()> {
        self.routes.retain(|r| r.dst != route.dst);
        self.routes.push(route.clone());
        self.log.push(format!("replace {route}"));
        Ok(())
    }

    fn delete(&mut self, route: &Route) -> Result<()> {
        self.routes.retain(|r| r != route);
        self.log.push(format!("delete {route}"));
        Ok(())
    }
}

/// The kernel's main routing table.
pub const MAIN_TABLE: u32 = 254;

/// Node encryption (`encryption.nodeEncryption`): the table holding
/// `<other node IP>/32 dev <wireguard interface>`, consulted by one rule for
/// every packet not marked [`NODE_ENCRYPTION_MARK`] (`ip rule show`: `not
/// fwmark 0x4d57 lookup 19799`). The WireGuard device marks its own UDP
/// packets, so they take the main table to the peer's address and the tunnel
/// never carries itself; every other packet to another node's address goes
/// into the tunnel. A miss in the table falls through to the main table.
pub const NODE_ENCRYPTION_TABLE: u32 = 19799;
/// The fwmark of the WireGuard device's own UDP packets with node encryption.
pub const NODE_ENCRYPTION_MARK: u32 = 0x4d57;
/// The priority of the node-encryption rule (before `main`, 32766).
pub const NODE_ENCRYPTION_RULE_PRIORITY: u32 = 19799;

/// Node encryption's table ([`NODE_ENCRYPTION_TABLE`]) and the rule that
/// leads into it.
pub trait NodeEncryptionTable: RouteTable {
    /// Adds the rule when `present` and it is missing, removes it when not.
    fn set_rule(&mut self, present: bool) -> Result<()>;
}

/// A routing table (the main one unless [`NetlinkRoutes::in_table`]) of the
/// calling thread's network namespace, over rtnetlink.
pub struct NetlinkRoutes {
    rt: tokio::runtime::Runtime,
    handle: Handle,
    table: u32,
}

impl fmt::Debug for NetlinkRoutes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetlinkRoutes").finish_non_exhaustive()
    }
}

fn nl_err(op: &'static str, target: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
    let target = target.into();
    move |source| Error::Netlink { op, target, source }
}

const ESRCH: i32 = 3;
const ENODEV: i32 = 19;

impl NetlinkRoutes {
    /// Opens a netlink socket in the calling thread's namespace, with its
    /// own small runtime (call from a blocking context), for the main table.
    pub fn new() -> Result<NetlinkRoutes> {
        NetlinkRoutes::in_table(MAIN_TABLE)
    }

    /// Like [`NetlinkRoutes::new`], for routing table `table`.
    pub fn in_table(table: u32) -> Result<NetlinkRoutes> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(Error::io("start netlink runtime", "/proc/self"))?;
        let handle = {
            let _enter = rt.enter();
            let (conn, handle, _) = rtnetlink::new_connection()
                .map_err(Error::io("open netlink socket", "/proc/self/ns/net"))?;
            rt.spawn(conn);
            handle
        };
        Ok(NetlinkRoutes { rt, handle, table })
    }

    fn ifindex(&self, dev: &str) -> Result<u32> {
        let link = self
            .rt
            .block_on(
                self.handle
                    .link()
                    .get()
                    .match_name(dev.to_string())
                    .execute()
                    .try_next(),
            )
            .map_err(nl_err("get link", dev))?;
        link.map(|l| l.header.index).ok_or_else(|| Error::Config {
            flag: "wireguard-interface",
            reason: format!("interface {dev} does not exist"),
        })
    }

    fn ifname(&self, index: u32) -> Option<String> {
        use rtnetlink::packet_route::link::LinkAttribute;
        let link = self
            .rt
            .block_on(
                self.handle
                    .link()
                    .get()
                    .match_index(index)
                    .execute()
                    .try_next(),
            )
            .ok()??;
        link.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })
    }

    fn message(&self, route: &Route) -> Result<RouteMessage> {
        let b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(route.dst.network(), route.dst.prefix_len())
            .table_id(self.table)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL));
        Ok(match &route.next_hop {
            NextHop::Via(gw) => b.gateway(*gw).build(),
            NextHop::Dev(dev) => b
                .output_interface(self.ifindex(dev)?)
                .scope(RouteScope::Link)
                .build(),
        })
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

impl RouteTable for NetlinkRoutes {
    fn list(&mut self) -> Result<Vec<Route>> {
        let msgs: Vec<RouteMessage> = self
            .rt
            .block_on(
                self.handle
                    .route()
                    .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
                    .execute()
                    .try_collect(),
            )
            .map_err(nl_err("dump routes", "ipv4"))?;
        let mut out = Vec::new();
        for m in msgs {
            if m.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL) {
                continue;
            }
            let mut dst = None;
            let mut gw = None;
            let mut oif = None;
            let mut table = u32::from(m.header.table);
            for a in &m.attributes {
                match a {
                    RouteAttribute::Table(t) => table = *t,
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gw = Some(*ip),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            if table != self.table {
                continue;
            }
            let Some(dst) = dst else { continue };
            let Ok(dst) = Ipv4Net::new(dst, m.header.destination_prefix_length) else {
                continue;
            };
            let next_hop = match (gw, oif) {
                (Some(gw), _) => NextHop::Via(gw),
                (None, Some(i)) => NextHop::Dev(self.ifname(i).unwrap_or_else(|| format!("#{i}"))),
                (None, None) => continue,
            };
            out.push(Route { dst, next_hop });
        }
        Ok(out)
    }

    fn replace(&mut self, route: &Route) -> Result<()> {
        let msg = self.message(route)?;
        self.rt
            .block_on(self.handle.route().add(msg).replace().execute())
            .map_err(nl_err("replace route", route.to_string()))
    }

    fn delete(&mut self, route: &Route) -> Result<()> {
        let msg = match self.message(route) {
            Ok(m) => m,
            // The device is gone, and with it the route.
            Err(Error::Config { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        match self.rt.block_on(self.handle.route().del(msg).execute()) {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(ESRCH | ENODEV)) => Ok(()),
            Err(e) => Err(nl_err("delete route", route.to_string())(e)),
        }
    }
}

impl NetlinkRoutes {
    fn node_encryption_rules(&self) -> Result<Vec<rtnetlink::packet_route::rule::RuleMessage>> {
        use rtnetlink::packet_route::rule::RuleAttribute;
        let rules: Vec<rtnetlink::packet_route::rule::RuleMessage> = self
            .rt
            .block_on(
                self.handle
                    .rule()
                    .get(rtnetlink::IpVersion::V4)
                    .execute()
                    .try_collect(),
            )
            .map_err(nl_err("dump rules", "ipv4"))?;
        Ok(rules
            .into_iter()
            .filter(|r| {
                r.attributes
                    .contains(&RuleAttribute::Priority(NODE_ENCRYPTION_RULE_PRIORITY))
                    && r.attributes
                        .contains(&RuleAttribute::Table(NODE_ENCRYPTION_TABLE))
            })
            .collect())
    }
}

impl NodeEncryptionTable for NetlinkRoutes {
    fn set_rule(&mut self, present: bool) -> Result<()> {
        let have = self.node_encryption_rules()?;
        if present && have.is_empty() {
            let mut req = self
                .handle
                .rule()
                .add()
                .v4()
                .table_id(NODE_ENCRYPTION_TABLE)
                .priority(NODE_ENCRYPTION_RULE_PRIORITY)
                .fw_mark(NODE_ENCRYPTION_MARK)
                .action(rtnetlink::packet_route::rule::RuleAction::ToTable);
            req.message_mut().header.flags |= rtnetlink::packet_route::rule::RuleFlags::Invert;
            self.rt
                .block_on(req.execute())
                .map_err(nl_err("add rule", "not fwmark 0x4d57 lookup 19799"))?;
        }
        if !present {
            for r in have {
                self.rt
                    .block_on(self.handle.rule().del(r).execute())
                    .map_err(nl_err("delete rule", "not fwmark 0x4d57 lookup 19799"))?;
            }
        }
        Ok(())
    }
}

/// Turns on IPv4 forwarding in the calling thread's network namespace
/// (pod traffic between nodes is forwarded by the node).
pub fn enable_forwarding() -> Result<()> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    std::fs::write(path, b"1").map_err(Error::io("write", path))
}

#[cfg(test)]
pub(crate) mod tests;
