//! The Kubernetes watch both feeds share: a kube-rs reflector whose store
//! the caller reads and whose every event wakes a [`Notify`], so a feed
//! recomputes what it derives from the stores (the mesh-apiserver's
//! Kubernetes feed, the node-agent's Services and policy feeds).

use std::sync::Arc;

use futures::StreamExt;
use kube::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use tokio::sync::Notify;

/// A reflector's store and its watch task (aborted when dropped, so the
/// watches end with whoever holds it).
#[derive(Debug)]
pub struct Reflected<K: kube::Resource<DynamicType = ()> + 'static>(
    /// The store, kept current by the watch.
    pub reflector::Store<K>,
    tokio::task::JoinHandle<()>,
);

impl<K: kube::Resource<DynamicType = ()> + 'static> Drop for Reflected<K> {
    fn drop(&mut self) {
        self.1.abort();
    }
}

/// Watches `api` into a store, waking `notify` on every event (and on
/// errors, which are logged with the resource kind; the watch retries with
/// backoff). Shared by the mesh-apiserver's and the node-agent's feeds.
pub fn reflect<K>(api: Api<K>, notify: Arc<Notify>) -> Reflected<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            if let Err(e) = ev {
                tracing::warn!(error = %e, kind = %K::kind(&()), "Kubernetes watch");
            }
            notify.notify_one();
        }
    });
    Reflected(reader, task)
}
