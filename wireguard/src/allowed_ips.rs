//! AllowedIPs: longest-prefix match from an address to a value (a peer).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

/// Prefixes → values, looked up by longest prefix match. One map per prefix
/// length, tried from the longest length present: a lookup costs one hash
/// probe per distinct length, whatever the number of peers.
#[derive(Debug, Clone)]
pub struct AllowedIps<V> {
    by_len: BTreeMap<(bool, u8), HashMap<IpAddr, V>>,
}

impl<V> Default for AllowedIps<V> {
    fn default() -> Self {
        AllowedIps {
            by_len: BTreeMap::new(),
        }
    }
}

impl<V: Clone> AllowedIps<V> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts (or replaces) the value of `net` (host bits ignored).
    pub fn insert(&mut self, net: IpNet, v: V) -> Option<V> {
        let net = net.trunc();
        self.by_len
            .entry((net.addr().is_ipv4(), net.prefix_len()))
            .or_default()
            .insert(net.addr(), v)
    }

    /// Removes `net`, returning its value.
    pub fn remove(&mut self, net: IpNet) -> Option<V> {
        let net = net.trunc();
        let key = (net.addr().is_ipv4(), net.prefix_len());
        let m = self.by_len.get_mut(&key)?;
        let v = m.remove(&net.addr());
        if m.is_empty() {
            self.by_len.remove(&key);
        }
        v
    }

    /// The value of the longest prefix containing `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<&V> {
        let v4 = addr.is_ipv4();
        for ((is_v4, len), m) in self.by_len.iter().rev() {
            if *is_v4 != v4 {
                continue;
            }
            let net = IpNet::new(addr, *len).expect("length taken from a valid prefix");
            if let Some(v) = m.get(&net.trunc().addr()) {
                return Some(v);
            }
        }
        None
    }

    /// The value stored for exactly `net`.
    pub fn get_exact(&self, net: IpNet) -> Option<&V> {
        let net = net.trunc();
        self.by_len
            .get(&(net.addr().is_ipv4(), net.prefix_len()))?
            .get(&net.addr())
    }

    /// Keeps only the entries for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&IpNet, &V) -> bool) {
        for ((_, len), m) in self.by_len.iter_mut() {
            m.retain(|a, v| keep(&IpNet::new(*a, *len).expect("valid prefix"), v));
        }
        self.by_len.retain(|_, m| !m.is_empty());
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.by_len.values().map(HashMap::len).sum()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.by_len.is_empty()
    }
}

/// True when two prefixes share at least one address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}
