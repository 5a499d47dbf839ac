//! The UAPI unix socket: `<dir>/<ifname>.sock`, one request after another
//! per connection, as the `wg` tool and wireguard-go speak it.
//!
//! The server knows the device only through [`UapiDevice`]: what a `get=1`
//! reads and what a `set=1` applies.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::sys;
use crate::uapi::{self, DeviceInfo, SetRequest};

/// What the UAPI server needs from a device.
pub(crate) trait UapiDevice {
    /// True once the device is shutting down: the server stops accepting.
    fn is_stopping(&self) -> bool;
    /// The state a `get=1` answers with.
    fn device_info(&self) -> DeviceInfo;
    /// Applies a parsed `set=1` request, all or nothing per section.
    fn apply_set(&self, req: &SetRequest) -> Result<()>;
}

/// Binds the socket, replacing a stale one; refuses when a live device
/// answers on it.
pub(crate) fn bind(path: &Path) -> Result<UnixListener> {
    let err = |op, source| Error::UapiSocket {
        path: path.to_path_buf(),
        op,
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err("create directory", e))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(Error::UapiSocketInUse {
                path: path.to_path_buf(),
            });
        }
        std::fs::remove_file(path).map_err(|e| err("remove stale socket", e))?;
    }
    let l = UnixListener::bind(path).map_err(|e| err("bind", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| err("chmod 600", e))?;
    l.set_nonblocking(true)
        .map_err(|e| err("set non-blocking", e))?;
    Ok(l)
}

pub(crate) fn serve(s: &impl UapiDevice, listener: UnixListener) {
    while !s.is_stopping() {
        match listener.accept() {
            Ok((conn, _)) => {
                if let Err(e) = handle(s, conn) {
                    tracing::debug!(error = %e, "UAPI connection");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                sys::wait_readable(listener.as_raw_fd(), 200);
            }
            Err(e) => {
                tracing::warn!(error = %e, "UAPI accept");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn handle(s: &impl UapiDevice, conn: UnixStream) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut w = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    loop {
        let mut op = String::new();
        if r.read_line(&mut op)? == 0 {
            return Ok(());
        }
        let op = op.trim_end_matches('\n');
        let mut lines = Vec::new();
        loop {
            let mut l = String::new();
            if r.read_line(&mut l)? == 0 {
                break;
            }
            let l = l.trim_end_matches('\n').to_string();
            if l.is_empty() {
                break;
            }
            lines.push(l);
        }
        let answer = match op {
            "get=1" => uapi::format_get(&s.device_info()),
            "set=1" => {
                let result = uapi::parse_set(lines.iter().map(String::as_str))
                    .and_then(|req| s.apply_set(&req));
                match result {
                    Ok(()) => "errno=0\n\n".to_string(),
                    Err(e) => {
                        tracing::warn!(error = %e, "UAPI set refused");
                        format!("errno={}\n\n", e.errno())
                    }
                }
            }
            _ => {
                tracing::warn!(op, "UAPI: unknown operation (expected get=1 or set=1)");
                format!("errno={}\n\n", libc::EINVAL)
            }
        };
        w.write_all(answer.as_bytes())?;
    }
}
