//! Cluster and node names and ids.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A cluster's numeric id, unique in the mesh: 1–255. It is carried in bits
/// 16–23 of every label-based [`Identity`](crate::Identity), so it must fit
/// in 8 bits, and 0 means "no cluster".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u8")]
pub struct ClusterId(u8);

impl ClusterId {
    /// The smallest valid id.
    pub const MIN: ClusterId = ClusterId(1);
    /// The largest valid id.
    pub const MAX: ClusterId = ClusterId(255);

    /// Validates `id` (1–255).
    pub fn new(id: i64) -> Result<Self> {
        match u8::try_from(id) {
            Ok(v) if v != 0 => Ok(ClusterId(v)),
            _ => Err(Error::ClusterIdOutOfRange { id }),
        }
    }

    /// The id as a number.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<i64> for ClusterId {
    type Error = Error;
    fn try_from(id: i64) -> Result<Self> {
        ClusterId::new(id)
    }
}

impl TryFrom<u32> for ClusterId {
    type Error = Error;
    fn try_from(id: u32) -> Result<Self> {
        ClusterId::new(i64::from(id))
    }
}

impl From<ClusterId> for u8 {
    fn from(id: ClusterId) -> u8 {
        id.0
    }
}

impl FromStr for ClusterId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let n: i64 = s.trim().parse().map_err(|_| Error::ClusterIdNotANumber {
            input: s.to_string(),
        })?;
        ClusterId::new(n)
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A cluster's name, unique in the mesh: a DNS label of at most 32
/// characters (it appears in certificate SANs, store keys and labels).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClusterName(String);

impl ClusterName {
    /// Longest accepted name.
    pub const MAX_LEN: usize = 32;

    /// Validates `name` as a DNS label of at most 32 characters.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        match dns_label_problem(&name, Self::MAX_LEN) {
            None => Ok(ClusterName(name)),
            Some(reason) => Err(Error::InvalidClusterName { name, reason }),
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ClusterName {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        ClusterName::new(s)
    }
}

impl From<ClusterName> for String {
    fn from(n: ClusterName) -> String {
        n.0
    }
}

impl FromStr for ClusterName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        ClusterName::new(s)
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ClusterName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A Kubernetes node name: a DNS subdomain (RFC 1123) of at most 253
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeName(String);

impl NodeName {
    /// Validates `name` as a DNS subdomain.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        match dns_subdomain_problem(&name) {
            None => Ok(NodeName(name)),
            Some(reason) => Err(Error::InvalidNodeName { name, reason }),
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodeName {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        NodeName::new(s)
    }
}

impl From<NodeName> for String {
    fn from(n: NodeName) -> String {
        n.0
    }
}

impl FromStr for NodeName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        NodeName::new(s)
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why `s` is not an RFC 1123 DNS label of at most `max` characters, or
/// `None` when it is one.
pub fn dns_label_problem(s: &str, max: usize) -> Option<&'static str> {
    if s.is_empty() {
        return Some("it is empty");
    }
    if s.len() > max {
        return Some("it is too long");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Some("it contains a character other than a-z, 0-9 and '-'");
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Some("it starts or ends with '-'");
    }
    None
}

/// Why `s` is not an RFC 1123 DNS subdomain (dot-separated labels, at most
/// 253 characters), or `None` when it is one.
pub fn dns_subdomain_problem(s: &str) -> Option<&'static str> {
    if s.len() > 253 {
        return Some("it is longer than 253 characters");
    }
    if s.is_empty() {
        return Some("it is empty");
    }
    s.split('.').find_map(|label| dns_label_problem(label, 63))
}

#[cfg(test)]
mod tests;
