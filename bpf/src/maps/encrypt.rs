//! Strict-mode encryption: the CIDRs whose traffic must leave through the
//! WireGuard device (LPM trie) and the enforcement switch with the device's
//! ifindex (one-entry array). The agent owns both; `from_pod` reads them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, MapData};

use super::ipcache::check_prefix;
use super::raw::{EncryptCfg, EncryptVal, IpcacheAddr};
use super::{
    ENCRYPT, ENCRYPT_CFG, dump_err, insert_err, ip_be, ip_from_be, open, remove_ok, typed,
};
use crate::error::{Error, Result};

/// `ENCRYPT_CFG_STRICT`.
pub(crate) const CFG_STRICT: u32 = 0x1;

/// The enforcement switch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EncryptConfig {
    /// Drop pod traffic to a listed CIDR unless the FIB sends it into
    /// `wg_ifindex`.
    pub strict: bool,
    /// The WireGuard device's ifindex (0: none; with `strict`, everything
    /// to a listed CIDR is dropped).
    pub wg_ifindex: u32,
}

/// What one [`EncryptMap::sync`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EncryptSync {
    /// CIDRs added or changed.
    pub upserted: Vec<(Ipv4Addr, u8)>,
    /// CIDRs removed.
    pub removed: Vec<(Ipv4Addr, u8)>,
}

/// The strict-mode maps.
pub struct EncryptMap {
    cidrs: LpmTrie<MapData, IpcacheAddr, EncryptVal>,
    cfg: Array<MapData, EncryptCfg>,
    max: u32,
}

impl std::fmt::Debug for EncryptMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptMap")
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl EncryptMap {
    /// Opens the pinned maps under `pin_root` (checking their layouts).
    pub fn open(pin_root: &Path) -> Result<EncryptMap> {
        let (m, max) = open(pin_root, &ENCRYPT)?;
        let (c, _) = open(pin_root, &ENCRYPT_CFG)?;
        Ok(EncryptMap {
            cidrs: typed(&ENCRYPT, LpmTrie::try_from(m))?,
            cfg: typed(&ENCRYPT_CFG, Array::try_from(c))?,
            max,
        })
    }

    /// The current switch.
    pub fn config(&self) -> Result<EncryptConfig> {
        let v = self.cfg.get(&0, 0).map_err(|source| Error::Map {
            map: ENCRYPT_CFG.name,
            op: "lookup",
            source: Box::new(source),
        })?;
        Ok(EncryptConfig {
            strict: v.flags & CFG_STRICT != 0,
            wg_ifindex: v.wg_ifindex,
        })
    }

    /// Sets the switch (takes effect on the next packet).
    pub fn set_config(&mut self, c: EncryptConfig) -> Result<()> {
        let v = EncryptCfg {
            wg_ifindex: c.wg_ifindex,
            flags: if c.strict { CFG_STRICT } else { 0 },
        };
        self.cfg.set(0, v, 0).map_err(|source| Error::Map {
            map: ENCRYPT_CFG.name,
            op: "update",
            source: Box::new(source),
        })
    }

    /// Lists `addr/prefix_len` (owned by node `node_ip`). Idempotent.
    pub fn upsert(&mut self, addr: Ipv4Addr, prefix_len: u8, node_ip: Ipv4Addr) -> Result<()> {
        let key = check_prefix(addr, prefix_len)?;
        self.cidrs
            .insert(
                &key,
                EncryptVal {
                    node_ip: ip_be(node_ip),
                },
                0,
            )
            .map_err(|e| insert_err(&ENCRYPT, self.max, e))
    }

    /// Unlists exactly `addr/prefix_len` (no-op when absent).
    pub fn delete(&mut self, addr: Ipv4Addr, prefix_len: u8) -> Result<()> {
        let key = check_prefix(addr, prefix_len)?;
        remove_ok(&ENCRYPT, self.cidrs.remove(&key))
    }

    /// Every listed CIDR as (network, prefix length, node IP), sorted.
    pub fn dump(&self) -> Result<Vec<(Ipv4Addr, u8, Ipv4Addr)>> {
        let mut out = Vec::new();
        for item in self.cidrs.iter() {
            let (k, v) = item.map_err(|e| dump_err(&ENCRYPT, e))?;
            out.push((
                ip_from_be(k.data().addr),
                k.prefix_len() as u8,
                ip_from_be(v.node_ip),
            ));
        }
        out.sort();
        Ok(out)
    }

    /// Whether `addr` falls in a listed CIDR (longest-prefix match, as the
    /// datapath does).
    pub fn covers(&self, addr: Ipv4Addr) -> Result<bool> {
        let key = Key::new(32, IpcacheAddr { addr: ip_be(addr) });
        Ok(super::get_opt(&ENCRYPT, self.cidrs.get(&key, 0))?.is_some())
    }

    /// Adds or updates every CIDR of `desired`; when `prune`, also removes
    /// the listed CIDRs `desired` lacks. (A caller adds before it changes
    /// routes and prunes after, so no CIDR is unlisted while a route to it
    /// still exists.)
    pub fn sync(
        &mut self,
        desired: &BTreeMap<(Ipv4Addr, u8), Ipv4Addr>,
        prune: bool,
    ) -> Result<EncryptSync> {
        let current: BTreeMap<(Ipv4Addr, u8), Ipv4Addr> = self
            .dump()?
            .into_iter()
            .map(|(a, p, n)| ((a, p), n))
            .collect();
        let mut out = EncryptSync::default();
        for (&(addr, len), &node) in desired {
            if current.get(&(addr, len)) != Some(&node) {
                self.upsert(addr, len, node)?;
                out.upserted.push((addr, len));
            }
        }
        if prune {
            for &(addr, len) in current.keys() {
                if !desired.contains_key(&(addr, len)) {
                    self.delete(addr, len)?;
                    out.removed.push((addr, len));
                }
            }
        }
        Ok(out)
    }
}
