//! Typed wrappers of the pinned maps. Each wrapper opens its map from the pin
//! root (so the node-agent, `meshctl` and tests can open them without loading
//! programs), checks key/value sizes and map type against this build's
//! structs, and offers idempotent upserts and deletes: calling them again with
//! the same input changes nothing, and nothing here ever flushes a map.

pub mod raw;

mod conntrack;
mod encrypt;
mod flow;
mod ipcache;
mod lb;
mod lb_index;
mod masquerade;
mod policy;

#[cfg(test)]
mod c_twins;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use aya::maps::{Map, MapData, MapError, MapType};

use crate::error::{Error, Result};

pub use conntrack::{ConntrackMap, CtDirection, CtEntry};
pub use encrypt::{EncryptConfig, EncryptMap, EncryptSync};
pub use flow::{
    DropReason, FlowEvent, FlowObservation, FlowReader, FlowVerdict, Metrics, MetricsReader,
};
pub use ipcache::{IpcacheEntry, IpcacheMap};
pub use lb::{
    Backend, BackendId, BackendMap, Frontend, LbAlgorithm, ServiceEntry, ServiceId, ServiceMap,
};
pub use lb_index::{LoadBalancer, ServiceView};
pub use masquerade::{MASQ_PORT_TRIES, MasqueradeConfig, MasqueradeMap, SnatEntry, ports_outside};
pub use policy::{
    Direction, EndpointInfo, EndpointPolicy, HOST_ENDPOINT, ICMP_PORT_BASE, PolicyAction,
    PolicyEntry, PolicyKey, PolicyMap,
};

/// A map this build expects, with its layout.
#[derive(Debug, Clone, Copy)]
pub struct MapSpec {
    /// Name in the C object, and the file name under the pin root.
    pub name: &'static str,
    /// Kernel map type.
    pub map_type: MapType,
    /// Key size in bytes (0 for ring buffers).
    pub key_size: u32,
    /// Value size in bytes (0 for ring buffers).
    pub value_size: u32,
}

const fn spec<K, V>(name: &'static str, map_type: MapType) -> MapSpec {
    MapSpec {
        name,
        map_type,
        key_size: std::mem::size_of::<K>() as u32,
        value_size: std::mem::size_of::<V>() as u32,
    }
}

use raw::*;

pub(crate) const SERVICES: MapSpec = spec::<SvcKey, SvcVal>("mw_services", MapType::Hash);
pub(crate) const SLOTS: MapSpec = spec::<SlotKey, u32>("mw_slots", MapType::Hash);
pub(crate) const BACKENDS: MapSpec = spec::<u32, BackendVal>("mw_backends", MapType::Hash);
pub(crate) const REVNAT: MapSpec = spec::<u32, RevNatVal>("mw_revnat", MapType::Hash);
pub(crate) const MAGLEV: MapSpec = spec::<u32, MaglevVal>("mw_maglev", MapType::Hash);
pub(crate) const SK_REVNAT: MapSpec =
    spec::<SkRevNatKey, RevNatVal>("mw_sk_revnat", MapType::LruHash);
pub(crate) const AFFINITY_SVC: MapSpec = spec::<u32, u32>("mw_affinity_svc", MapType::Hash);
pub(crate) const AFFINITY: MapSpec =
    spec::<AffinityKey, AffinityVal>("mw_affinity", MapType::LruHash);
pub(crate) const IPCACHE: MapSpec =
    spec::<(u32, IpcacheAddr), IpcacheVal>("mw_ipcache", MapType::LpmTrie);
pub(crate) const POLICY: MapSpec = spec::<PolicyKeyRaw, PolicyValRaw>("mw_policy", MapType::Hash);
pub(crate) const ENDPOINTS: MapSpec = spec::<u32, PolicyEndpointRaw>("mw_endpoints", MapType::Hash);
pub(crate) const CONNTRACK: MapSpec = spec::<CtKey, CtVal>("mw_ct", MapType::LruHash);
pub(crate) const CONNTRACK_NEW: MapSpec = spec::<CtKey, CtVal>("mw_ct_new", MapType::LruHash);
pub(crate) const FLOWS: MapSpec = MapSpec {
    name: "mw_flows",
    map_type: MapType::RingBuf,
    key_size: 0,
    value_size: 0,
};
pub(crate) const METRICS: MapSpec = spec::<u32, MetricVal>("mw_metrics", MapType::PerCpuArray);
pub(crate) const ENCRYPT: MapSpec =
    spec::<(u32, IpcacheAddr), EncryptVal>("mw_encrypt", MapType::LpmTrie);
