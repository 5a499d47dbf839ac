//! BPF masquerade (nat.h): the switch with the node address, pod CIDR and
//! port range (one-entry array), the destinations never masqueraded (LPM
//! trie), and the SNAT table the datapath fills (read-only here: dumps for
//! status and tests). The agent owns the first two.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::path::Path;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, MapData};

use super::ipcache::check_prefix;
use super::raw::{IpcacheAddr, MasqConfigRaw, SnatKey, SnatVal};
use super::{
    MASQ_CONFIG, MASQ_EXEMPT, Protocol, SNAT, dump_err, insert_err, ip_be, ip_from_be, open,
    port_from_be, remove_ok, typed,
};
use crate::error::{Error, Result};

/// `SNAT_DIR_OUT`: the original tuple, mapping to the new source (an index
/// only the datapath reads; named for the C twin test).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const SNAT_DIR_OUT: u8 = 0;
/// `SNAT_DIR_IN`: the reply tuple (the claim of a port), mapping back.
pub(crate) const SNAT_DIR_IN: u8 = 1;
/// `SNAT_FLAG_REPLIED`.
pub(crate) const SNAT_FLAG_REPLIED: u8 = 0x1;
/// `SNAT_FLAG_CLOSING`.
pub(crate) const SNAT_FLAG_CLOSING: u8 = 0x2;
/// `MASQ_CFG_MASQUERADE`.
pub(crate) const MASQ_CFG_MASQUERADE: u32 = 0x1;
/// `MASQ_PORT_TRIES`: ports tried per new flow before it is dropped
/// (`snat_ports_exhausted`).
pub const MASQ_PORT_TRIES: u32 = 16;

/// How the node SNATs: NodePort flows to backends on other nodes always,
/// and with `masquerade`, what leaves the node's pod CIDR for a destination
/// not exempt; both get `node_addr` and a port of `ports`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MasqueradeConfig {
    /// The source SNATed packets leave with.
    pub node_addr: Ipv4Addr,
    /// Masquerade pod traffic (else only NodePort SNAT).
    pub masquerade: bool,
    /// This node's pod CIDR (network, prefix length).
    pub pod_cidr: (Ipv4Addr, u8),
    /// The ports translated flows get.
    pub ports: RangeInclusive<u16>,
}

/// One translation the datapath made: `original` (pod address, port) to
/// `destination` leaves as `translated`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SnatEntry {
    /// The pod's address and port.
    pub original: (Ipv4Addr, u16),
    /// The node's address and the port claimed.
    pub translated: (Ipv4Addr, u16),
    /// The peer outside.
    pub destination: (Ipv4Addr, u16),
    /// Protocol.
    pub proto: Protocol,
    /// A reply came back.
    pub replied: bool,
    /// TCP: a FIN or RST was seen.
    pub closing: bool,
    /// Last packet (CLOCK_MONOTONIC ns).
    pub last_seen_ns: u64,
}

/// The masquerade maps.
pub struct MasqueradeMap {
    config: Array<MapData, MasqConfigRaw>,
    exempt: LpmTrie<MapData, IpcacheAddr, u8>,
    snat: HashMap<MapData, SnatKey, SnatVal>,
    max_exempt: u32,
}

impl std::fmt::Debug for MasqueradeMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasqueradeMap")
            .field("max_exempt", &self.max_exempt)
            .finish_non_exhaustive()
    }
}

fn mask(prefix_len: u8) -> u32 {
    if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix_len))
    }
}

impl MasqueradeMap {
    /// Opens the pinned maps under `pin_root` (checking their layouts).
    pub fn open(pin_root: &Path) -> Result<MasqueradeMap> {
        let (c, _) = open(pin_root, &MASQ_CONFIG)?;
        let (e, max_exempt) = open(pin_root, &MASQ_EXEMPT)?;
        let (s, _) = open(pin_root, &SNAT)?;
        Ok(MasqueradeMap {
            config: typed(&MASQ_CONFIG, Array::try_from(c))?,
            exempt: typed(&MASQ_EXEMPT, LpmTrie::try_from(e))?,
            snat: typed(&SNAT, HashMap::try_from(s))?,
            max_exempt,
        })
    }

    /// The current switch (None: no SNAT at all).
    pub fn config(&self) -> Result<Option<MasqueradeConfig>> {
        let v = self.config.get(&0, 0).map_err(|source| Error::Map {
            map: MASQ_CONFIG.name,
            op: "lookup",
            source: Box::new(source),
        })?;
        if v.node_addr == 0 {
            return Ok(None);
        }
        let m = u32::from_be(v.pod_mask);
        Ok(Some(MasqueradeConfig {
            node_addr: ip_from_be(v.node_addr),
            masquerade: v.flags & MASQ_CFG_MASQUERADE != 0,
            pod_cidr: (ip_from_be(v.pod_net), m.count_ones() as u8),
            ports: v.port_min..=v.port_max,
        }))
    }

