//! Running code inside another network namespace (tests, the lab, tools
//! that manage devices for several namespaces from one process).

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::sys;

/// Path of a named namespace made by `ip netns add`.
pub fn named(name: &str) -> PathBuf {
    PathBuf::from("/var/run/netns").join(name)
}

/// Runs `f` on a new thread that first enters the network namespace at
/// `path`. Sockets and TUN interfaces `f` creates live in that namespace;
/// threads `f` spawns inherit it.
pub fn spawn_in<T, F>(path: &Path, f: F) -> Result<JoinHandle<Result<T>>>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let p = path.to_path_buf();
    std::thread::Builder::new()
        .name("wg-netns".into())
        .spawn(move || {
            sys::setns_net(&p).map_err(|source| Error::Netns {
                path: p.clone(),
                source,
            })?;
            f()
        })
        .map_err(|source| Error::Thread {
            name: "wg-netns".into(),
            source,
        })
}

/// Runs `f` inside the namespace at `path` and waits for its result.
pub fn run_in<T, F>(path: &Path, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    spawn_in(path, f)?
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