pub(crate) const ENCRYPT_CFG: MapSpec = spec::<u32, EncryptCfg>("mw_encrypt_cfg", MapType::Array);
pub(crate) const FRAGS: MapSpec = spec::<FragKey, FragVal>("mw_frags", MapType::LruHash);
pub(crate) const LB_CONFIG: MapSpec = spec::<u32, LbConfigRaw>("mw_lb_config", MapType::Array);
pub(crate) const MASQ_CONFIG: MapSpec =
    spec::<u32, MasqConfigRaw>("mw_masq_config", MapType::Array);
pub(crate) const MASQ_EXEMPT: MapSpec =
    spec::<(u32, IpcacheAddr), u8>("mw_masq_exempt", MapType::LpmTrie);
pub(crate) const SNAT: MapSpec = spec::<SnatKey, SnatVal>("mw_snat", MapType::LruHash);

/// Every map of the datapath, in the order they are checked.
pub const ALL_MAPS: &[MapSpec] = &[
    SERVICES,
    SLOTS,
    BACKENDS,
    REVNAT,
    MAGLEV,
    SK_REVNAT,
    AFFINITY_SVC,
    AFFINITY,
    IPCACHE,
    POLICY,
    ENDPOINTS,
    CONNTRACK,
    CONNTRACK_NEW,
    FLOWS,
    METRICS,
    ENCRYPT,
    ENCRYPT_CFG,
    FRAGS,
    LB_CONFIG,
    MASQ_CONFIG,
    MASQ_EXEMPT,
    SNAT,
];

/// The pin path of `spec` under `pin_root`.
pub fn pin_path(pin_root: &Path, spec: &MapSpec) -> PathBuf {
    pin_root.join(spec.name)
}

/// Checks a pinned map's type, key and value size against `spec`.
/// Returns the map's capacity.
pub(crate) fn check_layout(spec: &MapSpec, path: &Path, data: &MapData) -> Result<u32> {
    let info = data.info().map_err(|source| Error::Map {
        map: spec.name,
        op: "read info",
        source: Box::new(source),
    })?;
    let layout = |what, found: String, expected: String| Error::MapLayout {
        map: spec.name,
        path: path.to_path_buf(),
        what,
        found,
        expected,
    };
    let map_type = info.map_type().map_err(|source| Error::Map {
        map: spec.name,
        op: "read type",
        source: Box::new(source),
    })?;
    if map_type != spec.map_type {
        return Err(layout(
            "map type",
            format!("{map_type:?}"),
            format!("{:?}", spec.map_type),
        ));
    }
    if spec.map_type != MapType::RingBuf {
        if info.key_size() != spec.key_size {
            return Err(layout(
                "key size",
                info.key_size().to_string(),
                spec.key_size.to_string(),
            ));
        }
        if info.value_size() != spec.value_size {
            return Err(layout(
                "value size",
                info.value_size().to_string(),
                spec.value_size.to_string(),
            ));
        }
    }
    Ok(info.max_entries())
}

/// Checks the layout of every map already pinned under `pin_root` (maps not
/// pinned yet are skipped: loading creates them).
pub fn check_pinned_layouts(pin_root: &Path) -> Result<()> {
    for spec in ALL_MAPS {
        let path = pin_path(pin_root, spec);
        if !path.exists() {
            continue;
        }
        let data = MapData::from_pin(&path).map_err(|source| Error::Map {
            map: spec.name,
            op: "open pinned",
            source: Box::new(source),
        })?;
        check_layout(spec, &path, &data)?;
    }
    Ok(())
}

/// Opens a pinned map, checks its layout, and returns it with its capacity.
pub(crate) fn open(pin_root: &Path, spec: &MapSpec) -> Result<(Map, u32)> {
    let path = pin_path(pin_root, spec);
    let data = MapData::from_pin(&path).map_err(|source| Error::Map {
        map: spec.name,
        op: "open pinned (load the datapath first)",
        source: Box::new(source),
    })?;
    let max = check_layout(spec, &path, &data)?;
    let map = Map::from_map_data(data).map_err(|source| Error::Map {
        map: spec.name,
        op: "open pinned",
        source: Box::new(source),
    })?;
    Ok((map, max))
}

