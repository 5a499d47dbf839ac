//! Pod networking over rtnetlink: the veth pair, addresses, routes and the
//! static neighbour of the gateway.
//!
//! Netlink sockets belong to the network namespace of the thread that
//! creates them. The node side uses a socket made in the plugin's own
//! namespace (the node's); the pod side uses a socket made by a dedicated
//! short-lived thread that first `setns`es into `CNI_NETNS`, so the rest of
//! the process never changes namespace.
//!
//! Layout (as Calico and Cilium do): the pod gets `<ip>/32` on its interface,
//! a link route to the gateway [`GATEWAY`] and a default route via it; the
//! gateway's MAC is pinned as a permanent neighbour entry to the host veth's
//! MAC, so no ARP proxy is needed and the host veth needs no address. The
//! node gets `<ip>/32 dev <host veth>` (scope link), and forwarding is on.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use futures::TryStreamExt as _;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkMessage,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteScope};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::{Error, Result};

/// The pods' default gateway: a link-local address answered (by a pinned
/// neighbour entry) by the host side of each veth.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

const ENODEV: i32 = 19;
const ESRCH: i32 = 3;

/// What setup created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Links {
    /// Host veth ifindex (in the node's namespace).
    pub host_ifindex: u32,
    /// Host veth MAC.
    pub host_mac: String,
    /// Pod interface ifindex (in the pod's namespace).
    pub pod_ifindex: u32,
    /// Pod interface MAC.
    pub pod_mac: String,
}

/// Netlink connections: the node's, and on demand one per pod namespace.
struct Netlink {
    rt: tokio::runtime::Runtime,
    node: Handle,
}

fn nl_err(op: &'static str, target: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
    let target = target.into();
    move |source| Error::Netlink { op, target, source }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

fn mac_text(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn link_mac(link: &LinkMessage) -> Vec<u8> {
    link.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(m) => Some(m.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn is_up(link: &LinkMessage) -> bool {
    link.header.flags.contains(LinkFlags::Up)
}

impl Netlink {
    fn new() -> Result<Netlink> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(Error::io("start netlink runtime", "/proc/self"))?;
        let node = {
            let _enter = rt.enter();
            let (conn, handle, _) = rtnetlink::new_connection()
                .map_err(Error::io("open netlink socket", "/proc/self/ns/net"))?;
            rt.spawn(conn);
            handle
        };
        Ok(Netlink { rt, node })
    }

    /// A connection whose socket lives in the namespace at `netns`, made by
    /// a dedicated thread that enters it.
    fn pod(&self, netns: &Path) -> Result<Handle> {
        let file = File::open(netns).map_err(Error::io("open netns", netns))?;
        let rt = self.rt.handle().clone();
        let path = netns.to_path_buf();
        let made = std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::io("enter netns", &path)(std::io::Error::from(e)))?;
            let _enter = rt.enter();
            rtnetlink::new_connection().map_err(Error::io("open netlink socket in", &path))
        })
        .join()
        .expect("netns thread does not panic")?;
        let (conn, handle, _) = made;
        self.rt.spawn(conn);
        Ok(handle)
    }

    fn link(&self, handle: &Handle, name: &str) -> Result<Option<LinkMessage>> {
        let got = self.rt.block_on(
            handle
                .link()
                .get()
                .match_name(name.to_string())
                .execute()
                .try_next(),
        );
        match got {
            Ok(link) => Ok(link),
            Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
            Err(e) => Err(nl_err("get link", name)(e)),
        }
    }

    fn routes(&self, handle: &Handle) -> Result<Vec<RouteMessage>> {
        self.rt
            .block_on(
                handle
                    .route()
                    .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
                    .execute()
                    .try_collect(),
            )
            .map_err(nl_err("dump routes", "ipv4"))
    }
}

