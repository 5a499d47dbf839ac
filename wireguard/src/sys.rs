//! The few raw syscalls the device needs: TUN creation, link flags and MTU,
//! poll, setns and socket options. Every `unsafe` block is here.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// `struct ifreq` for the ioctls used here: name plus a flags/int union.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: i32,
    _pad: [u8; 20],
}

impl IfReq {
    fn new(name: &str) -> IfReq {
        let mut r = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: 0,
            _pad: [0; 20],
        };
        r.name[..name.len()].copy_from_slice(name.as_bytes());
        r
    }
}

/// Opens one queue of TUN interface `name` (IFF_TUN | IFF_NO_PI |
/// IFF_MULTI_QUEUE), non-blocking, in the calling thread's namespace. The
/// interface exists while at least one queue is open.
pub fn open_tun_queue(name: &str) -> io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut req = IfReq::new(name);
    req.data = libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE;
    // SAFETY: the fd is open; `req` is a properly sized, initialised ifreq
    // that lives across the call; TUNSETIFF reads and writes only within it.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    set_nonblocking(f.as_raw_fd())?;
    Ok(OwnedFd::from(f))
}

fn ctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets the MTU of interface `name` and brings it up.
pub fn set_mtu_and_up(name: &str, mtu: u32) -> io::Result<()> {
    let s = ctl_socket()?;
    let mut req = IfReq::new(name);
    req.data = mtu as i32;
    // SAFETY: valid socket and ifreq; SIOCSIFMTU reads the name and ifr_mtu.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFMTU, &mut req as *mut IfReq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut req = IfReq::new(name);
    // SAFETY: valid socket and ifreq; SIOCGIFFLAGS writes ifr_flags in place.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req as *mut IfReq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // ifr_flags is a short at the start of the union (little endian here).
    req.data |= libc::IFF_UP;
    // SAFETY: as above; SIOCSIFFLAGS reads the name and ifr_flags.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req as *mut IfReq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Marks the fd non-blocking.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a caller-owned open fd with integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits until `fd` is readable or `timeout_ms` passes; true when readable.
pub fn wait_readable(fd: RawFd, timeout_ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd on the stack, count 1.
    let rc = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    rc > 0 && p.revents & libc::POLLIN != 0
}

/// read(2) into `buf`.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid writable region of buf.len() bytes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// write(2) of `buf`.
pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid readable region of buf.len() bytes.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Sets SO_MARK on a socket (0 clears it).
pub fn set_mark(fd: RawFd, mark: u32) -> io::Result<()> {
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_MARK, mark as i32)
}

/// Sets an integer socket option.
pub fn set_int_opt(fd: RawFd, level: i32, name: i32, v: i32) -> io::Result<()> {
    // SAFETY: setsockopt with a pointer to a live i32 and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Moves the calling thread into the network namespace at `path`
/// (e.g. `/var/run/netns/<name>` or `/proc/<pid>/ns/net`).
pub fn setns_net(path: &Path) -> io::Result<()> {
    let f = File::open(path)?;
    // SAFETY: f is an open namespace fd; setns only affects this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A UDP/IPv4 socket with SO_REUSEPORT bound to `0.0.0.0:port`, so several
/// queues share one port.
pub fn udp_reuseport_v4(port: u16) -> io::Result<std::net::UdpSocket> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: 0 },
        sin_zero: [0; 8],
    };
    // SAFETY: addr is a valid sockaddr_in and its exact size is passed.
    let rc = unsafe {
        libc::bind(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(std::net::UdpSocket::from(owned))
}
