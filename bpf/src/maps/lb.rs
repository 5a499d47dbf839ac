//! Service load-balancing maps: frontends, backend slots, reverse NAT and
//! Maglev tables ([`ServiceMap`]), and backends ([`BackendMap`]).

use std::net::Ipv4Addr;
use std::path::Path;

use aya::maps::{Array, HashMap, MapData};

use super::raw::{
    BackendVal, LbConfigRaw, MAGLEV_TABLE_SIZE, MaglevVal, RevNatVal, SlotKey, SvcKey, SvcVal,
};
use super::{
    AFFINITY_SVC, BACKENDS, LB_CONFIG, MAGLEV, Protocol, REVNAT, SERVICES, SLOTS, dump_err,
    get_opt, insert_err, ip_be, ip_from_be, open, port_be, port_from_be, remove_ok, typed,
};
use crate::error::{Error, Result};
use crate::maglev;

/// `SVC_FLAG_MAGLEV`.
pub(crate) const SVC_FLAG_MAGLEV: u16 = 0x1;
/// `SVC_FLAG_AFFINITY`.
pub(crate) const SVC_FLAG_AFFINITY: u16 = 0x2;

/// Identifies one service frontend (and its reverse-NAT entry). Non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct ServiceId(pub u32);

/// Identifies one backend. Non-zero (0 means "none" in the datapath).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct BackendId(pub u32);

/// A service frontend: ClusterIP (or node address for NodePort), port, protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Frontend {
    /// Virtual address.
    pub addr: Ipv4Addr,
    /// Port (non-zero).
    pub port: u16,
    /// TCP or UDP.
    pub proto: Protocol,
}

/// How a backend is chosen for a new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum LbAlgorithm {
    /// Uniformly random among the backends.
    #[default]
    Random,
    /// Maglev consistent hashing (table of 16381 entries).
    Maglev,
}

/// A backend: where a frontend's traffic goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Backend {
    /// Pod (or node) address.
    pub addr: Ipv4Addr,
    /// Target port.
    pub port: u16,
    /// TCP or UDP.
    pub proto: Protocol,
    /// Cluster the backend lives in (0 = unknown/local).
    pub cluster_id: u8,
}

/// A service as stored in the maps.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceEntry {
    /// Its frontend.
    pub frontend: Frontend,
    /// Its id.
    pub id: ServiceId,
    /// Backends in slot order.
    pub backends: Vec<BackendId>,
    /// Selection algorithm.
    pub algorithm: LbAlgorithm,
    /// ClientIP session affinity timeout in seconds (None: no affinity).
    pub affinity_timeout: Option<u32>,
}

fn svc_key(f: &Frontend) -> SvcKey {
    SvcKey {
        addr: ip_be(f.addr),
        port: port_be(f.port),
        proto: f.proto.number(),
        pad: 0,
    }
}

fn check_frontend(f: &Frontend) -> Result<()> {
    if f.port == 0 {
        return Err(Error::InvalidInput {
            field: "service port",
            value: format!("{}:{}/{}", f.addr, f.port, f.proto),
            allowed: "ports 1-65535",
        });
    }
    if !matches!(f.proto, Protocol::Tcp | Protocol::Udp) {
        return Err(Error::InvalidInput {
            field: "service protocol",
            value: f.proto.to_string(),
            allowed: "TCP or UDP",
        });
    }
    Ok(())
}

/// Frontends → backend slots, reverse NAT and Maglev tables.
pub struct ServiceMap {
    services: HashMap<MapData, SvcKey, SvcVal>,
    slots: HashMap<MapData, SlotKey, u32>,
    revnat: HashMap<MapData, u32, RevNatVal>,
    maglev: HashMap<MapData, u32, MaglevVal>,
    affinity: HashMap<MapData, u32, u32>,
    /// Read only: Maglev tables are built from the backends' addresses.
    backends: HashMap<MapData, u32, BackendVal>,
    config: Array<MapData, LbConfigRaw>,
    max: [u32; 5],
}

