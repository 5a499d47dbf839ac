//! The node controller driven through fakes of its seams, under paused
//! time: what reaches the Node's key annotation, the device and the routes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::time::Instant;

use super::annotations::{MAX_BACKOFF, NodeAnnotator, write_latest};
use super::*;
use crate::error::Error;
use crate::feed::node::WG_PUB_KEY_ANNOTATION;

const KEY_1: &str = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";
const KEY_2: &str = "YAnz7TYLs6ZcGu8XDW1pBabvNDY7uBjfQiDJbYy3C1g=";

fn key(k: &str) -> WireGuardKey {
    k.parse().expect("key")
}

/// A device whose key changes when the test rotates it.
#[derive(Debug)]
struct FakeDevice {
    key: Mutex<WireGuardKey>,
    rotated: tokio::sync::Notify,
    published: AtomicBool,
    shut: AtomicBool,
}

impl FakeDevice {
    fn new(k: &str) -> FakeDevice {
        FakeDevice {
            key: Mutex::new(key(k)),
            rotated: tokio::sync::Notify::new(),
            published: AtomicBool::new(false),
            shut: AtomicBool::new(false),
        }
    }

    /// What `Encryption::rotate_key` does, as far as the controller sees.
    fn rotate(&self, k: &str) {
        *self.key.lock().unwrap() = key(k);
        self.published.store(false, Ordering::Relaxed);
        self.rotated.notify_one();
    }

    fn published(&self) -> bool {
        self.published.load(Ordering::Relaxed)
    }
}

impl WireguardDevice for FakeDevice {
    fn ifname(&self) -> &str {
        "fake0"
    }

    fn public_key(&self) -> WireGuardKey {
        *self.key.lock().unwrap()
    }

    fn set_published(&self) {
        self.published.store(true, Ordering::Relaxed);
    }

    fn key_rotated(&self) -> impl Future<Output = ()> + Send {
        self.rotated.notified()
    }

    fn shutdown(&self) {
        self.shut.store(true, Ordering::Relaxed);
    }
}

/// Starts devices with KEY_1 (the key file of the state dir).
#[derive(Debug, Default)]
struct FakeStarter {
    starts: Arc<AtomicUsize>,
}

impl DeviceStarter for FakeStarter {
    type Device = FakeDevice;

    fn start(&self) -> crate::Result<FakeDevice> {
        self.starts.fetch_add(1, Ordering::Relaxed);
        Ok(FakeDevice::new(KEY_1))
    }
}

/// A mesh feed that has synced, with no nodes.
#[derive(Debug)]
struct FakeSource {
    changed: watch::Sender<u64>,
}

impl NodeSource for FakeSource {
    fn nodes(&self) -> Vec<NodeRecord> {
        Vec::new()
    }

    fn synced(&self) -> bool {
        true
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// One sync call: whether a device was given, and strict mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pass {
    device: bool,
    strict: bool,
}

#[derive(Debug, Default)]
struct FakeRoutes {
    passes: Arc<Mutex<Vec<Pass>>>,
}

impl NodeRoutes<FakeDevice> for FakeRoutes {
    fn sync(
        &mut self,
        _nodes: &[NodeRecord],
        _remote_cidrs: &[ipnet::Ipv4Net],
        device: Option<&FakeDevice>,
        _opts: &PeerOptions,
        strict: bool,
        status: &mut RoutingStatus,
    ) {
        status.strict_mode = strict && device.is_some();
        status.passes += 1;
        self.passes.lock().unwrap().push(Pass {
            device: device.is_some(),
            strict,
        });
    }
}

/// One write the fake Node saw.
#[derive(Debug, Clone)]
struct Write {
    at: Instant,
    value: Option<String>,
    ok: bool,
}

/// The Node's annotations, with the writes it saw and failures to come.
#[derive(Debug, Default)]
struct FakeNode {
    annotations: Mutex<BTreeMap<&'static str, String>>,
    writes: Mutex<Vec<Write>>,
    failures: AtomicUsize,
}

impl FakeNode {
    fn get(&self, annotation: &str) -> Option<String> {
        self.annotations.lock().unwrap().get(annotation).cloned()
    }

