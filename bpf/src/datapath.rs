//! Loading the programs, pinning maps and links, attaching to pod interfaces
//! and cgroups, idempotently and restart-safely.
//!
//! Layout under the pin root (default [`DEFAULT_PIN_ROOT`]):
//! - `<root>/<map name>`: every map, pinned by name. A later load reuses
//!   them as they are: nothing is flushed, so a restarted agent keeps
//!   serving the state it left and reconciles it in place.
//! - `<root>/links/tc-<ifindex>-<ifname>-{ingress,egress}`: TCX links of
//!   the pod interfaces (`-netdev-{in,out}` for the node's interface); `<root>/links/cgroup-<inode>-<hook>`: cgroup links.
//!   Pinned links stay attached when the loading process exits. On a
//!   re-attach the TCX link's program is swapped atomically
//!   (`bpf_link_update`); a cgroup link is replaced by a new one pinned over
//!   the old pin (for an instant both run; the second sees an already
//!   translated address and does nothing). Detaching removes the pin; the
//!   kernel releases the link asynchronously, so it may run for a moment.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aya::programs::links::{CgroupAttachMode, FdLink, LinkOrder, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachOptions};
use aya::programs::{CgroupSockAddr, SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use tracing::{debug, info};

use crate::error::{Error, Result};
use crate::maps::{
    ALL_MAPS, BackendMap, ConntrackMap, EncryptMap, FlowReader, IpcacheMap, MasqueradeMap,
    MetricsReader, PolicyMap, ServiceMap, check_pinned_layouts, pin_path,
};

/// The default pin root (DESIGN.md); configurable because several agents
/// share one host in the lab.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/meshwork";

static TC_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tc_pod.o"));
static SOCK_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sock_lb.o"));

const TC_PROGRAMS: [(&str, TcAttachType, &str); 2] = [
    ("from_pod", TcAttachType::Ingress, "ingress"),
    ("to_pod", TcAttachType::Egress, "egress"),
];
const NODE_PROGRAMS: [(&str, TcAttachType, &str); 2] = [
    ("from_netdev", TcAttachType::Ingress, "netdev-in"),
    ("to_netdev", TcAttachType::Egress, "netdev-out"),
];
const SOCK_PROGRAMS: [(&str, &str); 4] = [
    ("sock_connect4", "connect4"),
    ("sock_sendmsg4", "sendmsg4"),
    ("sock_recvmsg4", "recvmsg4"),
    ("sock_getpeername4", "getpeername4"),
];

/// The loaded datapath: programs in the kernel, maps pinned under the pin
/// root. Dropping it leaves pinned maps and pinned links in place (traffic
/// keeps flowing); use the `detach_*` methods to remove attachments.
#[derive(Debug)]
pub struct Datapath {
    pin_root: PathBuf,
    tc: Ebpf,
    sock: Ebpf,
}

impl Datapath {
    /// Loads the programs, creating the maps under `pin_root` or reusing the
    /// ones pinned there (checked against this build's layout first; never
    /// flushed). Attaches nothing.
    pub fn load(pin_root: &Path) -> Result<Datapath> {
        std::fs::create_dir_all(pin_root).map_err(|e| Error::io("create pin root", pin_root, e))?;
        check_bpffs(pin_root)?;
        let links = pin_root.join("links");
        std::fs::create_dir_all(&links).map_err(|e| Error::io("create links dir", &links, e))?;
        check_pinned_layouts(pin_root)?;
        let reused = ALL_MAPS
            .iter()
            .filter(|s| pin_path(pin_root, s).exists())
            .count();

        let mut tc = EbpfLoader::new()
            .default_map_pin_directory(pin_root)
            .load(TC_OBJ)
            .map_err(|source| Error::Load {
                object: "tc_pod.o",
                source: Box::new(source),
            })?;
        for (name, _, _) in TC_PROGRAMS.iter().chain(NODE_PROGRAMS.iter()) {
            let prog: &mut SchedClassifier = program(&mut tc, name)?;
            prog.load().map_err(|source| Error::Program {
                program: name,
                source: Box::new(source),
            })?;
        }
        let mut sock = EbpfLoader::new()
            .default_map_pin_directory(pin_root)
            .load(SOCK_OBJ)
            .map_err(|source| Error::Load {
                object: "sock_lb.o",
                source: Box::new(source),
            })?;
        for (name, _) in SOCK_PROGRAMS {
            let prog: &mut CgroupSockAddr = program(&mut sock, name)?;
            prog.load().map_err(|source| Error::Program {
                program: name,
                source: Box::new(source),
            })?;
        }
        // Maps created just now are checked too (catches a C/Rust drift).
        check_pinned_layouts(pin_root)?;
        info!(pin_root = %pin_root.display(), reused_maps = reused, "datapath loaded");
        Ok(Datapath {
            pin_root: pin_root.to_path_buf(),
            tc,
            sock,
        })
    }

    /// The pin root.
    pub fn pin_root(&self) -> &Path {
        &self.pin_root
    }

    /// Attaches the per-packet programs to a pod's host-side veth `ifname`
    /// in the calling thread's network namespace (see
    /// [`crate::netns::in_netns`]): `from_pod` on TCX ingress, `to_pod` on TCX
    /// egress, links pinned. Idempotent; on a re-attach the pinned links get
    /// the newly loaded programs atomically.
    pub fn attach_interface(&mut self, ifname: &str) -> Result<()> {
        self.attach_tc(ifname, &TC_PROGRAMS)
    }

    /// Attaches NodePort handling (`from_netdev` on TCX ingress, `to_netdev`
    /// on TCX egress) to the node's own interface `ifname` in the calling
    /// thread's network namespace: traffic from other nodes to a NodePort frontend (the node address and
    /// port, upserted like any service) is translated to a backend on this
    /// node and its replies leave from the node address. Idempotent; pinned.
    /// Backends on other nodes are not reachable this way (no SNAT yet).
    /// The same programs masquerade pod traffic leaving through it (when
    /// [`MasqueradeMap::set_config`] turned it on).
    pub fn attach_node_interface(&mut self, ifname: &str) -> Result<()> {
        self.attach_tc(ifname, &NODE_PROGRAMS)
    }

    /// Detaches NodePort handling from `ifname`. No-op when not attached.
    pub fn detach_node_interface(&mut self, ifname: &str) -> Result<()> {
        for (_, _, suffix) in NODE_PROGRAMS {
            for path in self.tc_pins(ifname, suffix)? {
                std::fs::remove_file(&path).map_err(|e| Error::io("remove link pin", &path, e))?;
            }
        }
        Ok(())
    }

    fn attach_tc(
        &mut self,
        ifname: &str,
        programs: &[(&'static str, TcAttachType, &'static str)],
    ) -> Result<()> {
        let ifindex = crate::netns::ifindex(ifname)?;
        for &(name, attach_type, suffix) in programs {
            let path = self.tc_link_path(ifindex, ifname, suffix);
            self.remove_stale_tc_pins(ifindex, ifname, suffix)?;
            let prog: &mut SchedClassifier = program(&mut self.tc, name)?;
            let target = || format!("{ifname} ({suffix})");
            if path.exists() {
                let updated =
                    PinnedLink::from_pin(&path)
                        .map_err(|e| Error::Link {
                            path: path.clone(),
                            source: Box::new(e),
                        })
                        .and_then(|pinned| {
                            let link = SchedClassifierLink::try_from(FdLink::from(pinned))
                                .map_err(|e| Error::Link {
                                    path: path.clone(),
                                    source: Box::new(e),
                                })?;
                            let id = prog.attach_to_link(link).map_err(|source| Error::Attach {
                                program: name,
                                target: target(),
                                source: Box::new(source),
                            })?;
                            // Keep the link alive through its pin only.
                            let _ = prog.take_link(id);
                            Ok(())
                        });
                match updated {
                    Ok(()) => {
                        debug!(ifname, suffix, "tc link updated in place");
                        continue;
                    }
                    Err(e) => {
                        // A defunct link (interface gone and recreated): replace it.
                        debug!(ifname, suffix, error = %e, "pinned tc link unusable, re-creating");
                        std::fs::remove_file(&path)
                            .map_err(|e| Error::io("remove stale link pin", &path, e))?;
                    }
                }
            }
            let id = prog
                .attach_with_options(
                    ifname,
                    attach_type,
                    TcAttachOptions::TcxOrder(LinkOrder::default()),
                )
                .map_err(|source| Error::Attach {
                    program: name,
                    target: target(),
                    source: Box::new(source),
                })?;
            let link = prog.take_link(id).map_err(|source| Error::Attach {
                program: name,
                target: target(),
                source: Box::new(source),
            })?;
            let fd = FdLink::try_from(link).map_err(|e| Error::Link {
                path: path.clone(),
                source: Box::new(e),
            })?;
            fd.pin(&path).map_err(|e| Error::Link {
                path: path.clone(),
                source: Box::new(e),
            })?;
            debug!(ifname, suffix, "tc link attached and pinned");
        }
        Ok(())
    }

    /// Detaches the per-packet programs from `ifname` (removes the pinned
    /// links; also works after the interface is gone). No-op when not attached.
    pub fn detach_interface(&mut self, ifname: &str) -> Result<()> {
        for (_, _, suffix) in TC_PROGRAMS {
            for path in self.tc_pins(ifname, suffix)? {
                std::fs::remove_file(&path).map_err(|e| Error::io("remove link pin", &path, e))?;
            }
        }
        Ok(())
    }

    /// Removes pinned TC links whose interface is gone (or now has another
    /// ifindex) in the calling thread's network namespace, e.g. pods deleted
    /// while the agent was down. Returns the interface names pruned.
    pub fn prune_stale_interfaces(&mut self) -> Result<Vec<String>> {
        let dir = self.pin_root.join("links");
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io("list link pins", &dir, e))?;
        let mut pruned = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list link pins", &dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix("tc-") else {
                continue;
            };
            let Some((ifindex, tail)) = rest.split_once('-') else {
                continue;
            };
            let Some(ifname) = tail
                .strip_suffix("-ingress")
                .or_else(|| tail.strip_suffix("-egress"))
                .or_else(|| tail.strip_suffix("-netdev-in"))
                .or_else(|| tail.strip_suffix("-netdev-out"))
            else {
                continue;
            };
            let current = crate::netns::ifindex(ifname).ok().map(|i| i.to_string());
            if current.as_deref() != Some(ifindex) {
                let path = entry.path();
                std::fs::remove_file(&path)
                    .map_err(|e| Error::io("remove stale link pin", &path, e))?;
                if !pruned.iter().any(|p| p == ifname) {
                    pruned.push(ifname.to_string());
                }
            }
        }
        Ok(pruned)
    }

    /// Attaches the socket LB programs to the cgroup v2 directory `cgroup`
    /// (every process below it gets ClusterIP translation at connect time).
    /// Idempotent; links pinned.
    pub fn attach_cgroup(&mut self, cgroup: &Path) -> Result<()> {
        let file = File::open(cgroup).map_err(|e| Error::io("open cgroup", cgroup, e))?;
        let ino = file
            .metadata()
            .map_err(|e| Error::io("stat cgroup", cgroup, e))?
            .ino();
        for (name, hook) in SOCK_PROGRAMS {
            let path = self
                .pin_root
                .join("links")
                .join(format!("cgroup-{ino}-{hook}"));
            let tmp = self
                .pin_root
                .join("links")
                .join(format!("cgroup-{ino}-{hook}-new")); // bpffs refuses dots in names
            let _ = std::fs::remove_file(&tmp);
            let prog: &mut CgroupSockAddr = program(&mut self.sock, name)?;
            let target = || cgroup.display().to_string();
            let id = prog
                .attach(&file, CgroupAttachMode::default())
                .map_err(|source| Error::Attach {
                    program: name,
                    target: target(),
                    source: Box::new(source),
                })?;
            let link = prog.take_link(id).map_err(|source| Error::Attach {
                program: name,
                target: target(),
                source: Box::new(source),
            })?;
            let fd = FdLink::try_from(link).map_err(|e| Error::Link {
                path: path.clone(),
                source: Box::new(e),
            })?;
            fd.pin(&tmp).map_err(|e| Error::Link {
                path: tmp.clone(),
                source: Box::new(e),
            })?;
            // Replacing the pin releases the previous link (if any), which
            // detaches it; the new one is already in place.
            std::fs::rename(&tmp, &path).map_err(|e| Error::io("replace link pin", &path, e))?;
            debug!(cgroup = %cgroup.display(), hook, "cgroup link attached and pinned");
        }
        Ok(())
    }

    /// Detaches the socket LB programs from `cgroup`. No-op when not attached.
    pub fn detach_cgroup(&mut self, cgroup: &Path) -> Result<()> {
        let ino = std::fs::metadata(cgroup)
            .map_err(|e| Error::io("stat cgroup", cgroup, e))?
            .ino();
        for (_, hook) in SOCK_PROGRAMS {
            let path = self
                .pin_root
                .join("links")
                .join(format!("cgroup-{ino}-{hook}"));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove link pin", &path, e)),
            }
        }
        Ok(())
    }

    /// Opens the service frontend maps.
    pub fn services(&self) -> Result<ServiceMap> {
        ServiceMap::open(&self.pin_root)
    }
    /// Opens the services-by-address view (id allocation included).
    pub fn load_balancer(&self) -> Result<crate::maps::LoadBalancer> {
        crate::maps::LoadBalancer::open(&self.pin_root)
    }
    /// Opens the backend map.
    pub fn backends(&self) -> Result<BackendMap> {
        BackendMap::open(&self.pin_root)
    }
    /// Opens the ipcache.
    pub fn ipcache(&self) -> Result<IpcacheMap> {
        IpcacheMap::open(&self.pin_root)
    }
    /// Opens the policy maps.
    pub fn policy(&self) -> Result<PolicyMap> {
        PolicyMap::open(&self.pin_root)
    }
    /// Opens the conntrack table.
    pub fn conntrack(&self) -> Result<ConntrackMap> {
        ConntrackMap::open(&self.pin_root)
    }
    /// Opens the flow event reader.
    pub fn flows(&self) -> Result<FlowReader> {
        FlowReader::open(&self.pin_root)
    }
    /// Opens the strict-mode encryption maps.
    pub fn encryption(&self) -> Result<EncryptMap> {
        EncryptMap::open(&self.pin_root)
    }
    /// Opens the masquerade maps.
    pub fn masquerade(&self) -> Result<MasqueradeMap> {
        MasqueradeMap::open(&self.pin_root)
    }
    /// Opens the counters.
    pub fn metrics(&self) -> Result<MetricsReader> {
        MetricsReader::open(&self.pin_root)
    }

    /// The `from_pod` / `to_pod` program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn tc_program(&mut self, name: &'static str) -> Result<&mut SchedClassifier> {
        program(&mut self.tc, name)
    }

    fn tc_link_path(&self, ifindex: u32, ifname: &str, suffix: &str) -> PathBuf {
        self.pin_root
            .join("links")
            .join(format!("tc-{ifindex}-{ifname}-{suffix}"))
    }

    fn tc_pins(&self, ifname: &str, suffix: &str) -> Result<Vec<PathBuf>> {
        let dir = self.pin_root.join("links");
        let tail = format!("-{ifname}-{suffix}");
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io("list link pins", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list link pins", &dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix("tc-").and_then(|r| r.strip_suffix(&tail))
                && rest.chars().all(|c| c.is_ascii_digit())
            {
                out.push(entry.path());
            }
        }
        Ok(out)
    }

    fn remove_stale_tc_pins(&self, ifindex: u32, ifname: &str, suffix: &str) -> Result<()> {
        let current = self.tc_link_path(ifindex, ifname, suffix);
        for path in self.tc_pins(ifname, suffix)? {
            if path != current {
                std::fs::remove_file(&path)
                    .map_err(|e| Error::io("remove stale link pin", &path, e))?;
            }
        }
        Ok(())
    }
}

fn program<'a, T>(obj: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = obj.program_mut(name).ok_or(Error::Missing {
        kind: "program",
        name,
    })?;
    prog.try_into().map_err(|source| Error::Program {
        program: name,
        source: Box::new(source),
    })
}

/// Fails unless `path` lives on a bpffs mount (maps pinned elsewhere would
/// not survive, and pinning would fail with a less helpful error).
fn check_bpffs(path: &Path) -> Result<()> {
    let canonical = path
        .canonicalize()
        .map_err(|e| Error::io("resolve pin root", path, e))?;
    let mounts = std::fs::read_to_string("/proc/self/mounts")
        .map_err(|e| Error::io("read", "/proc/self/mounts", e))?;
    let best = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let _dev = f.next()?;
            let mnt = f.next()?;
            let fstype = f.next()?;
            canonical
                .starts_with(mnt)
                .then(|| (mnt.len(), fstype == "bpf"))
        })
        .max_by_key(|(len, _)| *len);
    match best {
        Some((_, true)) => Ok(()),
        _ => Err(Error::NotBpffs {
            path: path.to_path_buf(),
        }),
    }
}