impl std::fmt::Debug for ServiceMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceMap")
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl ServiceMap {
    /// Opens the pinned maps under `pin_root` (checking their layout).
    pub fn open(pin_root: &Path) -> Result<ServiceMap> {
        let (s, ms) = open(pin_root, &SERVICES)?;
        let (sl, msl) = open(pin_root, &SLOTS)?;
        let (r, mr) = open(pin_root, &REVNAT)?;
        let (m, mm) = open(pin_root, &MAGLEV)?;
        let (a, ma) = open(pin_root, &AFFINITY_SVC)?;
        let (b, _) = open(pin_root, &BACKENDS)?;
        let (c, _) = open(pin_root, &LB_CONFIG)?;
        Ok(ServiceMap {
            services: typed(&SERVICES, HashMap::try_from(s))?,
            slots: typed(&SLOTS, HashMap::try_from(sl))?,
            revnat: typed(&REVNAT, HashMap::try_from(r))?,
            maglev: typed(&MAGLEV, HashMap::try_from(m))?,
            affinity: typed(&AFFINITY_SVC, HashMap::try_from(a))?,
            backends: typed(&BACKENDS, HashMap::try_from(b))?,
            config: typed(&LB_CONFIG, Array::try_from(c))?,
            max: [ms, msl, mr, mm, ma],
        })
    }

    /// The flow hash seed Maglev lookups use (see [`crate::maglev::seed_of`]).
    pub fn maglev_seed(&self) -> Result<u32> {
        let v = self.config.get(&0, 0).map_err(|source| Error::Map {
            map: LB_CONFIG.name,
            op: "lookup",
            source: Box::new(source),
        })?;
        Ok(v.maglev_seed)
    }

    /// Sets the flow hash seed: every node of a cluster must use the same
    /// one to pick the same backend for the same flow. Takes effect for
    /// new flows.
    pub fn set_maglev_seed(&mut self, seed: u32) -> Result<()> {
        let v = LbConfigRaw {
            maglev_seed: seed,
            pad: 0,
        };
        self.config.set(0, v, 0).map_err(|source| Error::Map {
            map: LB_CONFIG.name,
            op: "update",
            source: Box::new(source),
        })
    }

    /// Creates or updates the service behind `frontend`. Idempotent; never
    /// disturbs other services. Slots are written before the frontend's
    /// backend count grows and removed after it shrinks, so a concurrent
    /// lookup never sees a slot that is not written.
    pub fn upsert(
        &mut self,
        frontend: Frontend,
        id: ServiceId,
        backends: &[BackendId],
        algorithm: LbAlgorithm,
    ) -> Result<()> {
        check_frontend(&frontend)?;
        if id.0 == 0 {
            return Err(Error::InvalidInput {
                field: "service id",
                value: "0".into(),
                allowed: "non-zero ids (0 means none in the datapath)",
            });
        }
        if backends.len() > usize::from(u16::MAX) {
            return Err(Error::InvalidInput {
                field: "backend count",
                value: backends.len().to_string(),
                allowed: "at most 65535 backends per frontend",
            });
        }
        if backends.iter().any(|b| b.0 == 0) {
            return Err(Error::InvalidInput {
                field: "backend id",
                value: "0".into(),
                allowed: "non-zero ids (0 means none in the datapath)",
            });
        }
        let key = svc_key(&frontend);
        let old = get_opt(&SERVICES, self.services.get(&key, 0))?;
        for (slot, b) in backends.iter().enumerate() {
            let k = SlotKey {
                svc_id: id.0,
                slot: slot as u32,
            };
            self.slots
                .insert(k, b.0, 0)
                .map_err(|e| insert_err(&SLOTS, self.max[1], e))?;
        }
        if algorithm == LbAlgorithm::Maglev && !backends.is_empty() {
            let mut addressed = Vec::with_capacity(backends.len());
            for id in backends {
                let Some(v) = get_opt(&BACKENDS, self.backends.get(&id.0, 0))? else {
                    return Err(Error::InvalidInput {
                        field: "Maglev backend",
                        value: id.0.to_string(),
                        allowed: "backend ids present in mw_backends (upsert backends first)",
                    });
                };
                addressed.push((*id, backend_from(v)));
            }
            let table = maglev::table(&addressed, MAGLEV_TABLE_SIZE);
            let mut val = MaglevVal {
                backend_ids: [0; MAGLEV_TABLE_SIZE],
            };
            for (dst, src) in val.backend_ids.iter_mut().zip(table.iter()) {
                *dst = src.0;
            }
            self.maglev
                .insert(id.0, val, 0)
                .map_err(|e| insert_err(&MAGLEV, self.max[3], e))?;
        }
        let rn = RevNatVal {
            addr: ip_be(frontend.addr),
            port: port_be(frontend.port),
            pad: 0,
        };
        self.revnat
            .insert(id.0, rn, 0)
            .map_err(|e| insert_err(&REVNAT, self.max[2], e))?;
        let mut flags = if algorithm == LbAlgorithm::Maglev {
            SVC_FLAG_MAGLEV
        } else {
            0
        };
        // Affinity is set apart ([`ServiceMap::set_affinity`]); an update
        // of the backends keeps it.
        if let Some(old) = old
            && old.svc_id == id.0
        {
            flags |= old.flags & SVC_FLAG_AFFINITY;
        }
        let val = SvcVal {
            svc_id: id.0,
            backend_count: backends.len() as u16,
            flags,
        };
        self.services
            .insert(key, val, 0)
            .map_err(|e| insert_err(&SERVICES, self.max[0], e))?;
        if algorithm != LbAlgorithm::Maglev || backends.is_empty() {
            remove_ok(&MAGLEV, self.maglev.remove(&id.0))?;
        }
        if let Some(old) = old {
            if old.svc_id == id.0 {
                for slot in backends.len() as u32..u32::from(old.backend_count) {
                    remove_ok(&SLOTS, self.slots.remove(&SlotKey { svc_id: id.0, slot }))?;
                }
            } else {
                self.remove_id(old.svc_id, old.backend_count)?;
            }
        }
        Ok(())
    }

    fn remove_id(&mut self, id: u32, count: u16) -> Result<()> {
        for slot in 0..u32::from(count) {
            remove_ok(&SLOTS, self.slots.remove(&SlotKey { svc_id: id, slot }))?;
        }
        remove_ok(&MAGLEV, self.maglev.remove(&id))?;
        remove_ok(&AFFINITY_SVC, self.affinity.remove(&id))?;
        remove_ok(&REVNAT, self.revnat.remove(&id))
    }

    /// Sets (Some(timeout in seconds)) or clears ClientIP session affinity
    /// of the service behind `frontend`. The timeout is written before the
    /// flag is set and the flag cleared before the timeout goes. Fails when
    /// the frontend has no service.
    pub fn set_affinity(&mut self, frontend: Frontend, timeout: Option<u32>) -> Result<()> {
        let key = svc_key(&frontend);
        let Some(mut val) = get_opt(&SERVICES, self.services.get(&key, 0))? else {
            return Err(Error::InvalidInput {
                field: "frontend",
                value: format!("{}:{}", frontend.addr, frontend.port),
                allowed: "a frontend that has a service (upsert it first)",
            });
        };
        match timeout {
            Some(0) => Err(Error::InvalidInput {
                field: "affinity timeout",
                value: "0".into(),
                allowed: "1 to 86400 seconds (Kubernetes' range)",
            }),
            Some(t) => {
                self.affinity
                    .insert(val.svc_id, t, 0)
                    .map_err(|e| insert_err(&AFFINITY_SVC, self.max[4], e))?;
                if val.flags & SVC_FLAG_AFFINITY == 0 {
                    val.flags |= SVC_FLAG_AFFINITY;
                    self.services
                        .insert(key, val, 0)
                        .map_err(|e| insert_err(&SERVICES, self.max[0], e))?;
                }
                Ok(())
            }
            None => {
                if val.flags & SVC_FLAG_AFFINITY != 0 {
                    val.flags &= !SVC_FLAG_AFFINITY;
                    self.services
                        .insert(key, val, 0)
                        .map_err(|e| insert_err(&SERVICES, self.max[0], e))?;
                }
                remove_ok(&AFFINITY_SVC, self.affinity.remove(&val.svc_id))
            }
        }
    }

    /// Removes the service behind `frontend` (no-op when absent). The
    /// frontend disappears first, so no new flow is balanced to half-removed
    /// slots.
    pub fn delete(&mut self, frontend: Frontend) -> Result<()> {
        let key = svc_key(&frontend);
        let Some(old) = get_opt(&SERVICES, self.services.get(&key, 0))? else {
            return Ok(());
        };
        remove_ok(&SERVICES, self.services.remove(&key))?;
        self.remove_id(old.svc_id, old.backend_count)
    }

    /// The service behind `frontend`, if any.
    pub fn get(&self, frontend: Frontend) -> Result<Option<ServiceEntry>> {
        let key = svc_key(&frontend);
        match get_opt(&SERVICES, self.services.get(&key, 0))? {
            Some(v) => Ok(Some(self.entry(frontend, v)?)),
            None => Ok(None),
        }
    }

    fn entry(&self, frontend: Frontend, v: SvcVal) -> Result<ServiceEntry> {
        let mut backends = Vec::with_capacity(usize::from(v.backend_count));
        for slot in 0..u32::from(v.backend_count) {
            let k = SlotKey {
                svc_id: v.svc_id,
                slot,
            };
            if let Some(b) = get_opt(&SLOTS, self.slots.get(&k, 0))? {
                backends.push(BackendId(b));
            }
        }
        Ok(ServiceEntry {
            frontend,
            id: ServiceId(v.svc_id),
            backends,
            algorithm: if v.flags & SVC_FLAG_MAGLEV != 0 {
                LbAlgorithm::Maglev
            } else {
                LbAlgorithm::Random
            },
            affinity_timeout: if v.flags & SVC_FLAG_AFFINITY != 0 {
                get_opt(&AFFINITY_SVC, self.affinity.get(&v.svc_id, 0))?
            } else {
                None
            },
        })
    }

    /// Every service, sorted by frontend.
    pub fn dump(&self) -> Result<Vec<ServiceEntry>> {
        let mut out = Vec::new();
        for item in self.services.iter() {
            let (k, v) = item.map_err(|e| dump_err(&SERVICES, e))?;
            let frontend = Frontend {
                addr: ip_from_be(k.addr),
                port: port_from_be(k.port),
                proto: Protocol::from_number(k.proto),
            };
            out.push(self.entry(frontend, v)?);
        }
        out.sort_by_key(|e| e.frontend);
        Ok(out)
    }

    /// The Maglev table of service `id`, when it has one.
    pub fn maglev_table(&self, id: ServiceId) -> Result<Option<Vec<BackendId>>> {
        Ok(get_opt(&MAGLEV, self.maglev.get(&id.0, 0))?
            .map(|t| t.backend_ids.iter().map(|b| BackendId(*b)).collect()))
    }

    /// Capacity of the frontend map.
    pub fn capacity(&self) -> u32 {
        self.max[0]
    }
}

