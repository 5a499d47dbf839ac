//! The node controller: keeps the WireGuard device, its peers, the routes
//! and the strict-mode set equal to the mesh feed's nodes and the runtime
//! encryption settings, and the Node's key annotation equal to the device.
//!
//! What it is for: the encryption on/off state machine and what follows
//! from it.
//! - Encryption turned on (the settings say so and there is no device):
//!   the device is started, its public key published on the Node.
//! - Turned off: routes leave the device in the same pass, then the device
//!   is removed and the key annotation withdrawn, so other nodes drop their
//!   peer for this node and route to it natively. The key file stays, so
//!   turning encryption on again publishes the same key.
//! - A rotated key ([`WireguardDevice::key_rotated`]) is published so the
//!   other nodes' peers follow.
//! - Strict mode follows `encryption.strictMode` on every pass.
//!
//! The key annotation is written in one place: the controller's
//! [`AnnotationWriter`] (retried with backoff, the latest value wins). The
//! device, its start, the Node's nodes and the kernel's routes are behind
//! narrow traits ([`WireguardDevice`], [`DeviceStarter`], [`NodeSource`],
//! [`NodeRoutes`]) so the state machine is unit-tested with fakes under
//! paused time; [`kernel`] holds the implementations the agent runs with.
//! What the controller does is published on watches (the device, the
//! routing status) that the local API reads; it holds nothing of the API.
//!
//! A pass runs on every feed change, every settings change, every key
//! rotation and every 10 s (repairs what someone else removed), in a
//! `node_sync{node=…}` span.
//!
//! What it is not for: the pure step from nodes to routes, peers and the
//! strict-mode set ([`crate::node_sync`]), the device itself
//! ([`crate::encryption`]).

pub mod annotations;
pub mod kernel;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_api::{NodeRecord, WireGuardKey};
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::config::EncryptionSettings;
use crate::encryption::PeerOptions;
use crate::node_controller::annotations::{AnnotationState, AnnotationWriter, Outcome, Wanted};
use crate::node_sync::RoutingStatus;

/// How often a pass runs without any change.
pub const PERIOD: Duration = Duration::from_secs(10);

/// The running WireGuard device, as far as the controller deals with it.
pub trait WireguardDevice: Send + Sync + 'static {
    /// The device's interface name.
    fn ifname(&self) -> &str;
    /// This node's public key.
    fn public_key(&self) -> WireGuardKey;
    /// Records that the current key is on the Node annotation.
    fn set_published(&self);
    /// Completes after the next key rotation (or at once if one happened
    /// since the last call).
    fn key_rotated(&self) -> impl Future<Output = ()> + Send;
    /// Stops the device (blocking).
    fn shutdown(&self);
    /// Whether the device still runs (a device in another process may die
    /// on its own; the controller then starts it again).
    fn alive(&self) -> bool {
        true
    }
}

/// Starts the device when encryption is turned on.
pub trait DeviceStarter: Send + Sync + 'static {
    /// The device it starts.
    type Device: WireguardDevice;
    /// Starts the device (blocking: run off the async threads).
    fn start(&self) -> crate::Result<Self::Device>;
}

/// The nodes of every cluster (the mesh feed).
pub trait NodeSource: Send + Sync + 'static {
    /// Every node record, sorted by cluster and name.
    fn nodes(&self) -> Vec<NodeRecord>;
    /// Whether the source has delivered a complete snapshot.
    fn synced(&self) -> bool;
    /// A receiver that sees a new value whenever the nodes may have
    /// changed.
    fn subscribe(&self) -> watch::Receiver<u64>;
    /// Configured remote clusters' declared IPv4 pod CIDRs (strict mode
    /// covers them whether or not their nodes are known).
    fn remote_pod_cidrs(&self) -> Vec<ipnet::Ipv4Net> {
        Vec::new()
    }
}

/// Where the nodes end up: routes, the device's peers, the strict-mode
/// set.
pub trait NodeRoutes<D>: Send + 'static {
    /// Called once before the first pass (enables forwarding).
    fn prepare(&mut self) {}
    /// Makes routes, peers and the strict-mode set follow `nodes` (and
    /// `remote_cidrs`), with `device` when encryption is on; `strict`
    /// drops what would leave outside it, also while there is no device;
    /// records the result in `status` (blocking: run off the async
    /// threads).
    #[allow(clippy::too_many_arguments)]
    fn sync(
        &mut self,
        nodes: &[NodeRecord],
        remote_cidrs: &[ipnet::Ipv4Net],
        device: Option<&D>,
        opts: &PeerOptions,
        strict: bool,
        status: &mut RoutingStatus,
    );
}

