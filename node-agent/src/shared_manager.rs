//! The endpoint manager as the agent's tasks share it: the local API
//! (registrations from mesh-cni, the `local-api` source), the controllers
//! that write identities, ipcache, policies and services into its
//! reconciler, and the periodic reconcile.
//!
//! What it is for: one lock around the [`EndpointManager`], the counters of
//! what is done under it ([`Metrics`]), and a watch that says when an
//! endpoint came or went. Controllers get an `Arc<SharedManager>` and
//! nothing of the API's state, so they do not depend on the API and the API
//! reads their state from the channels they publish on
//! ([`crate::status::StatusFeeds`]).
//!
//! Lock order: nothing else is locked while the manager's lock is held
//! here; callers do not take it while holding a lock of their own.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::datapath::{Datapath, ServiceEntry};
use crate::endpoint::EndpointManager;
use crate::metrics::Metrics;
use crate::reconcile::ReconcileReport;

/// The manager the agent runs with: over the eBPF datapath, or any other.
pub type Manager = EndpointManager<Box<dyn Datapath>>;

/// The endpoint manager under its lock, with the agent's counters.
pub struct SharedManager {
    manager: Mutex<Manager>,
    metrics: Metrics,
    endpoints_changed: watch::Sender<u64>,
}

impl std::fmt::Debug for SharedManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedManager")
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl SharedManager {
    /// Shares an opened endpoint manager.
    pub fn new(manager: Manager) -> SharedManager {
        SharedManager {
            manager: Mutex::new(manager),
            metrics: Metrics::default(),
            endpoints_changed: watch::channel(0).0,
        }
    }

    /// The manager, locked until the guard is dropped.
    pub fn lock(&self) -> MutexGuard<'_, Manager> {
        self.manager.lock().expect("manager lock")
    }

    /// Runs `f` on the endpoint manager under its lock (controllers that
    /// set identities, ipcache and policies in one step).
    pub fn with_manager<R>(&self, f: impl FnOnce(&mut Manager) -> R) -> R {
        f(&mut self.lock())
    }

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// A receiver that sees a new value whenever an endpoint is registered
    /// or deregistered.
    pub fn subscribe_endpoints(&self) -> watch::Receiver<u64> {
        self.endpoints_changed.subscribe()
    }

    /// Tells the subscribers that an endpoint was registered or
    /// deregistered.
    pub fn endpoints_changed(&self) {
        self.endpoints_changed.send_modify(|v| *v += 1);
    }

    /// Counts a reconcile pass done by a controller, and its failures.
    pub fn count_reconcile(&self, report: &ReconcileReport, took: Duration) {
        self.metrics.reconcile(took);
        for (object, err) in &report.failed {
            self.metrics.error("datapath-update");
            tracing::warn!(%object, error = %err, "datapath update failed; will retry");
        }
    }

    /// The host firewall the datapath holds (None also when it cannot be
    /// read, which is logged).
    pub fn host_firewall(&self) -> Option<crate::datapath::HostPolicy> {
        use crate::datapath::Datapath as _;
        self.lock()
            .datapath()
            .host_policy()
            .inspect_err(|e| tracing::warn!(error = %e, "cannot read the host firewall"))
            .ok()
            .flatten()
    }

    /// Local endpoints whose ingress or egress is policy-enforced.
    pub fn enforcing_endpoints(&self) -> usize {
        self.lock()
            .reconciler()
            .desired_policies()
            .values()
            .filter(|p| p.ingress_enforced || p.egress_enforced)
            .count()
    }

    /// Replaces what `source` wants in the service maps and reconciles
    /// (used by the Kubernetes service feed).
    pub fn set_services(&self, source: &str, services: Vec<ServiceEntry>) {
        self.lock().reconciler().set_services(source, services);
        self.reconcile();
    }

    /// Runs one reconcile pass and counts its failures.
    pub fn reconcile(&self) {
        let start = Instant::now();
        let report = self.lock().reconcile();
        self.count_reconcile(&report, start.elapsed());
    }
}
