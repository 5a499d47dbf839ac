//! The controllers that make workloads run the way users write them, as
//! kube-controller-manager and kube-scheduler do on a real cluster:
//!
//! - [`deployment`]: Deployment → ReplicaSets (one per pod template,
//!   `<deployment>-<pod-template-hash>`), scaling, rolling replacement that
//!   waits for new pods to be available before old ones go, status;
//! - [`replicaset`]: ReplicaSet → Pods (`<replicaset>-<5 random characters>`),
//!   status counting ready and available pods;
//! - [`scheduler`]: binds a Pod without `spec.nodeName` to a ready Node,
//!   the one with the fewest pods first;
//! - [`gc`]: the garbage collector: dependents (by ownerReferences) go with
//!   their owner, in the background, in the foreground or orphaned.
//!
//! Each module keeps its decisions in pure functions over the objects
//! (unit-tested with tables); the controller structs are the thin I/O shell
//! that reads the store, applies the decisions and writes back. They run in
//! the server's process, fed by the store's change stream ([`run`]).
//!
//! What they are not: a kubelet (the lab runs pods and writes their
//! status), or complete (no adoption of orphaned pods by selector, no
//! progress deadline, no pod disruption budgets, no affinity).

pub mod deployment;
pub mod gc;
pub mod replicaset;
pub mod scheduler;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::task::JoinHandle;

use crate::store::{Store, StoredEvent};

/// One controller's reaction to committed changes.
pub trait Reconcile: Send + 'static {
    /// Handles a batch of changes (None: look at everything, as at start or
    /// after falling behind the change stream); returns when to run again
    /// even if nothing changes (a pod becoming available with time, a write
    /// that lost a race).
    fn reconcile(&mut self, batch: Option<&[Arc<StoredEvent>]>) -> Option<Duration>;
}

/// Runs `c` until the store's change stream closes: once over everything,
/// then per batch of changes (all changes queued when it wakes).
pub async fn run(store: Arc<Store>, mut c: impl Reconcile) {
    let mut rx = store.subscribe();
    let mut wake = c.reconcile(None);
    loop {
        let first = match wake {
            Some(after) => tokio::select! {
                r = rx.recv() => Some(r),
                _ = tokio::time::sleep(after) => None,
            },
            None => Some(rx.recv().await),
        };
        let mut batch = Vec::new();
        let mut everything = false;
        match first {
            Some(Ok(ev)) => batch.push(ev),
            Some(Err(RecvError::Lagged(_))) | None => everything = true,
            Some(Err(RecvError::Closed)) => return,
        }
        loop {
            match rx.try_recv() {
                Ok(ev) => batch.push(ev),
                Err(TryRecvError::Lagged(_)) => everything = true,
                Err(_) => break,
            }
        }
        wake = if everything {
            c.reconcile(None)
        } else {
            c.reconcile(Some(&batch))
        };
    }
}

/// Starts the workload controllers and the scheduler over `store`.
pub fn spawn(store: &Arc<Store>) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(run(
            store.clone(),
            deployment::DeploymentController::new(store.clone()),
        )),
        tokio::spawn(run(
            store.clone(),
            replicaset::ReplicaSetController::new(store.clone()),
        )),
        tokio::spawn(run(store.clone(), scheduler::Scheduler::new(store.clone()))),
        tokio::spawn(run(store.clone(), gc::GarbageCollector::new(store.clone()))),
    ]
}
