//! What a lab has created, recorded before each object is created, so `down`
//! can remove everything even after `up` was killed half-way.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::plan::LabPlan;

/// A process the lab started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proc {
    /// What it is, for status: `c1/etcd`, `c1-n1/node-agent`, …
    pub role: String,
    /// Its pid.
    pub pid: u32,
    /// The program's file name (checked before killing, so a reused pid is
    /// never killed).
    pub program: String,
    /// Its log file.
    pub log: PathBuf,
    /// How to start it again (`mesh-lab restart`): namespace, program, arguments, environment.
    #[serde(default)]
    pub command: Option<Command>,
}

/// A process's command line, kept so it can be restarted as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The namespace it runs in (none: the host's).
    pub ns: Option<String>,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
}

/// The lab's record on disk (`<state dir>/state.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LabState {
    /// The plan the lab was built from.
    pub plan: Option<LabPlan>,
    /// Processes started, in order.
    pub procs: Vec<Proc>,
    /// Host loopback port forwarding to each cluster's API server (cluster → port).
    pub kube_api_ports: std::collections::BTreeMap<String, u16>,
    /// Set once `up` finished.
    pub ready: bool,
    /// The host outside every cluster (`mesh-lab status -o json` →
    /// `external.ip`), once its echo server runs.
    #[serde(default)]
    pub external: Option<External>,
}

/// The host outside every cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct External {
    /// Its primary address.
    pub ip: std::net::Ipv4Addr,
    /// Its second address (for CIDR exceptions).
    pub second_ip: std::net::Ipv4Addr,
    /// Its network namespace.
    pub netns: String,
    /// The port of its echo server (TCP and UDP; answers with the source
    /// address it saw).
    pub echo_port: u16,
}

impl LabState {
    /// The state file in `dir`.
    pub fn file(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    /// Loads the state, or the empty state when there is none.
    pub fn load(dir: &Path) -> anyhow::Result<LabState> {
        let f = Self::file(dir);
        match std::fs::read(&f) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "{} is not a lab state file ({e}); remove it and run `mesh-lab down`",
                    f.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LabState::default()),
            Err(e) => Err(anyhow::anyhow!("read {}: {e}", f.display())),
        }
    }

    /// Writes the state atomically.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, Self::file(dir))?;
        Ok(())
    }
}
