//! IP/CIDR → identity (LPM trie).

use std::net::Ipv4Addr;
use std::path::Path;

use aya::maps::MapData;
use aya::maps::lpm_trie::{Key, LpmTrie};

use super::raw::{IpcacheAddr, IpcacheVal};
use super::{IPCACHE, dump_err, get_opt, insert_err, ip_be, ip_from_be, open, remove_ok, typed};
use crate::error::{Error, Result};

/// `IPCACHE_FLAG_ENCRYPT`.
pub(crate) const FLAG_ENCRYPT: u8 = 0x1;

/// What the datapath knows about an address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct IpcacheEntry {
    /// Security identity of the addresses.
    pub identity: u32,
    /// Node hosting them (for tunnelling/encryption); `None` when local or unknown.
    pub tunnel_endpoint: Option<Ipv4Addr>,
    /// Traffic to them must be encrypted.
    pub encrypt: bool,
    /// Cluster id they belong to (0 = unknown).
    pub cluster_id: u8,
}

/// The ipcache: CIDR → [`IpcacheEntry`].
#[derive(Debug)]
pub struct IpcacheMap {
    map: LpmTrie<MapData, IpcacheAddr, IpcacheVal>,
    max: u32,
}

/// The LPM key of `addr/prefix_len`, refusing host bits and lengths over 32.
pub(crate) fn check_prefix(addr: Ipv4Addr, prefix_len: u8) -> Result<Key<IpcacheAddr>> {
    if prefix_len > 32 {
        return Err(Error::InvalidInput {
            field: "ipcache prefix length",
            value: format!("{addr}/{prefix_len}"),
            allowed: "IPv4 prefix lengths 0-32",
        });
    }
    let mask = if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - prefix_len)
    };
    if u32::from(addr) & !mask != 0 {
        return Err(Error::InvalidInput {
            field: "ipcache CIDR",
            value: format!("{addr}/{prefix_len}"),
            allowed: "a network address with no host bits set",
        });
    }
    Ok(Key::new(
        u32::from(prefix_len),
        IpcacheAddr { addr: ip_be(addr) },
    ))
}

impl IpcacheMap {
    /// Opens the pinned map under `pin_root` (checking its layout).
    pub fn open(pin_root: &Path) -> Result<IpcacheMap> {
        let (m, max) = open(pin_root, &IPCACHE)?;
        Ok(IpcacheMap {
            map: typed(&IPCACHE, LpmTrie::try_from(m))?,
            max,
        })
    }

    /// Sets the entry for `addr/prefix_len`. Idempotent.
    pub fn upsert(&mut self, addr: Ipv4Addr, prefix_len: u8, e: IpcacheEntry) -> Result<()> {
        let key = check_prefix(addr, prefix_len)?;
        let v = IpcacheVal {
            identity: e.identity,
            tunnel_endpoint: e.tunnel_endpoint.map(ip_be).unwrap_or(0),
            flags: if e.encrypt { FLAG_ENCRYPT } else { 0 },
            cluster_id: e.cluster_id,
            pad: 0,
        };
        self.map
            .insert(&key, v, 0)
            .map_err(|err| insert_err(&IPCACHE, self.max, err))
    }

    /// Removes the entry for exactly `addr/prefix_len` (no-op when absent).
    pub fn delete(&mut self, addr: Ipv4Addr, prefix_len: u8) -> Result<()> {
        let key = check_prefix(addr, prefix_len)?;
        remove_ok(&IPCACHE, self.map.remove(&key))
    }

    /// Longest-prefix match for `addr`, as the datapath does.
    pub fn lookup(&self, addr: Ipv4Addr) -> Result<Option<IpcacheEntry>> {
        let key = Key::new(32, IpcacheAddr { addr: ip_be(addr) });
        Ok(get_opt(&IPCACHE, self.map.get(&key, 0))?.map(entry_from))
    }

    /// Every entry as (network, prefix length, entry).
    pub fn dump(&self) -> Result<Vec<(Ipv4Addr, u8, IpcacheEntry)>> {
        let mut out = Vec::new();
        for item in self.map.iter() {
            let (k, v) = item.map_err(|e| dump_err(&IPCACHE, e))?;
            out.push((
                ip_from_be(k.data().addr),
                k.prefix_len() as u8,
                entry_from(v),
            ));
        }
        out.sort_by_key(|(a, p, _)| (*a, *p));
        Ok(out)
    }
}

fn entry_from(v: IpcacheVal) -> IpcacheEntry {
    IpcacheEntry {
        identity: v.identity,
        tunnel_endpoint: (v.tunnel_endpoint != 0).then(|| ip_from_be(v.tunnel_endpoint)),
        encrypt: v.flags & FLAG_ENCRYPT != 0,
        cluster_id: v.cluster_id,
    }
}