    fn writes(&self) -> Vec<Write> {
        self.writes.lock().unwrap().clone()
    }
}

impl NodeAnnotator for FakeNode {
    async fn write(&self, annotation: &'static str, value: Option<&str>) -> crate::Result<()> {
        let fail = self
            .failures
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        self.writes.lock().unwrap().push(Write {
            at: Instant::now(),
            value: value.map(str::to_string),
            ok: !fail,
        });
        if fail {
            return Err(Error::Kube {
                what: format!("annotate Node n1 with {annotation}"),
                source: Box::new(kube::Error::Service("the API server is away".into())),
            });
        }
        let mut a = self.annotations.lock().unwrap();
        match value {
            Some(v) => a.insert(annotation, v.to_string()),
            None => a.remove(annotation),
        };
        Ok(())
    }
}

fn settings(enabled: bool, strict_mode: bool) -> EncryptionSettings {
    EncryptionSettings {
        enabled,
        strict_mode,
        node_encryption: false,
        persistent_keepalive: 0,
        node_encryption_exclude: Vec::new(),
    }
}

/// A running controller and the handles a test drives it with.
struct Harness {
    node: Arc<FakeNode>,
    settings: watch::Sender<EncryptionSettings>,
    outputs: ControllerOutputs<FakeDevice>,
    passes: Arc<Mutex<Vec<Pass>>>,
    starts: Arc<AtomicUsize>,
    _source: Arc<FakeSource>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Harness {
    fn start(initial: EncryptionSettings, device: Option<Arc<FakeDevice>>) -> Harness {
        let node = Arc::new(FakeNode::default());
        let key = AnnotationWriter::spawn(node.clone(), WG_PUB_KEY_ANNOTATION);
        let (routes, starter) = (FakeRoutes::default(), FakeStarter::default());
        let (passes, starts) = (routes.passes.clone(), starter.starts.clone());
        let (controller, outputs) = NodeController::new(
            "n1".into(),
            51871,
            starter,
            routes,
            Some(key),
            device,
            RoutingStatus::default(),
        );
        let (settings, rx) = watch::channel(initial);
        let source = Arc::new(FakeSource {
            changed: watch::channel(0).0,
        });
        let task = tokio::spawn(controller.run(Some(source.clone()), rx));
        Harness {
            node,
            settings,
            outputs,
            passes,
            starts,
            _source: source,
            task,
        }
    }

    fn device(&self) -> Option<Arc<FakeDevice>> {
        self.outputs.encryption.borrow().clone()
    }

    fn key_on_node(&self) -> Option<String> {
        self.node.get(WG_PUB_KEY_ANNOTATION)
    }

    fn last_pass(&self) -> Option<Pass> {
        self.passes.lock().unwrap().last().copied()
    }
}

/// Lets the controller run until `done` holds (panics after a minute of
/// paused time).
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn encryption_turned_on_starts_the_device_and_publishes_its_key() {
    let h = Harness::start(settings(false, false), None);
    until("a pass without a device", || {
        h.last_pass()
            == Some(Pass {
                device: false,
                strict: false,
            })
    })
    .await;
    assert_eq!(h.key_on_node(), None, "nothing published while off");
    assert!(h.device().is_none());

    h.settings.send_replace(settings(true, false));
    until("the key on the Node", || {
        h.key_on_node().as_deref() == Some(KEY_1)
    })
    .await;
    let dev = h.device().expect("the device is up");
    assert_eq!(h.starts.load(Ordering::Relaxed), 1);
    until("the device says published", || dev.published()).await;
    until("a pass with the device", || {
        h.last_pass()
            == Some(Pass {
                device: true,
                strict: false,
            })
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn encryption_turned_off_removes_the_device_and_withdraws_the_key() {
    let dev = Arc::new(FakeDevice::new(KEY_1));
    let h = Harness::start(settings(true, false), Some(dev.clone()));
    until("the start-up key on the Node", || {
        h.key_on_node().as_deref() == Some(KEY_1)
    })
    .await;
    assert_eq!(
        h.starts.load(Ordering::Relaxed),
        0,
        "the start-up device is kept"
    );

    h.settings.send_replace(settings(false, false));
    until("the key withdrawn", || {
        h.node
            .writes()
            .last()
            .is_some_and(|w| w.value.is_none() && w.ok)
    })
    .await;
    assert_eq!(h.key_on_node(), None);
    assert!(dev.shut.load(Ordering::Relaxed), "the device is shut down");
    assert!(h.device().is_none(), "status shows encryption off");
    // Routes left the device in the pass that turned it off.
    assert_eq!(
        h.last_pass(),
        Some(Pass {
            device: false,
            strict: false
        })
    );
}

#[tokio::test(start_paused = true)]
async fn a_rotated_key_is_published_and_marked_published_once_written() {
    let dev = Arc::new(FakeDevice::new(KEY_1));
    let h = Harness::start(settings(true, false), Some(dev.clone()));
    until("the first key published", || dev.published()).await;

    dev.rotate(KEY_2);
    assert!(!dev.published());
    until("the new key on the Node", || {
        h.key_on_node().as_deref() == Some(KEY_2)
    })
    .await;
    until("the device says published", || dev.published()).await;
    let state = h
        .outputs
        .key_annotation
        .as_ref()
        .expect("kube")
        .borrow()
        .clone();
    assert_eq!(state.wanted, Wanted::Set(KEY_2.into()));
    assert_eq!(state.outcome, Outcome::Written);
}

#[tokio::test(start_paused = true)]
async fn strict_mode_follows_the_settings() {
    let dev = Arc::new(FakeDevice::new(KEY_1));
    let h = Harness::start(settings(true, false), Some(dev));
    until("a pass without strict mode", || {
        h.last_pass()
            == Some(Pass {
                device: true,
                strict: false,
            })
    })
    .await;

    h.settings.send_replace(settings(true, true));
    until("a pass with strict mode", || {
        h.last_pass()
            == Some(Pass {
                device: true,
                strict: true,
            })
    })
    .await;
    until("the status says strict", || {
        h.outputs.routing.borrow().strict_mode
    })
    .await;

    h.settings.send_replace(settings(true, false));
    until("strict mode off again", || {
        h.last_pass()
            == Some(Pass {
                device: true,
                strict: false,
            })
    })
    .await;
    until("the status says not strict", || {
        !h.outputs.routing.borrow().strict_mode
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_pass_runs_every_period_without_changes() {
    let h = Harness::start(settings(false, false), None);
    until("the first pass", || !h.passes.lock().unwrap().is_empty()).await;
    let before = h.passes.lock().unwrap().len();
    tokio::time::sleep(PERIOD * 3 + Duration::from_millis(100)).await;
    let after = h.passes.lock().unwrap().len();
    assert_eq!(after - before, 3, "one pass per period");
}

#[tokio::test(start_paused = true)]
async fn without_a_mesh_feed_only_the_key_is_kept_published() {
    let node = Arc::new(FakeNode::default());
    let key = AnnotationWriter::spawn(node.clone(), WG_PUB_KEY_ANNOTATION);
    let routes = FakeRoutes::default();
    let passes = routes.passes.clone();
    let dev = Arc::new(FakeDevice::new(KEY_1));
    let (controller, outputs) = NodeController::new(
        "n1".into(),
        51871,
        FakeStarter::default(),
        routes,
        Some(key),
        Some(dev.clone()),
        RoutingStatus::default(),
    );
    let (settings_tx, rx) = watch::channel(settings(true, false));
    let task = tokio::spawn(controller.run::<FakeSource>(None, rx));
    until("the key on the Node", || {
        node.get(WG_PUB_KEY_ANNOTATION).as_deref() == Some(KEY_1)
    })
    .await;
    dev.rotate(KEY_2);
    until("the rotated key on the Node", || {
        node.get(WG_PUB_KEY_ANNOTATION).as_deref() == Some(KEY_2)
    })
    .await;
    // Settings are not followed and nothing is routed without the feed.
    settings_tx.send_replace(settings(false, false));
    tokio::time::sleep(PERIOD * 2).await;
    assert!(passes.lock().unwrap().is_empty());
    assert!(!dev.shut.load(Ordering::Relaxed));
    assert!(outputs.encryption.borrow().is_some());
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_failed_write_is_retried_with_backoff_until_it_succeeds() {
    let node = FakeNode::default();
    node.failures.store(3, Ordering::Relaxed);
    let (want, rx) = watch::channel(Wanted::Set(KEY_1.into()));
    let (state, mut state_rx) = watch::channel(AnnotationState::default());
    let start = Instant::now();
    let writer = async { write_latest(&node, WG_PUB_KEY_ANNOTATION, rx, &state).await };
    let check = async {
        state_rx
            .wait_for(|s| s.outcome == Outcome::Written)
            .await
            .expect("writer alive");
        drop(want);
    };
    tokio::join!(writer, check);
    let writes = node.writes();
    let after: Vec<(Duration, bool)> = writes.iter().map(|w| (w.at - start, w.ok)).collect();
    assert_eq!(
        after,
        vec![
            (Duration::ZERO, false),
            (Duration::from_secs(1), false),
            (Duration::from_secs(3), false),
            (Duration::from_secs(7), true),
        ],
        "1 s, 2 s, 4 s between attempts"
    );
    assert!(writes.iter().all(|w| w.value.as_deref() == Some(KEY_1)));
    assert_eq!(node.get(WG_PUB_KEY_ANNOTATION).as_deref(), Some(KEY_1));
}

#[tokio::test(start_paused = true)]
async fn the_backoff_stops_growing_at_its_maximum() {
    let node = FakeNode::default();
    node.failures.store(8, Ordering::Relaxed);
    let (want, rx) = watch::channel(Wanted::Set(KEY_1.into()));
    let (state, mut state_rx) = watch::channel(AnnotationState::default());
    let writer = async { write_latest(&node, WG_PUB_KEY_ANNOTATION, rx, &state).await };
    let check = async {
        state_rx
            .wait_for(|s| s.outcome == Outcome::Written)
            .await
            .expect("writer alive");
        drop(want);
    };
    tokio::join!(writer, check);
    let writes = node.writes();
    let gaps: Vec<u64> = writes
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_secs())
        .collect();
    assert_eq!(gaps, vec![1, 2, 4, 8, 16, 30, 30, 30]);
}

#[tokio::test(start_paused = true)]
async fn a_newer_value_replaces_the_one_being_retried() {
    let node = FakeNode::default();
    // The key write keeps failing; encryption is turned off meanwhile.
    node.failures.store(2, Ordering::Relaxed);
    let (want, rx) = watch::channel(Wanted::Set(KEY_1.into()));
    let (state, mut state_rx) = watch::channel(AnnotationState::default());
    let writer = async { write_latest(&node, WG_PUB_KEY_ANNOTATION, rx, &state).await };
    let check = async {
        state_rx
            .wait_for(|s| matches!(s.outcome, Outcome::Failed(_)))
            .await
            .expect("writer alive");
        tokio::time::sleep(Duration::from_millis(500)).await;
        want.send_replace(Wanted::Removed);
        state_rx
            .wait_for(|s| s.wanted == Wanted::Removed && s.outcome == Outcome::Written)
            .await
            .expect("writer alive");
        // Long after every backoff: the old value is not written again.
        tokio::time::sleep(MAX_BACKOFF * 3).await;
        drop(want);
    };
    tokio::join!(writer, check);
    let writes = node.writes();
    assert_eq!(
        writes
            .iter()
            .map(|w| (w.value.clone(), w.ok))
            .collect::<Vec<_>>(),
        vec![
            (Some(KEY_1.to_string()), false),
            (None, false),
            (None, true),
        ],
        "the new value at once, retried; the old one never again"
    );
    assert_eq!(
        writes[1].at - writes[0].at,
        Duration::from_millis(500),
        "not after the old value's backoff"
    );
    assert_eq!(node.get(WG_PUB_KEY_ANNOTATION), None);
}
