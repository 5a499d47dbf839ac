//! The device's UDP socket(s): one per queue on the same port, dual-stack
//! when the namespace has IPv6, with UDP GSO sends.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use crate::error::{Error, Result};
use crate::sys;

/// The device's UDP socket. Dual-stack IPv6 when the namespace has IPv6
/// (IPv4 peers travel as v4-mapped addresses), else IPv4 only; callers
/// always see plain IPv4 or IPv6 endpoints.
pub(crate) struct Udp {
    pub(crate) sock: UdpSocket,
    pub(crate) v6: bool,
}

impl Udp {
    fn wire(&self, ep: SocketAddr) -> SocketAddr {
        match ep {
            SocketAddr::V4(v4) if self.v6 => {
                SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port()))
            }
            _ => ep,
        }
    }

    pub(crate) fn send_to(&self, buf: &[u8], ep: SocketAddr) -> std::io::Result<usize> {
        self.sock.send_to(buf, self.wire(ep))
    }

    pub(crate) fn send_gso(&self, buf: &[u8], seg: u16, ep: SocketAddr) -> std::io::Result<usize> {
        sys::send_gso(self.sock.as_raw_fd(), buf, seg, self.wire(ep))
    }
}

impl AsRawFd for Udp {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.sock.as_raw_fd()
    }
}

/// Binds one queue's socket. `v6`: None = try dual-stack, fall back to IPv4
/// when the kernel has no IPv6; Some = the family of the first queue.
pub(crate) fn bind_udp(ifname: &str, port: u16, reuse: bool, v6: Option<bool>) -> Result<Udp> {
    let err = |op, source| Error::Udp {
        ifname: ifname.to_string(),
        port,
        op,
        source,
    };
    let (sock, v6) = match v6 {
        Some(v6) => (
            sys::udp_socket(port, v6, reuse).map_err(|e| err("bind", e))?,
            v6,
        ),
        None => match sys::udp_socket(port, true, reuse) {
            Ok(s) => (s, true),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)
                ) =>
            {
                (
                    sys::udp_socket(port, false, reuse).map_err(|e| err("bind", e))?,
                    false,
                )
            }
            Err(e) => return Err(err("bind", e)),
        },
    };
    sock.set_nonblocking(true)
        .map_err(|e| err("set non-blocking", e))?;
    // Bigger buffers keep bursts from being dropped while a thread is busy.
    let _ = sys::set_int_opt(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 4 << 20);
    let _ = sys::set_int_opt(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, 4 << 20);
    Ok(Udp { sock, v6 })
}
