//! Where the lab finds the binaries it runs: next to `mesh-lab` itself (the
//! same cargo target directory), plus etcd from the system.

use std::path::{Path, PathBuf};

/// The programs a lab runs.
#[derive(Debug, Clone)]
pub struct Bins {
    dir: PathBuf,
}

impl Bins {
    /// Binaries beside the running `mesh-lab`.
    pub fn beside_self() -> anyhow::Result<Bins> {
        let exe = std::env::current_exe()?;
        Ok(Bins {
            dir: exe.parent().map(Path::to_path_buf).unwrap_or_default(),
        })
    }

    /// The path of one of ours, checked to exist.
    pub fn ours(&self, name: &str) -> anyhow::Result<PathBuf> {
        let p = self.dir.join(name);
        anyhow::ensure!(
            p.exists(),
            "{} is missing: build it first (`cargo build --workspace --bins`, which `make demo` does)",
            p.display()
        );
        Ok(p)
    }

    /// etcd from the system (Debian's etcd-server).
    pub fn etcd(&self) -> anyhow::Result<PathBuf> {
        let p = PathBuf::from("/usr/bin/etcd");
        anyhow::ensure!(
            p.exists(),
            "/usr/bin/etcd is missing: run `make setup` (installs etcd-server)"
        );
        Ok(p)
    }
}