fn route_dst(r: &RouteMessage) -> Option<(Ipv4Addr, u8)> {
    let len = r.header.destination_prefix_length;
    let dst = r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    });
    match (dst, len) {
        (Some(ip), len) => Some((ip, len)),
        (None, 0) => Some((Ipv4Addr::UNSPECIFIED, 0)),
        (None, _) => None,
    }
}

fn route_gateway(r: &RouteMessage) -> Option<Ipv4Addr> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })
}

fn route_oif(r: &RouteMessage) -> Option<u32> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

/// Creates and configures the pod's veth pair. On error the caller tears
/// down the host side (which removes the pair).
pub fn setup(host: &str, netns: &Path, ifname: &str, addr: Ipv4Addr, mtu: u32) -> Result<Links> {
    let nl = Netlink::new()?;
    let ns_file = File::open(netns).map_err(Error::io("open netns", netns))?;
    // The pod end is created directly inside the pod's namespace with its
    // final name (e.g. eth0, which may exist in the node's namespace).
    use std::os::fd::AsRawFd as _;
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(ifname.to_string())
        .mtu(mtu)
        .setns_by_fd(ns_file.as_raw_fd())
        .build();
    let veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(host.to_string())
        .mtu(mtu)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    nl.rt
        .block_on(nl.node.link().add(veth).execute())
        .map_err(nl_err(
            "create veth",
            format!("{host} / {ifname} in {}", netns.display()),
        ))?;
    drop(ns_file);

    // IPv6 is not supported yet: neither end gets any (the datapath drops
    // what is neither IPv4 nor ARP; this keeps router solicitations and
    // neighbour discovery from being sent at all).
    disable_ipv6(host);
    let pod_if = ifname.to_string();
    let _ = mesh_bpf::netns::in_netns(netns, move || disable_ipv6(&pod_if));

    let host_link = nl.link(&nl.node, host)?.ok_or_else(|| Error::LinkMissing {
        name: host.to_string(),
        netns: "the node's namespace".into(),
    })?;
    let host_index = host_link.header.index;
    let host_mac = link_mac(&host_link);
    nl.rt
        .block_on(
            nl.node
                .link()
                .set(LinkUnspec::new_with_index(host_index).up().build())
                .execute(),
        )
        .map_err(nl_err("set up", host))?;
    enable_forwarding()?;

    let pod = nl.pod(netns)?;
    let pod_link = nl.link(&pod, ifname)?.ok_or_else(|| Error::LinkMissing {
        name: ifname.to_string(),
        netns: netns.display().to_string(),
    })?;
    let pod_index = pod_link.header.index;
    let target = format!("{ifname} in {}", netns.display());
    nl.rt.block_on(async {
        pod.link()
            .set(LinkUnspec::new_with_index(pod_index).up().build())
            .execute()
            .await
            .map_err(nl_err("set up", target.clone()))?;
        pod.address()
            .add(pod_index, IpAddr::V4(addr), 32)
            .execute()
            .await
            .map_err(nl_err("add address", format!("{addr}/32 to {target}")))?;
        pod.route()
            .add(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(GATEWAY, 32)
                    .output_interface(pod_index)
                    .scope(RouteScope::Link)
                    .build(),
            )
            .execute()
            .await
            .map_err(nl_err("add route", format!("{GATEWAY}/32 dev {target}")))?;
        pod.route()
            .add(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(GATEWAY)
                    .output_interface(pod_index)
                    .build(),
            )
            .execute()
            .await
            .map_err(nl_err(
                "add route",
                format!("default via {GATEWAY} dev {target}"),
            ))?;
        pod.neighbours()
            .add(pod_index, IpAddr::V4(GATEWAY))
            .link_layer_address(&host_mac)
            .replace()
            .execute()
            .await
            .map_err(nl_err("add neighbour", format!("{GATEWAY} on {target}")))?;
        nl.node
            .route()
            .add(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(addr, 32)
                    .output_interface(host_index)
                    .scope(RouteScope::Link)
                    .build(),
            )
            .replace()
            .execute()
            .await
            .map_err(nl_err("add route", format!("{addr}/32 dev {host}")))
    })?;
    Ok(Links {
        host_ifindex: host_index,
        host_mac: mac_text(&host_mac),
        pod_ifindex: pod_index,
        pod_mac: mac_text(&link_mac(&pod_link)),
    })
}