/// Backend id → address, port, protocol, cluster.
#[derive(Debug)]
pub struct BackendMap {
    map: HashMap<MapData, u32, BackendVal>,
    max: u32,
}

impl BackendMap {
    /// Opens the pinned map under `pin_root` (checking its layout).
    pub fn open(pin_root: &Path) -> Result<BackendMap> {
        let (m, max) = open(pin_root, &BACKENDS)?;
        Ok(BackendMap {
            map: typed(&BACKENDS, HashMap::try_from(m))?,
            max,
        })
    }

    /// Creates or updates backend `id`. Idempotent.
    pub fn upsert(&mut self, id: BackendId, b: Backend) -> Result<()> {
        if id.0 == 0 {
            return Err(Error::InvalidInput {
                field: "backend id",
                value: "0".into(),
                allowed: "non-zero ids (0 means none in the datapath)",
            });
        }
        if b.port == 0 || !matches!(b.proto, Protocol::Tcp | Protocol::Udp) {
            return Err(Error::InvalidInput {
                field: "backend",
                value: format!("{}:{}/{}", b.addr, b.port, b.proto),
                allowed: "a TCP or UDP backend with a port in 1-65535",
            });
        }
        let v = BackendVal {
            addr: ip_be(b.addr),
            port: port_be(b.port),
            proto: b.proto.number(),
            cluster_id: b.cluster_id,
            flags: 0,
        };
        self.map
            .insert(id.0, v, 0)
            .map_err(|e| insert_err(&BACKENDS, self.max, e))
    }

    /// Removes backend `id` (no-op when absent). Flows already pinned to it
    /// by conntrack choose a new backend on their next packet.
    pub fn delete(&mut self, id: BackendId) -> Result<()> {
        remove_ok(&BACKENDS, self.map.remove(&id.0))
    }

    /// Backend `id`, if present.
    pub fn get(&self, id: BackendId) -> Result<Option<Backend>> {
        Ok(get_opt(&BACKENDS, self.map.get(&id.0, 0))?.map(backend_from))
    }

    /// Every backend, sorted by id.
    pub fn dump(&self) -> Result<Vec<(BackendId, Backend)>> {
        let mut out = Vec::new();
        for item in self.map.iter() {
            let (k, v) = item.map_err(|e| dump_err(&BACKENDS, e))?;
            out.push((BackendId(k), backend_from(v)));
        }
        out.sort_by_key(|(id, _)| *id);
        Ok(out)
    }
}

fn backend_from(v: BackendVal) -> Backend {
    Backend {
        addr: ip_from_be(v.addr),
        port: port_from_be(v.port),
        proto: Protocol::from_number(v.proto),
        cluster_id: v.cluster_id,
    }
}
