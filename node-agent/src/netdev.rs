//! The node's own interface: the one holding the node address (where the
//! node programs attach and whose MTU the pods' MTU derives from), asked
//! of the kernel over rtnetlink for the agent's network namespace.

use std::net::{IpAddr, Ipv4Addr};

use crate::error::{Error, Result};

/// An interface and its MTU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInterface {
    /// Its name.
    pub name: String,
    /// Its MTU (None: the kernel did not say).
    pub mtu: Option<u32>,
}

/// The interface that holds `addr` in the calling process's
/// network namespace (rtnetlink, on a short-lived thread with its own
/// runtime: callers may be inside the agent's runtime).
pub fn interface_with_address(addr: Ipv4Addr) -> Result<Option<NodeInterface>> {
    use futures::TryStreamExt as _;
    use rtnetlink::packet_route::address::AddressAttribute;
    use rtnetlink::packet_route::link::LinkAttribute;
    let target = format!("address {addr}");
    let nl = |e: rtnetlink::Error| Error::Datapath {
        op: "look up node interface",
        target: target.clone(),
        source: e.to_string().into(),
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .map_err(Error::io("start netlink runtime", "/proc/self"))?;
            rt.block_on(async {
                let (conn, handle, _) = rtnetlink::new_connection()
                    .map_err(Error::io("open netlink socket", "/proc/self/ns/net"))?;
                tokio::spawn(conn);
                let addrs: Vec<_> = handle
                    .address()
                    .get()
                    .execute()
                    .try_collect()
                    .await
                    .map_err(nl)?;
                let Some(index) = addrs
                    .iter()
                    .find(|m| {
                        m.attributes.iter().any(|a| {
                            matches!(a, AddressAttribute::Local(IpAddr::V4(ip)) | AddressAttribute::Address(IpAddr::V4(ip)) if *ip == addr)
                        })
                    })
                    .map(|m| m.header.index)
                else {
                    return Ok(None);
                };
                let link = handle
                    .link()
                    .get()
                    .match_index(index)
                    .execute()
                    .try_next()
                    .await
                    .map_err(nl)?;
                Ok(link.and_then(|l| {
                    let mut name = None;
                    let mut mtu = None;
                    for a in l.attributes {
                        match a {
                            LinkAttribute::IfName(n) => name = Some(n),
                            LinkAttribute::Mtu(m) => mtu = Some(m),
                            _ => {}
                        }
                    }
                    Some(NodeInterface { name: name?, mtu })
                }))
            })
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
