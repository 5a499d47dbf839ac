//! Running kernel calls inside another network namespace.
//!
//! The node-agent runs inside its node's network namespace and needs none of
//! this. Tests and the lab, whose loader runs in the host namespace while
//! the pod veths live in a node namespace, attach TC programs from a thread
//! that has entered that namespace: `setns(2)` switches only the calling
//! thread, so the rest of the process is unaffected.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{Error, Result};

/// Runs `f` on a new thread that has entered the network namespace at
/// `netns` (e.g. `/var/run/netns/<name>`), and returns its result.
pub fn in_netns<T: Send>(netns: &Path, f: impl FnOnce() -> T + Send) -> Result<T> {
    let file = File::open(netns).map_err(|source| Error::Netns {
        path: netns.to_path_buf(),
        source,
    })?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a valid, open namespace fd owned by `file`,
            // which outlives the call; it only changes this thread's netns.
            #[allow(unsafe_code)]
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(Error::Netns {
                    path: netns.to_path_buf(),
                    source: std::io::Error::last_os_error(),
                });
            }
            Ok(f())
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The ifindex of `ifname` in the calling thread's network namespace.
pub fn ifindex(ifname: &str) -> Result<u32> {
    let c = CString::new(ifname).map_err(|_| Error::InvalidInput {
        field: "interface name",
        value: ifname.escape_debug().to_string(),
        allowed: "a name without NUL bytes",
    })?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    #[allow(unsafe_code)]
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(Error::Io {
            op: "look up interface",
            path: ifname.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(idx)
}
