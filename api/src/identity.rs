//! Security identities: a u32 whose bits 16–23 are the cluster id and bits
//! 0–15 the cluster-local number. 1–255 are reserved and belong to no
//! cluster. Bit 24 marks node-local identities (CIDRs named by policies),
//! which belong to no cluster and never leave their node.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cluster::ClusterId;
use crate::error::{Error, Result};

/// Identities the datapath knows without any label set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReservedIdentity {
    /// The local node.
    Host = 1,
    /// Anything outside the mesh.
    World = 2,
    /// Pods not managed by Meshwork.
    Unmanaged = 3,
    /// Health-check endpoints.
    Health = 4,
    /// Endpoints whose identity is not resolved yet.
    Init = 5,
    /// Other nodes, of any cluster.
    RemoteNode = 6,
    /// The Kubernetes API server.
    KubeApiserver = 7,
}

impl ReservedIdentity {
    /// All reserved identities.
    pub const ALL: [ReservedIdentity; 7] = [
        ReservedIdentity::Host,
        ReservedIdentity::World,
        ReservedIdentity::Unmanaged,
        ReservedIdentity::Health,
        ReservedIdentity::Init,
        ReservedIdentity::RemoteNode,
        ReservedIdentity::KubeApiserver,
    ];

    /// The entity name used in policies (`fromEntities`).
    pub fn name(self) -> &'static str {
        match self {
            ReservedIdentity::Host => "host",
            ReservedIdentity::World => "world",
            ReservedIdentity::Unmanaged => "unmanaged",
            ReservedIdentity::Health => "health",
            ReservedIdentity::Init => "init",
            ReservedIdentity::RemoteNode => "remote-node",
            ReservedIdentity::KubeApiserver => "kube-apiserver",
        }
    }

    /// The identity number.
    pub fn identity(self) -> Identity {
        Identity(self as u32)
    }
}

/// A security identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Identity(u32);

impl Identity {
    /// First cluster-local number available to label-based identities; the
    /// numbers below would read as reserved ones.
    pub const MIN_LOCAL: u16 = 256;

    /// Not the identity of any address: in a policy entry, any peer of the
    /// endpoint's own cluster (its cluster's label-based identities, host,
    /// remote-node, health, init: the `cluster` entity), so that entity is
    /// one entry instead of one per identity. Reserved (remotes cannot
    /// export it); the datapath's twin is `IDENTITY_CLUSTER_PEERS`.
    pub const CLUSTER_PEERS: Identity = Identity(255);

    /// Bit 24 marks node-local identities: CIDR identities a node-agent
    /// allocates for the CIDRs its policies name. They never leave the node.
    pub const NODE_LOCAL: u32 = 1 << 24;

    /// The node-local (CIDR) identity number `n` (1 to 2^24-1).
    pub fn node_local(n: u32) -> Result<Self> {
        if n == 0 || n >= Self::NODE_LOCAL {
            return Err(Error::InvalidIdentity {
                value: u64::from(n),
                reason: "node-local identity numbers are 1 to 16777215",
            });
        }
        Ok(Identity(Self::NODE_LOCAL | n))
    }

    /// Whether it is a node-local (CIDR) identity.
    pub fn is_node_local(self) -> bool {
        self.0 & Self::NODE_LOCAL != 0
    }

    /// The label-based identity `local` of `cluster`.
    pub fn new(cluster: ClusterId, local: u16) -> Result<Self> {
        if local < Self::MIN_LOCAL {
            return Err(Error::InvalidIdentity {
                value: u64::from(local),
                reason: "cluster-local numbers start at 256 (1-255 are reserved)",
            });
        }
        Ok(Identity(
            (u32::from(cluster.get()) << 16) | u32::from(local),
        ))
    }

    /// Decodes a number received from a store, a peer or a map.
    pub fn from_u32(value: u32) -> Result<Self> {
        let bad = |reason| Error::InvalidIdentity {
            value: u64::from(value),
            reason,
        };
        if value == 0 {
            return Err(bad("0 is not an identity"));
        }
        if value >> 24 == 1 {
            return Identity::node_local(value & (Self::NODE_LOCAL - 1))
                .map_err(|_| bad("node-local identity 0 does not exist"));
        }
        if value >> 24 != 0 {
            return Err(bad(
                "bits 25-31 must be zero (bit 24 marks node-local identities)",
            ));
        }
        if value <= 255 {
            return if value == Self::CLUSTER_PEERS.0
                || ReservedIdentity::ALL.iter().any(|r| *r as u32 == value)
            {
                Ok(Identity(value))
            } else {
                Err(bad("reserved identity number not assigned"))
            };
        }
        if (value >> 16) & 0xff == 0 {
            return Err(bad(
                "label-based identities carry a cluster id in bits 16-23",
            ));
        }
        if value & 0xffff < u32::from(Self::MIN_LOCAL) {
            return Err(bad("cluster-local numbers start at 256"));
        }
        Ok(Identity(value))
    }

    /// The number.
    pub fn get(self) -> u32 {
        self.0
    }

    /// Whether it is one of the reserved identities.
    pub fn is_reserved(self) -> bool {
        self.0 <= 255
    }

    /// The reserved identity, if it is one.
    pub fn reserved(self) -> Option<ReservedIdentity> {
        ReservedIdentity::ALL
            .into_iter()
            .find(|r| *r as u32 == self.0)
    }

    /// The cluster a label-based identity belongs to; `None` for reserved ones.
    pub fn cluster(self) -> Option<ClusterId> {
        if self.is_node_local() {
            return None;
        }
        ClusterId::new(i64::from((self.0 >> 16) & 0xff)).ok()
    }

    /// The cluster-local number.
    pub fn local(self) -> u16 {
        (self.0 & 0xffff) as u16
    }
}

impl TryFrom<u32> for Identity {
    type Error = Error;
    fn try_from(v: u32) -> Result<Self> {
        Identity::from_u32(v)
    }
}

impl From<Identity> for u32 {
    fn from(i: Identity) -> u32 {
        i.0
    }
}

impl From<ReservedIdentity> for Identity {
    fn from(r: ReservedIdentity) -> Identity {
        r.identity()
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.reserved(), self.cluster()) {
            (Some(r), _) => write!(f, "{} (reserved:{})", self.0, r.name()),
            (None, Some(c)) => write!(f, "{} (cluster {c}, local {})", self.0, self.local()),
            (None, None) if self.is_node_local() => write!(f, "{} (node-local CIDR)", self.0),
            (None, None) => write!(f, "{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests;
