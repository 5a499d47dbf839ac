//! [`LoadBalancer`]: services by address, with id allocation, over
//! [`ServiceMap`] and [`BackendMap`], for reconcilers that think in
//! frontends and backend addresses rather than ids.

use std::collections::HashMap;
use std::path::Path;

use super::lb::{Backend, BackendId, BackendMap, Frontend, LbAlgorithm, ServiceId, ServiceMap};
use crate::error::{Error, Result};

/// Services keyed by frontend, backends by address. Ids are allocated here
/// and recovered from the pinned maps on open, so a restarted agent keeps
/// the ids (and conntrack entries that name them) it had.
#[derive(Debug)]
pub struct LoadBalancer {
    services: ServiceMap,
    backends: BackendMap,
    service_ids: HashMap<Frontend, ServiceId>,
    backend_ids: HashMap<Backend, BackendId>,
    next_service: u32,
    next_backend: u32,
    /// Backends no service references, and since when (for
    /// [`LoadBalancer::prune_backends_unused_for`]).
    unused_since: HashMap<BackendId, std::time::Instant>,
}

/// A service as the reconciler sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceView {
    /// Frontend.
    pub frontend: Frontend,
    /// Its id (stable while the frontend exists).
    pub id: ServiceId,
    /// Backends in slot order.
    pub backends: Vec<Backend>,
    /// Selection algorithm.
    pub algorithm: LbAlgorithm,
    /// ClientIP session affinity timeout in seconds (None: no affinity).
    pub affinity_timeout: Option<u32>,
}

impl LoadBalancer {
    /// Opens the maps under `pin_root` and rebuilds the id indexes from them.
    pub fn open(pin_root: &Path) -> Result<LoadBalancer> {
        let services = ServiceMap::open(pin_root)?;
        let backends = BackendMap::open(pin_root)?;
        let mut lb = LoadBalancer {
            service_ids: HashMap::new(),
            backend_ids: HashMap::new(),
            next_service: 1,
            next_backend: 1,
            unused_since: HashMap::new(),
            services,
            backends,
        };
        for e in lb.services.dump()? {
            lb.next_service = lb.next_service.max(e.id.0 + 1);
            lb.service_ids.insert(e.frontend, e.id);
        }
        for (id, b) in lb.backends.dump()? {
            lb.next_backend = lb.next_backend.max(id.0 + 1);
            lb.backend_ids.entry(b).or_insert(id);
        }
        Ok(lb)
    }

    fn alloc(next: &mut u32, what: &'static str) -> Result<u32> {
        let id = *next;
        if id == u32::MAX {
            return Err(Error::InvalidInput {
                field: what,
                value: id.to_string(),
                allowed: "ids below 2^32-1: the id space is exhausted; restart with fresh maps",
            });
        }
        *next += 1;
        Ok(id)
    }

    /// Creates or updates the service on `frontend` with `backends` (in slot
    /// order). Backend entries are written before the service points at
    /// them. Idempotent; returns the service id.
    pub fn upsert(
        &mut self,
        frontend: Frontend,
        backends: &[Backend],
        algorithm: LbAlgorithm,
    ) -> Result<ServiceId> {
        let mut ids = Vec::with_capacity(backends.len());
        for b in backends {
            let id = match self.backend_ids.get(b) {
                Some(id) => *id,
                None => {
                    let id = BackendId(Self::alloc(&mut self.next_backend, "backend id")?);
                    self.backends.upsert(id, *b)?;
                    self.backend_ids.insert(*b, id);
                    id
                }
            };
            ids.push(id);
        }
        let id = match self.service_ids.get(&frontend) {
            Some(id) => *id,
            None => ServiceId(Self::alloc(&mut self.next_service, "service id")?),
        };
        self.services.upsert(frontend, id, &ids, algorithm)?;
        self.service_ids.insert(frontend, id);
        Ok(id)
    }

    /// Sets or clears ClientIP session affinity (timeout in seconds) of the
    /// service on `frontend`, which must exist.
    pub fn set_affinity(&mut self, frontend: Frontend, timeout: Option<u32>) -> Result<()> {
        self.services.set_affinity(frontend, timeout)
    }

    /// Removes the service on `frontend` (no-op when absent). Its backends
    /// stay until [`LoadBalancer::prune_backends`], so established flows
    /// keep their backend meanwhile.
    pub fn delete(&mut self, frontend: Frontend) -> Result<()> {
        self.services.delete(frontend)?;
        self.service_ids.remove(&frontend);
        Ok(())
    }

    /// Removes backend entries no service references any more. Returns how
    /// many were removed. Call it some time after updates (e.g. once
    /// established flows to removed backends have drained).
    pub fn prune_backends(&mut self) -> Result<usize> {
        self.prune_backends_unused_for(std::time::Duration::ZERO)
    }

    /// Removes backend entries that no service has referenced for at least
    /// `grace` (measured from the first call that saw them unused), so
    /// flows still using a withdrawn backend (reverse NAT via conntrack)
    /// keep it while they drain, and the backend map cannot fill up with
    /// entries nothing uses. A backend referenced again in the meantime is
    /// kept (and its clock reset). Returns how many were removed.
    pub fn prune_backends_unused_for(&mut self, grace: std::time::Duration) -> Result<usize> {
        let used: std::collections::HashSet<BackendId> = self
            .services
            .dump()?
            .into_iter()
            .flat_map(|e| e.backends)
            .collect();
        let now = std::time::Instant::now();
        self.unused_since.retain(|id, _| !used.contains(id));
        let mut expired = Vec::new();
        for (b, id) in &self.backend_ids {
            if used.contains(id) {
                continue;
            }
            let since = *self.unused_since.entry(*id).or_insert(now);
            if now.duration_since(since) >= grace {
                expired.push((*b, *id));
            }
        }
        for (b, id) in &expired {
            self.backends.delete(*id)?;
            self.backend_ids.remove(b);
            self.unused_since.remove(id);
        }
        Ok(expired.len())
    }

    /// Every service with its backends resolved to addresses.
    pub fn dump(&self) -> Result<Vec<ServiceView>> {
        let by_id: HashMap<BackendId, Backend> = self.backends.dump()?.into_iter().collect();
        Ok(self
            .services
            .dump()?
            .into_iter()
            .map(|e| ServiceView {
                frontend: e.frontend,
                id: e.id,
                backends: e
                    .backends
                    .iter()
                    .filter_map(|id| by_id.get(id).copied())
                    .collect(),
                algorithm: e.algorithm,
                affinity_timeout: e.affinity_timeout,
            })
            .collect())
    }

    /// The underlying frontend maps (ids, Maglev tables).
    pub fn service_map(&self) -> &ServiceMap {
        &self.services
    }
}