/// Turns IPv6 off on `ifname` in the calling thread's namespace (nothing
/// to do when the kernel has no IPv6).
fn disable_ipv6(ifname: &str) {
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    if let Err(e) = std::fs::write(&path, "1")
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(%path, error = %e, "cannot turn IPv6 off on a pod interface; the datapath drops its IPv6");
    }
}

/// Deletes the host veth (and with it the pod end and the host route);
/// `false` when it did not exist.
pub fn teardown(host: &str) -> Result<bool> {
    let nl = Netlink::new()?;
    let Some(link) = nl.link(&nl.node, host)? else {
        return Ok(false);
    };
    match nl
        .rt
        .block_on(nl.node.link().del(link.header.index).execute())
    {
        Ok(()) => Ok(true),
        // Deleted meanwhile (a concurrent DEL).
        Err(e) if matches!(errno(&e), Some(ENODEV) | Some(ESRCH)) => Ok(false),
        Err(e) => Err(nl_err("delete link", host)(e)),
    }
}

/// Turns on IPv4 forwarding in the node's namespace (pod↔pod and
/// pod↔other nodes go through it).
pub fn enable_forwarding() -> Result<()> {
    let path = Path::new("/proc/sys/net/ipv4/ip_forward");
    if std::fs::read_to_string(path)
        .map(|s| s.trim() == "1")
        .unwrap_or(false)
    {
        return Ok(());
    }
    std::fs::write(path, "1").map_err(Error::io("write", path))
}

/// Compares the pod's networking with what [`setup`] makes; `Err(reason)`
/// names the first difference.
pub fn check(
    host: &str,
    netns: &Path,
    ifname: &str,
    addr: Ipv4Addr,
) -> Result<std::result::Result<(), String>> {
    let nl = Netlink::new()?;
    let Some(host_link) = nl.link(&nl.node, host)? else {
        return Ok(Err(format!("host veth {host} is missing")));
    };
    if !is_up(&host_link) {
        return Ok(Err(format!("host veth {host} is down")));
    }
    let host_route = nl
        .routes(&nl.node)?
        .iter()
        .any(|r| route_dst(r) == Some((addr, 32)) && route_oif(r) == Some(host_link.header.index));
    if !host_route {
        return Ok(Err(format!("node route {addr}/32 dev {host} is missing")));
    }
    let pod = nl.pod(netns)?;
    let Some(pod_link) = nl.link(&pod, ifname)? else {
        return Ok(Err(format!(
            "interface {ifname} is missing in {}",
            netns.display()
        )));
    };
    if !is_up(&pod_link) {
        return Ok(Err(format!("interface {ifname} is down")));
    }
    let index = pod_link.header.index;
    let addrs = nl
        .rt
        .block_on(
            pod.address()
                .get()
                .set_link_index_filter(index)
                .execute()
                .try_collect::<Vec<_>>(),
        )
        .map_err(nl_err("dump addresses", ifname))?;
    let has_addr = addrs.iter().any(|a| {
        a.header.prefix_len == 32
            && a.attributes
                .iter()
                .any(|at| matches!(at, AddressAttribute::Local(IpAddr::V4(ip)) if *ip == addr))
    });
    if !has_addr {
        return Ok(Err(format!("address {addr}/32 is missing on {ifname}")));
    }
    let default_ok = nl.routes(&pod)?.iter().any(|r| {
        route_dst(r) == Some((Ipv4Addr::UNSPECIFIED, 0))
            && route_gateway(r) == Some(GATEWAY)
            && route_oif(r) == Some(index)
    });
    if !default_ok {
        return Ok(Err(format!(
            "default route via {GATEWAY} dev {ifname} is missing"
        )));
    }
    Ok(Ok(()))
}