/// Counts the entries of a pinned hash map with key `K` and value `V`;
/// returns them with its capacity.
pub(crate) fn count_hash<K: aya::Pod, V: aya::Pod>(
    pin_root: &Path,
    spec: &MapSpec,
) -> Result<(u64, u32)> {
    let (map, max) = open(pin_root, spec)?;
    let m: aya::maps::HashMap<MapData, K, V> = typed(spec, aya::maps::HashMap::try_from(map))?;
    let mut n = 0u64;
    for key in m.keys() {
        key.map_err(|e| dump_err(spec, e))?;
        n += 1;
    }
    Ok((n, max))
}

/// Counts the entries of the ipcache (LPM trie).
pub(crate) fn count_ipcache(pin_root: &Path) -> Result<(u64, u32)> {
    let (map, max) = open(pin_root, &IPCACHE)?;
    let m: aya::maps::lpm_trie::LpmTrie<MapData, IpcacheAddr, IpcacheVal> =
        typed(&IPCACHE, aya::maps::lpm_trie::LpmTrie::try_from(map))?;
    let mut n = 0u64;
    for key in m.keys() {
        key.map_err(|e| dump_err(&IPCACHE, e))?;
        n += 1;
    }
    Ok((n, max))
}

/// Converts a typed-map construction error.
pub(crate) fn typed<T>(spec: &MapSpec, r: Result<T, MapError>) -> Result<T> {
    r.map_err(|source| Error::Map {
        map: spec.name,
        op: "open typed",
        source: Box::new(source),
    })
}

/// Maps an insert error, recognising "map full" (E2BIG / ENOMEM on a full
/// hash map).
pub(crate) fn insert_err(spec: &MapSpec, max_entries: u32, e: MapError) -> Error {
    if let MapError::SyscallError(s) = &e
        && s.io_error.raw_os_error() == Some(libc::E2BIG)
    {
        return Error::MapFull {
            map: spec.name,
            max_entries,
        };
    }
    Error::Map {
        map: spec.name,
        op: "insert",
        source: Box::new(e),
    }
}

/// Maps a remove error; a missing key is not an error (deletes are idempotent).
pub(crate) fn remove_ok(spec: &MapSpec, r: Result<(), MapError>) -> Result<()> {
    match r {
        Ok(()) | Err(MapError::KeyNotFound) | Err(MapError::ElementNotFound) => Ok(()),
        Err(MapError::SyscallError(s)) if s.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(source) => Err(Error::Map {
            map: spec.name,
            op: "remove",
            source: Box::new(source),
        }),
    }
}

/// Maps a lookup result: a missing key is `None`.
pub(crate) fn get_opt<V>(spec: &MapSpec, r: Result<V, MapError>) -> Result<Option<V>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(MapError::KeyNotFound) | Err(MapError::ElementNotFound) => Ok(None),
        Err(MapError::SyscallError(s)) if s.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(None)
        }
        Err(source) => Err(Error::Map {
            map: spec.name,
            op: "lookup",
            source: Box::new(source),
        }),
    }
}

pub(crate) fn dump_err(spec: &MapSpec, source: MapError) -> Error {
    Error::Map {
        map: spec.name,
        op: "iterate",
        source: Box::new(source),
    }
}

/// Network-order u32 (as stored by the C side) from an address.
pub(crate) fn ip_be(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

/// Address from a network-order u32.
pub(crate) fn ip_from_be(v: u32) -> Ipv4Addr {
    Ipv4Addr::from(v.to_ne_bytes())
}

/// Network-order u16 (as stored by the C side) from a port.
pub(crate) fn port_be(port: u16) -> u16 {
    port.to_be()
}

/// Port from a network-order u16.
pub(crate) fn port_from_be(v: u16) -> u16 {
    u16::from_be(v)
}

/// IP protocol numbers the datapath understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Protocol {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMP (1).
    Icmp,
    /// Any other protocol number.
    Other(u8),
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Icmp => 1,
            Protocol::Other(n) => n,
        }
    }

    /// From an IP protocol number.
    pub fn from_number(n: u8) -> Protocol {
        match n {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            1 => Protocol::Icmp,
            n => Protocol::Other(n),
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Protocol::Tcp => f.write_str("TCP"),
            Protocol::Udp => f.write_str("UDP"),
            Protocol::Icmp => f.write_str("ICMP"),
            Protocol::Other(n) => write!(f, "proto-{n}"),
        }
    }
}
