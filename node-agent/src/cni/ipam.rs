//! IPAM from the node's pod CIDR, as files under the state dir.
//!
//! `<state-dir>/ipam/<network>_<prefix>/<ip>` exists for every allocated
//! address and holds `<container id>\n<ifname>\n`. Files are created with
//! `O_EXCL`, so an address can never be handed out twice; a `flock` on the
//! directory's `lock` file serialises concurrent ADDs so that the owner scan
//! and the round-robin cursor (`last_reserved`) stay consistent.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use crate::error::{Error, Result};

const LOCK: &str = "lock";
const CURSOR: &str = "last_reserved";

/// The allocator of one pod CIDR.
#[derive(Debug, Clone)]
pub struct Ipam {
    dir: PathBuf,
    cidr: Ipv4Net,
}

/// Who holds an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Container id.
    pub container_id: String,
    /// Interface name.
    pub ifname: String,
}

impl Ipam {
    /// The allocator of `cidr` with its state under `state_dir`.
    pub fn open(state_dir: &Path, cidr: Ipv4Net) -> Result<Self> {
        let dir = state_dir
            .join("ipam")
            .join(format!("{}_{}", cidr.network(), cidr.prefix_len()));
        std::fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
        Ok(Ipam { dir, cidr })
    }

    /// The state directory of this CIDR.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> Result<File> {
        let path = self.dir.join(LOCK);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Error::io("open", &path))?;
        f.lock().map_err(Error::io("lock", &path))?;
        Ok(f)
    }

    /// Allocates an address for (container, ifname); returns the one it
    /// already holds if any (a retried ADD gets the same address).
    pub fn allocate(&self, container_id: &str, ifname: &str) -> Result<Ipv4Addr> {
        let _lock = self.lock()?;
        let owned = self.allocations()?;
        let me = Owner {
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
        };
        if let Some((ip, _)) = owned.iter().find(|(_, o)| *o == me) {
            return Ok(*ip);
        }
        let hosts: Vec<Ipv4Addr> = self.cidr.hosts().collect();
        let cursor_path = self.dir.join(CURSOR);
        let start = std::fs::read_to_string(&cursor_path)
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok())
            .and_then(|last| hosts.iter().position(|h| *h == last))
            .map(|i| i + 1)
            .unwrap_or(0);
        for i in 0..hosts.len() {
            let ip = hosts[(start + i) % hosts.len()];
            let path = self.dir.join(ip.to_string());
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(format!("{container_id}\n{ifname}\n").as_bytes())
                        .and_then(|()| f.sync_all())
                        .map_err(|e| {
                            let _ = std::fs::remove_file(&path);
                            Error::io("write", &path)(e)
                        })?;
                    std::fs::write(&cursor_path, ip.to_string())
                        .map_err(Error::io("write", &cursor_path))?;
                    return Ok(ip);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io("create", &path)(e)),
            }
        }
        Err(Error::PodCidrExhausted {
            cidr: self.cidr.into(),
            allocated: owned.len(),
            dir: self.dir.clone(),
        })
    }

    /// Releases what (container, ifname) holds; returns the addresses freed
    /// (none is fine: DEL is idempotent).
    pub fn release(&self, container_id: &str, ifname: &str) -> Result<Vec<Ipv4Addr>> {
        let _lock = self.lock()?;
        let mut freed = Vec::new();
        for (ip, owner) in self.allocations()? {
            if owner.container_id == container_id && owner.ifname == ifname {
                let path = self.dir.join(ip.to_string());
                std::fs::remove_file(&path).map_err(Error::io("remove", &path))?;
                freed.push(ip);
            }
        }
        Ok(freed)
    }

    /// Releases what (container, ifname) holds in every CIDR under
    /// `state_dir` (DEL does not need to know the CIDR).
    pub fn release_everywhere(
        state_dir: &Path,
        container_id: &str,
        ifname: &str,
    ) -> Result<Vec<Ipv4Addr>> {
        let root = state_dir.join("ipam");
        let entries = match std::fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("read", &root)(e)),
        };
        let mut freed = Vec::new();
        for entry in entries {
            let entry = entry.map_err(Error::io("read", &root))?;
            let name = entry.file_name().to_string_lossy().replace('_', "/");
            let Ok(cidr) = name.parse::<Ipv4Net>() else {
                continue;
            };
            freed.extend(Ipam::open(state_dir, cidr)?.release(container_id, ifname)?);
        }
        Ok(freed)
    }

    /// Who holds what, read from the files.
    pub fn allocations(&self) -> Result<Vec<(Ipv4Addr, Owner)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(Error::io("read", &self.dir))? {
            let entry = entry.map_err(Error::io("read", &self.dir))?;
            let Ok(ip) = entry.file_name().to_string_lossy().parse::<Ipv4Addr>() else {
                continue;
            };
            let text = match std::fs::read_to_string(entry.path()) {
                Ok(t) => t,
                // Released meanwhile by a DEL that does not hold our lock (another CIDR dir scan).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("read", entry.path())(e)),
            };
            let mut lines = text.lines();
            let owner = Owner {
                container_id: lines.next().unwrap_or_default().to_string(),
                ifname: lines.next().unwrap_or_default().to_string(),
            };
            out.push((ip, owner));
        }
        out.sort_by_key(|(ip, _)| *ip);
        Ok(out)
    }
}
