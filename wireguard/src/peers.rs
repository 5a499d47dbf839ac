//! Peers as the node-agent asks for them, and the pure part of
//! [`Device::apply_peers`](crate::Device::apply_peers): which desired peers
//! are refused ([`screen_peers`]) and which table changes make the device
//! equal to the rest ([`plan_peers`]). No locks, no sockets: the device
//! applies the plan.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::SystemTime;

use ipnet::IpNet;
use mesh_api::WireGuardKey;

use crate::allowed_ips::overlaps;
use crate::error::Error;

/// A desired peer, as the node-agent computes it from a node record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's public key.
    pub public_key: WireGuardKey,
    /// Where to send its packets (node IP : its port).
    pub endpoint: Option<SocketAddr>,
    /// Addresses routed to the peer, and accepted from it.
    pub allowed_ips: Vec<IpNet>,
    /// Persistent keepalive in seconds.
    pub persistent_keepalive: Option<u16>,
}

/// What one [`Device::apply_peers`](crate::Device::apply_peers) changed and refused.
#[derive(Debug, Default)]
#[must_use = "rejected peers carry errors to report"]
pub struct PeerSync {
    /// Peers created.
    pub added: Vec<WireGuardKey>,
    /// Peers whose endpoint, AllowedIPs or keepalive changed.
    pub updated: Vec<WireGuardKey>,
    /// Peers removed.
    pub removed: Vec<WireGuardKey>,
    /// Peers refused, with why. Valid peers were applied anyway.
    pub rejected: Vec<Error>,
}

/// A peer's state for status and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's public key.
    pub public_key: WireGuardKey,
    /// Current endpoint (roams to where authenticated packets come from).
    pub endpoint: Option<SocketAddr>,
    /// AllowedIPs.
    pub allowed_ips: Vec<IpNet>,
    /// Persistent keepalive in seconds (None = off).
    pub persistent_keepalive: Option<u16>,
    /// Time of the last completed handshake.
    pub last_handshake: Option<SystemTime>,
    /// Payload bytes received.
    pub rx_bytes: u64,
    /// Payload bytes sent.
    pub tx_bytes: u64,
}

/// Splits `desired` into the peers to apply, in order, and the refused
/// ones: a peer that is this device (`own`), repeats an earlier peer's key,
/// or has AllowedIPs overlapping an earlier accepted peer's.
pub(crate) fn screen_peers<'a>(
    own: &WireGuardKey,
    desired: &'a [PeerConfig],
) -> (Vec<&'a PeerConfig>, Vec<Error>) {
    let mut accepted: Vec<&PeerConfig> = Vec::new();
    let mut rejected = Vec::new();
    'next: for p in desired {
        if p.public_key == *own {
            rejected.push(Error::SelfPeer { peer: p.public_key });
            continue;
        }
        for a in &accepted {
            if a.public_key == p.public_key {
                rejected.push(Error::DuplicatePeer { peer: p.public_key });
                continue 'next;
            }
            for net in &p.allowed_ips {
                if let Some(other) = a.allowed_ips.iter().find(|o| overlaps(net, o)) {
                    rejected.push(Error::AllowedIpsOverlap {
                        peer: p.public_key,
                        prefix: *net,
                        other: a.public_key,
                        other_prefix: *other,
                    });
                    continue 'next;
                }
            }
        }
        accepted.push(p);
    }
    (accepted, rejected)
}

/// Whether a planned peer is created or changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Not in the table yet.
    Add,
    /// In the table with another endpoint, AllowedIPs or keepalive.
    Update,
}

/// The table changes that make the current peers equal to the accepted ones.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct PeerPlan {
    /// Peers to remove, in the order of `current`. Applied first, so
    /// AllowedIPs moving between peers never collide.
    pub(crate) remove: Vec<WireGuardKey>,
    /// Peers to create or change, in desired order, normalised: AllowedIPs
    /// truncated to their prefix, sorted and deduplicated; keepalive 0 is
    /// `None`. Unchanged peers are absent (they keep their sessions).
    pub(crate) upsert: Vec<(Change, PeerConfig)>,
}

/// Plans the fewest changes from `current` to `accepted` (already
/// screened). A missing endpoint in `accepted` means "keep the current one"
/// (it roams), so it is not a change.
pub(crate) fn plan_peers(current: &[PeerStatus], accepted: &[&PeerConfig]) -> PeerPlan {
    let by_key: HashMap<&WireGuardKey, &PeerStatus> =
        current.iter().map(|s| (&s.public_key, s)).collect();
    let wanted: HashMap<&WireGuardKey, &PeerConfig> =
        accepted.iter().map(|p| (&p.public_key, *p)).collect();
    let mut plan = PeerPlan::default();
    for s in current {
        if !wanted.contains_key(&s.public_key) {
            plan.remove.push(s.public_key);
        }
    }
    for p in accepted {
        let mut allowed = p.allowed_ips.iter().map(IpNet::trunc).collect::<Vec<_>>();
        allowed.sort();
        allowed.dedup();
        let keepalive = p.persistent_keepalive.filter(|k| *k != 0);
        let change = match by_key.get(&p.public_key) {
            Some(cur) => {
                let mut cur_allowed = cur.allowed_ips.clone();
                cur_allowed.sort();
                let endpoint_changed = p.endpoint.is_some() && cur.endpoint != p.endpoint;
                if cur_allowed == allowed
                    && !endpoint_changed
                    && cur.persistent_keepalive == keepalive
                {
                    continue;
                }
                Change::Update
            }
            None => Change::Add,
        };
        plan.upsert.push((
            change,
            PeerConfig {
                public_key: p.public_key,
                endpoint: p.endpoint,
                allowed_ips: allowed,
                persistent_keepalive: keepalive,
            },
        ));
    }
    plan
}

#[cfg(test)]
mod tests;
