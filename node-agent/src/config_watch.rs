//! Runtime configuration: re-reads the config directory (the mounted
//! ConfigMap, which the kubelet rewrites in place when the ConfigMap
//! changes) and publishes the [`EncryptionSettings`] it yields, so the node
//! controller converges — WireGuard device started or stopped, peers set or
//! cleared, routes moved into or out of the device, strict mode on or off —
//! without a restart.
//!
//! The directory is parsed with the same parser as at start-up (command-line
//! flags still override it). A directory that no longer parses (a typo, a
//! combination validation refuses) is reported once, with the reason, and
//! the running settings stay: a bad edit never tears down encryption.
//!
//! What it is not for: keys other than `encryption.*`, which need a restart.

use std::ffi::OsString;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{AgentConfig, EncryptionSettings};

/// How often the directory is re-read (the kubelet's own sync period is
/// about a minute; reading a few small files costs nothing).
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(2);

/// One re-read: the settings `args` (the agent's command line, naming
/// `--config-dir`) yield now, or why they cannot be used.
pub fn read(args: &[OsString]) -> Result<EncryptionSettings, String> {
    AgentConfig::from_args(args.iter().cloned())
        .map(|c| c.encryption_settings())
        .map_err(|e| e.to_string().trim().to_string())
}

/// Spawns the watcher: the receiver starts at `initial` and changes when
/// the directory does. Without `--config-dir` in `args` nothing is watched
/// (the receiver keeps `initial`).
pub fn spawn(
    args: Vec<OsString>,
    initial: EncryptionSettings,
    period: Duration,
) -> watch::Receiver<EncryptionSettings> {
    let (tx, rx) = watch::channel(initial);
    if mesh_config::config_dir_arg(&args).is_none() {
        return rx;
    }
    tokio::spawn(async move {
        let mut last_error: Option<String> = None;
        loop {
            tokio::time::sleep(period).await;
            let a = args.clone();
            let Ok(result) = tokio::task::spawn_blocking(move || read(&a)).await else {
                continue;
            };
            match result {
                Ok(s) => {
                    last_error = None;
                    if *tx.borrow() != s {
                        tracing::info!(settings = ?s, "config dir changed: applying encryption settings");
                        if tx.send(s).is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    if last_error.as_ref() != Some(&e) {
                        tracing::warn!(error = %e, running = ?*tx.borrow(),
                            "config dir changed but does not parse; keeping the running settings until it is fixed");
                        last_error = Some(e);
                    }
                }
            }
        }
    });
    rx
}
