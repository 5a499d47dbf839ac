//! The agent's annotations on its own Node (the WireGuard key, where the
//! local API is), written with one retry rule.
//!
//! What it is for: an [`AnnotationWriter`] owns one annotation. Whoever
//! decides its value (the node controller for the key, the binary for the
//! API address) sets the wanted value; the writer's task
//! ([`write_latest`]) writes it, retrying a failed write with backoff (1 s
//! doubling up to 30 s). A newer wanted value replaces the one being
//! retried at once, so an old retry never undoes a newer decision: the
//! latest value wins. What was written, and how the last write went, is a
//! watch ([`AnnotationState`]) that the local API reads.
//!
//! The Node is behind [`NodeAnnotator`], so the retry rule is unit-tested
//! with a fake; [`KubeNode`] is the Kubernetes implementation (merge
//! patches of one annotation, see [`crate::feed::node`]).
//!
//! What it is not for: deciding a value (the node controller does).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::error::Result;

/// The first wait after a failed write.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The agent's own Node, as far as writing its annotations goes.
pub trait NodeAnnotator: Send + Sync + 'static {
    /// Sets `annotation` to `value`, or removes it (`None`; absent already
    /// is not an error), touching nothing else of the Node.
    fn write(
        &self,
        annotation: &'static str,
        value: Option<&str>,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// The Node `name` through the Kubernetes API.
#[derive(Clone)]
pub struct KubeNode {
    /// The client.
    pub client: kube::Client,
    /// The agent's Node.
    pub name: String,
}

impl std::fmt::Debug for KubeNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeNode")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl NodeAnnotator for KubeNode {
    async fn write(&self, annotation: &'static str, value: Option<&str>) -> Result<()> {
        match value {
            Some(v) => {
                crate::feed::node::publish_annotations(
                    &self.client,
                    &self.name,
                    &[(annotation, v.to_string())],
                )
                .await
            }
            None => {
                crate::feed::node::remove_annotation(&self.client, &self.name, annotation).await
            }
        }
    }
}

/// What the annotation should be.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Wanted {
    /// Nothing decided yet: the annotation is left as it is.
    #[default]
    Untouched,
    /// Set to this value.
    Set(String),
    /// Removed.
    Removed,
}

impl Wanted {
    /// The value to write (`None`: remove); `None` for `Untouched` too,
    /// which is never written.
    fn value(&self) -> Option<&str> {
        match self {
            Wanted::Set(v) => Some(v),
            Wanted::Untouched | Wanted::Removed => None,
        }
    }
}

/// How writing the wanted value went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not tried yet (or nothing to write).
    Pending,
    /// On the Node.
    Written,
    /// The last attempt failed with this error; retried with backoff.
    Failed(String),
}

/// The wanted value and how writing it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotationState {
    /// What the annotation should be.
    pub wanted: Wanted,
    /// How the last attempt to write it went.
    pub outcome: Outcome,
}

impl Default for AnnotationState {
    fn default() -> Self {
        AnnotationState {
            wanted: Wanted::Untouched,
            outcome: Outcome::Pending,
        }
    }
}

/// Writes the latest value of `wanted` as `annotation` until `wanted`'s
/// sender is gone, reporting each attempt on `state`. A failed write is
/// retried after 1 s, doubling up to 30 s; a new wanted value (even an
/// equal one, sent again) is written at once with the backoff reset.
pub async fn write_latest<A: NodeAnnotator>(
    node: &A,
    annotation: &'static str,
    mut wanted: watch::Receiver<Wanted>,
    state: &watch::Sender<AnnotationState>,
) {
    'values: loop {
        let want = wanted.borrow_and_update().clone();
        state.send_replace(AnnotationState {
            wanted: want.clone(),
            outcome: Outcome::Pending,
        });
        if want != Wanted::Untouched {
            let mut backoff = FIRST_BACKOFF;
            loop {
                match node.write(annotation, want.value()).await {
                    Ok(()) => {
                        tracing::info!(annotation, value = ?want.value(), "Node annotation written");
                        state.send_replace(AnnotationState {
                            wanted: want.clone(),
                            outcome: Outcome::Written,
                        });
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(annotation, error = %e, retry_in = ?backoff, "cannot write the Node annotation");
                        state.send_replace(AnnotationState {
                            wanted: want.clone(),
                            outcome: Outcome::Failed(e.to_string()),
                        });
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    r = wanted.changed() => {
                        if r.is_err() {
                            return;
                        }
                        continue 'values;
                    }
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        if wanted.changed().await.is_err() {
            return;
        }
    }
}

/// One annotation of the Node, written by its own task (aborted on drop).
#[derive(Debug)]
pub struct AnnotationWriter {
    wanted: watch::Sender<Wanted>,
    state: watch::Receiver<AnnotationState>,
    task: tokio::task::JoinHandle<()>,
}

impl AnnotationWriter {
    /// Starts the writer of `annotation` on `node`, with nothing wanted yet.
    pub fn spawn<A: NodeAnnotator>(node: Arc<A>, annotation: &'static str) -> AnnotationWriter {
        let (wanted, rx) = watch::channel(Wanted::Untouched);
        let (state_tx, state) = watch::channel(AnnotationState::default());
        let task = tokio::spawn(async move {
            write_latest(&*node, annotation, rx, &state_tx).await;
        });
        AnnotationWriter {
            wanted,
            state,
            task,
        }
    }

    /// Makes `wanted` the value to write (replacing any being retried).
    pub fn set(&self, wanted: Wanted) {
        self.wanted.send_replace(wanted);
    }

    /// What is wanted and how writing it went.
    pub fn state(&self) -> watch::Receiver<AnnotationState> {
        self.state.clone()
    }
}

impl Drop for AnnotationWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}