/// The controller's parts; see [`NodeController::new`].
pub struct NodeController<S: DeviceStarter, R> {
    node: String,
    port: u16,
    starter: Arc<S>,
    routes: Arc<Mutex<R>>,
    key: Option<AnnotationWriter>,
    encryption: watch::Sender<Option<Arc<S::Device>>>,
    routing: watch::Sender<RoutingStatus>,
}

impl<S: DeviceStarter, R> std::fmt::Debug for NodeController<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeController")
            .field("node", &self.node)
            .field("port", &self.port)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// What the controller publishes, for the local API.
#[derive(Debug)]
pub struct ControllerOutputs<D> {
    /// The device while encryption is on.
    pub encryption: watch::Receiver<Option<Arc<D>>>,
    /// The routing status of the last pass.
    pub routing: watch::Receiver<RoutingStatus>,
    /// The key annotation (None without Kubernetes access).
    pub key_annotation: Option<watch::Receiver<AnnotationState>>,
}

impl<S, R> NodeController<S, R>
where
    S: DeviceStarter,
    R: NodeRoutes<S::Device>,
{
    /// A controller for node `node` whose devices listen on UDP `port`,
    /// starting devices with `starter`, syncing into `routes`, writing the
    /// key annotation with `key` (None: no Kubernetes access, nothing is
    /// published). `device` is the one started at start-up, if any;
    /// `routing` is the status before the first pass (the node's address as
    /// read at start-up).
    pub fn new(
        node: String,
        port: u16,
        starter: S,
        routes: R,
        key: Option<AnnotationWriter>,
        device: Option<Arc<S::Device>>,
        routing: RoutingStatus,
    ) -> (Self, ControllerOutputs<S::Device>) {
        let (encryption, encryption_rx) = watch::channel(device);
        let (routing, routing_rx) = watch::channel(routing);
        let outputs = ControllerOutputs {
            encryption: encryption_rx,
            routing: routing_rx,
            key_annotation: key.as_ref().map(AnnotationWriter::state),
        };
        let controller = NodeController {
            node,
            port,
            starter: Arc::new(starter),
            routes: Arc::new(Mutex::new(routes)),
            key,
            encryption,
            routing,
        };
        (controller, outputs)
    }

    /// Publishes `device`'s key on the Node.
    fn publish(&self, device: &S::Device) {
        if let Some(key) = &self.key {
            key.set(Wanted::Set(device.public_key().to_string()));
        }
    }

    /// Withdraws the key from the Node (encryption off).
    fn withdraw(&self) {
        if let Some(key) = &self.key {
            key.set(Wanted::Removed);
        }
    }

    /// Runs until the task is dropped (or the source's sender is gone).
    /// Without a `source` (no mesh feed) only the key is kept published:
    /// no routes, and the settings are not followed.
    pub async fn run<F: NodeSource>(
        mut self,
        source: Option<Arc<F>>,
        mut settings: watch::Receiver<EncryptionSettings>,
    ) {
        let mut device = self.encryption.borrow().clone();
        if source.is_some() {
            self.routes.lock().expect("routes lock").prepare();
        }
        if let Some(d) = &device {
            self.publish(d);
        }
        let mut changed = source.as_ref().map(|s| s.subscribe());
        let mut key_state = self.key.as_ref().map(AnnotationWriter::state);
        let mut ever_synced = false;
        let mut watching = source.is_some();
        loop {
            let want = settings.borrow_and_update().clone();
            if let Some(source) = &source {
                let span = tracing::info_span!(
                    "node_sync",
                    node = %self.node,
                    encryption = want.enabled,
                    strict_mode = want.strict_mode,
                );
                self.pass(&**source, &want, &mut device, &mut ever_synced)
                    .instrument(span)
                    .await;
            }
            let tick = tokio::time::sleep(PERIOD);
            tokio::pin!(tick);
            let rotated = loop {
                tokio::select! {
                    r = changed_or_pending(changed.as_mut()) => {
                        if r.is_err() {
                            return;
                        }
                        break false;
                    }
                    () = rotated_or_pending(device.as_deref()) => break true,
                    // Without --config-dir nothing is watched: the sender is gone.
                    r = settings.changed(), if watching => {
                        if r.is_err() {
                            watching = false;
                        }
                        break false;
                    }
                    r = changed_or_pending(key_state.as_mut()) => {
                        if r.is_err() {
                            key_state = None;
                        } else if let (Some(rx), Some(d)) = (&mut key_state, &device) {
                            let s = rx.borrow_and_update().clone();
                            if s.outcome == Outcome::Written
                                && s.wanted == Wanted::Set(d.public_key().to_string())
                            {
                                d.set_published();
                            }
                        }
                    }
                    () = &mut tick => break false,
                }
            };
            if rotated && let Some(d) = &device {
                // A new key: publish it so the other nodes' peers follow.
                self.publish(d);
            }
        }
    }

    /// One pass: start or stop the device as the settings say, then routes,
    /// peers and strict mode as the nodes say.
    async fn pass<F: NodeSource>(
        &mut self,
        source: &F,
        want: &EncryptionSettings,
        device: &mut Option<Arc<S::Device>>,
        ever_synced: &mut bool,
    ) {
        if let Some(d) = device.clone() {
            let alive = tokio::task::spawn_blocking(move || d.alive())
                .await
                .unwrap_or(true);
            if !alive {
                tracing::warn!(
                    "the WireGuard device stopped answering; starting it again (strict mode drops what it would carry meanwhile)"
                );
                *device = None;
                self.encryption.send_replace(None);
            }
        }
        if want.enabled && device.is_none() {
            let starter = self.starter.clone();
            match tokio::task::spawn_blocking(move || starter.start()).await {
                Ok(Ok(d)) => {
                    tracing::info!(interface = d.ifname(), public_key = %d.public_key(), "encryption turned on: WireGuard device up");
                    let d = Arc::new(d);
                    *device = Some(d.clone());
                    self.encryption.send_replace(Some(d.clone()));
                    self.publish(&d);
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "encryption turned on but the WireGuard device cannot start; retrying")
                }
                Err(e) => tracing::warn!(error = %e, "device start task failed"),
            }
        }
        // Turning off: routes leave the device in this pass, then it goes.
        let retiring = if want.enabled { None } else { device.take() };
        let nodes = source.nodes();
        // Before the first snapshot completes, a partial mirror would remove
        // routes a previous agent made for nodes not streamed yet: wait.
        // Afterwards the mirror keeps its state across reconnects.
        *ever_synced |= source.synced();
        if *ever_synced {
            let opts = PeerOptions {
                port: self.port,
                keepalive: want.persistent_keepalive,
                node_encryption: want.node_encryption,
                node_encryption_exclude: want.node_encryption_exclude.clone(),
            };
            // Strict mode needs encryption on; on, it holds with or
            // without a device (a device that failed drops, never leaks).
            let strict = want.enabled && want.strict_mode;
            let remote_cidrs = source.remote_pod_cidrs();
            let (routes, enc) = (self.routes.clone(), device.clone());
            let mut status = self.routing.borrow().clone();
            let synced = tokio::task::spawn_blocking(move || {
                routes.lock().expect("routes lock").sync(
                    &nodes,
                    &remote_cidrs,
                    enc.as_deref(),
                    &opts,
                    strict,
                    &mut status,
                );
                status
            })
            .await;
            match synced {
                Ok(status) => {
                    self.routing.send_replace(status);
                }
                Err(e) => tracing::warn!(error = %e, "node sync task failed"),
            }
        }
        if let Some(old) = retiring {
            let _ = tokio::task::spawn_blocking(move || old.shutdown()).await;
            // Status shows encryption off only once the device is gone.
            self.encryption.send_replace(None);
            tracing::info!("encryption turned off: WireGuard device removed, routes native");
            self.withdraw();
        }
    }
}

/// `rx.changed()`, or never without a receiver.
async fn changed_or_pending<T>(
    rx: Option<&mut watch::Receiver<T>>,
) -> Result<(), watch::error::RecvError> {
    match rx {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}

/// The device's next key rotation, or never without a device.
async fn rotated_or_pending<D: WireguardDevice>(device: Option<&D>) {
    match device {
        Some(d) => d.key_rotated().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
