//! The kernel filesystems the datapath needs, mounted when they are missing
//! (as Cilium's agent does): bpffs under the pin root, so pinned maps and
//! links outlive the agent, and cgroup v2 at the cgroup root the socket load
//! balancer attaches to.
//!
//! The decision ([`plan_bpffs`], [`plan_cgroup2`]) is pure and unit-tested;
//! [`ensure_bpffs`] and [`ensure_cgroup2`] observe the filesystem, follow the
//! plan and check the result. On a real node the chart's init container mounts
//! both before the agent starts; this is the safety net for a fresh machine.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where bpffs is conventionally mounted; a pin root below it gets bpffs
/// mounted here (so bpftool and other agents find it), any other pin root
/// gets bpffs mounted on itself.
pub const BPFFS_DEFAULT: &str = "/sys/fs/bpf";

/// `statfs` magic of bpffs (linux/magic.h `BPF_FS_MAGIC`).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// `statfs` magic of cgroup v2 (linux/magic.h `CGROUP2_SUPER_MAGIC`).
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
/// Inode of the initial cgroup namespace (linux/proc_ns.h `PROC_CGROUP_INIT_INO`).
const PROC_CGROUP_INIT_INO: u64 = 0xEFFF_FFFB;

/// What is found at a path, as far as the plans care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The filesystem wanted (bpffs for a pin root, cgroup v2 for a cgroup root).
    Wanted,
    /// Another filesystem, and the directory is empty or does not exist yet.
    OtherEmpty,
    /// Another filesystem, and the directory has entries that a mount would hide.
    OtherNotEmpty,
}

/// What to do so that a path is on the filesystem it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Already there: nothing to do.
    Present,
    /// Mount the filesystem at this directory (creating it first).
    Mount(PathBuf),
}

/// What [`ensure_bpffs`] or [`ensure_cgroup2`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// The filesystem was already mounted.
    Present,
    /// It was mounted here by this call.
    Mounted(PathBuf),
}

/// Decides where bpffs must be mounted for `pin_root`. `at_root` is what is
/// found at the pin root (or its nearest existing ancestor); `at_default` what
/// is found at [`BPFFS_DEFAULT`], used when the pin root lies below it.
pub fn plan_bpffs(pin_root: &Path, at_root: Found, at_default: Found) -> Result<Plan> {
    if at_root == Found::Wanted {
        return Ok(Plan::Present);
    }
    let (at, found) = if pin_root.starts_with(BPFFS_DEFAULT) {
        (PathBuf::from(BPFFS_DEFAULT), at_default)
    } else {
        (pin_root.to_path_buf(), at_root)
    };
    match found {
        // The pin root is below a bpffs at the default place, and not on it:
        // only possible when something is mounted over part of it.
        Found::Wanted => Err(Error::NotBpffs {
            path: pin_root.to_path_buf(),
        }),
        Found::OtherEmpty => Ok(Plan::Mount(at)),
        // /sys/fs/bpf is a directory of sysfs and holds nothing of its own;
        // something else mounted there (a tmpfs) is simply covered, as
        // Cilium's agent does.
        Found::OtherNotEmpty if at == Path::new(BPFFS_DEFAULT) => Ok(Plan::Mount(at)),
        Found::OtherNotEmpty => Err(Error::WouldHide {
            fs: "bpffs",
            path: at,
        }),
    }
}

/// Decides whether cgroup v2 must be mounted at `cgroup_root`.
/// `init_cgroupns`: the process runs in the host's (initial) cgroup
/// namespace; a cgroup v2 mounted from a private one would show only that
/// namespace's subtree (a container's own cgroup), where no other pod runs.
pub fn plan_cgroup2(cgroup_root: &Path, found: Found, init_cgroupns: bool) -> Result<Plan> {
    match found {
        Found::Wanted => Ok(Plan::Present),
        Found::OtherNotEmpty => Err(Error::WouldHide {
            fs: "cgroup2",
            path: cgroup_root.to_path_buf(),
        }),
        Found::OtherEmpty if !init_cgroupns => Err(Error::PrivateCgroupNamespace {
            path: cgroup_root.to_path_buf(),
        }),
        Found::OtherEmpty => Ok(Plan::Mount(cgroup_root.to_path_buf())),
    }
}