    /// Sets how the node SNATs (`None`: not at all); takes effect on the
    /// next packet. Refuses an empty port range, an unspecified node
    /// address and a pod CIDR with host bits.
    pub fn set_config(&mut self, c: Option<&MasqueradeConfig>) -> Result<()> {
        let v = match c {
            None => MasqConfigRaw::default(),
            Some(c) => {
                check_prefix(c.pod_cidr.0, c.pod_cidr.1)?;
                if c.ports.is_empty() || c.node_addr.is_unspecified() {
                    return Err(Error::InvalidInput {
                        field: "masquerade",
                        value: format!("node {} ports {:?}", c.node_addr, c.ports),
                        allowed: "a node address and a non-empty port range",
                    });
                }
                let m = mask(c.pod_cidr.1);
                MasqConfigRaw {
                    node_addr: ip_be(c.node_addr),
                    pod_net: ip_be(c.pod_cidr.0),
                    pod_mask: m.to_be(),
                    port_min: *c.ports.start(),
                    port_max: *c.ports.end(),
                    flags: if c.masquerade { MASQ_CFG_MASQUERADE } else { 0 },
                }
            }
        };
        self.config.set(0, v, 0).map_err(|source| Error::Map {
            map: MASQ_CONFIG.name,
            op: "update",
            source: Box::new(source),
        })
    }

    /// Every exempt CIDR, sorted.
    pub fn exempt(&self) -> Result<Vec<(Ipv4Addr, u8)>> {
        let mut out = Vec::new();
        for item in self.exempt.iter() {
            let (k, _) = item.map_err(|e| dump_err(&MASQ_EXEMPT, e))?;
            out.push((ip_from_be(k.data().addr), k.prefix_len() as u8));
        }
        out.sort();
        Ok(out)
    }

    /// Whether `addr` is exempt (longest-prefix match, as the datapath).
    pub fn is_exempt(&self, addr: Ipv4Addr) -> Result<bool> {
        let key = Key::new(32, IpcacheAddr { addr: ip_be(addr) });
        Ok(super::get_opt(&MASQ_EXEMPT, self.exempt.get(&key, 0))?.is_some())
    }

    /// Makes the exempt set `desired` (adds first, then removes); returns
    /// (added, removed).
    #[allow(clippy::type_complexity)]
    pub fn sync_exempt(
        &mut self,
        desired: &BTreeSet<(Ipv4Addr, u8)>,
    ) -> Result<(Vec<(Ipv4Addr, u8)>, Vec<(Ipv4Addr, u8)>)> {
        let current: BTreeSet<(Ipv4Addr, u8)> = self.exempt()?.into_iter().collect();
        let mut added = Vec::new();
        for &(addr, len) in desired.difference(&current) {
            let key = check_prefix(addr, len)?;
            self.exempt
                .insert(&key, 1, 0)
                .map_err(|e| insert_err(&MASQ_EXEMPT, self.max_exempt, e))?;
            added.push((addr, len));
        }
        let mut removed = Vec::new();
        for &(addr, len) in current.difference(desired) {
            let key = check_prefix(addr, len)?;
            remove_ok(&MASQ_EXEMPT, self.exempt.remove(&key))?;
            removed.push((addr, len));
        }
        Ok((added, removed))
    }

    /// Every translation (one per claimed port), sorted by original.
    pub fn translations(&self) -> Result<Vec<SnatEntry>> {
        let mut out = Vec::new();
        for item in self.snat.iter() {
            let (k, v) = item.map_err(|e| dump_err(&SNAT, e))?;
            if k.dir != SNAT_DIR_IN {
                continue;
            }
            out.push(SnatEntry {
                original: (ip_from_be(v.addr), port_from_be(v.port)),
                translated: (ip_from_be(k.daddr), port_from_be(k.dport)),
                destination: (ip_from_be(k.saddr), port_from_be(k.sport)),
                proto: Protocol::from_number(k.proto),
                replied: v.flags & SNAT_FLAG_REPLIED != 0,
                closing: v.flags & SNAT_FLAG_CLOSING != 0,
                last_seen_ns: v.last_seen_ns,
            });
        }
        out.sort_by_key(|e| (e.original, e.destination));
        Ok(out)
    }
}

/// The ports above the ephemeral range `ephemeral` (as
/// `/proc/sys/net/ipv4/ip_local_port_range` gives it), where the node's own
/// connections never go, or below it when there is no room above (at
/// least 1024 ports either way); None when neither side has room.
pub fn ports_outside(ephemeral: RangeInclusive<u16>) -> Option<RangeInclusive<u16>> {
    const MIN_PORTS: u32 = 1024;
    let (lo, hi) = (*ephemeral.start(), *ephemeral.end());
    if u32::from(u16::MAX - hi) >= MIN_PORTS {
        return Some(hi + 1..=u16::MAX);
    }
    if u32::from(lo).saturating_sub(1024) >= MIN_PORTS {
        return Some(1024..=lo - 1);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_outside_the_ephemeral_range() {
        assert_eq!(ports_outside(32768..=60999), Some(61000..=65535));
        // No room above: below, from 1024.
        assert_eq!(ports_outside(20000..=65000), Some(1024..=19999));
        assert_eq!(ports_outside(1024..=65535), None);
        assert_eq!(ports_outside(1500..=65000), None);
    }
}