/// Makes sure `pin_root` lies on a bpffs, mounting one when it does not.
pub fn ensure_bpffs(pin_root: &Path) -> Result<Prepared> {
    let at_root = observe(pin_root, BPF_FS_MAGIC)?;
    let at_default = if pin_root.starts_with(BPFFS_DEFAULT) {
        observe(Path::new(BPFFS_DEFAULT), BPF_FS_MAGIC)?
    } else {
        at_root
    };
    match plan_bpffs(pin_root, at_root, at_default)? {
        Plan::Present => Ok(Prepared::Present),
        Plan::Mount(at) => {
            mount(&at, "bpf", "bpffs", "mount -t bpf bpf")?;
            std::fs::create_dir_all(pin_root)
                .map_err(|e| Error::io("create pin root", pin_root, e))?;
            match observe(pin_root, BPF_FS_MAGIC)? {
                Found::Wanted => Ok(Prepared::Mounted(at)),
                _ => Err(Error::NotBpffs {
                    path: pin_root.to_path_buf(),
                }),
            }
        }
    }
}

/// Makes sure `cgroup_root` is a cgroup v2 directory, mounting cgroup v2
/// there when it is an empty directory (or missing) on another filesystem
/// and this process is in the host's cgroup namespace.
pub fn ensure_cgroup2(cgroup_root: &Path) -> Result<Prepared> {
    let found = observe(cgroup_root, CGROUP2_SUPER_MAGIC)?;
    match plan_cgroup2(cgroup_root, found, in_init_cgroup_namespace()?)? {
        Plan::Present => Ok(Prepared::Present),
        Plan::Mount(at) => {
            mount(&at, "cgroup2", "cgroup2", "mount -t cgroup2 none")?;
            match observe(cgroup_root, CGROUP2_SUPER_MAGIC)? {
                Found::Wanted => Ok(Prepared::Mounted(at)),
                _ => Err(Error::NotCgroup2 {
                    path: cgroup_root.to_path_buf(),
                }),
            }
        }
    }
}

/// Whether this process is in the initial cgroup namespace.
pub fn in_init_cgroup_namespace() -> Result<bool> {
    let ns = Path::new("/proc/self/ns/cgroup");
    let meta = std::fs::metadata(ns).map_err(|e| Error::io("stat", ns, e))?;
    Ok(meta.ino() == PROC_CGROUP_INIT_INO)
}

/// What is at `path`: the wanted filesystem (by `statfs` magic), or another
/// one, judged at the nearest existing ancestor when `path` does not exist.
fn observe(path: &Path, magic: i64) -> Result<Found> {
    let mut probe = path;
    while !probe.exists() {
        match probe.parent() {
            Some(p) => probe = p,
            None => break,
        }
    }
    if fs_magic(probe)? == magic {
        return Ok(Found::Wanted);
    }
    if probe != path {
        return Ok(Found::OtherEmpty);
    }
    let mut entries = std::fs::read_dir(path).map_err(|e| Error::io("read", path, e))?;
    Ok(if entries.next().is_some() {
        Found::OtherNotEmpty
    } else {
        Found::OtherEmpty
    })
}

fn fs_magic(path: &Path) -> Result<i64> {
    let c = c_path(path)?;
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to memory
    // large enough for a `statfs`, which the kernel fills on success.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(Error::io("statfs", path, std::io::Error::last_os_error()));
    }
    // SAFETY: statfs returned 0, so the struct is initialised.
    #[allow(unsafe_code)]
    let st = unsafe { st.assume_init() };
    Ok(st.f_type)
}

fn mount(at: &Path, fstype: &'static str, what: &'static str, command: &'static str) -> Result<()> {
    // /sys/fs/bpf is sysfs's own directory: it cannot (and need not) be made.
    if !at.exists() {
        std::fs::create_dir_all(at).map_err(|e| Error::io("create mount point", at, e))?;
    }
    let target = c_path(at)?;
    let fs = CString::new(fstype).expect("no NUL in a filesystem name");
    // SAFETY: every pointer is a valid NUL-terminated string for the duration
    // of the call; no data argument.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::mount(
            fs.as_ptr(),
            target.as_ptr(),
            fs.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(Error::Mount {
            fs: what,
            path: at.to_path_buf(),
            command,
            source: std::io::Error::last_os_error(),
        });
    }
    tracing::info!(fs = what, at = %at.display(), "mounted (it was missing)");
    Ok(())
}

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        Error::io(
            "use",
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains NUL"),
        )
    })
}

#[cfg(test)]
mod tests;
