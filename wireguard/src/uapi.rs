//! The WireGuard cross-platform userspace API (wireguard.com/xplatform):
//! parsing `set=1` requests and formatting `get=1` answers. Pure: the
//! device applies what this module parses.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::UNIX_EPOCH;

use ipnet::IpNet;

use crate::error::{Error, Result};
use crate::peers::PeerStatus;

/// One peer's part of a `set=1` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerUpdate {
    /// The peer's public key.
    pub public_key: [u8; 32],
    /// `remove=true`.
    pub remove: bool,
    /// `update_only=true`: do not create the peer.
    pub update_only: bool,
    /// `preshared_key=` (all zero removes it).
    pub preshared_key: Option<[u8; 32]>,
    /// `endpoint=`.
    pub endpoint: Option<SocketAddr>,
    /// `persistent_keepalive_interval=` (0 disables).
    pub persistent_keepalive: Option<u16>,
    /// `replace_allowed_ips=true`.
    pub replace_allowed_ips: bool,
    /// `allowed_ip=` lines, in order.
    pub allowed_ips: Vec<IpNet>,
}

impl PeerUpdate {
    /// An update that only names the peer.
    pub fn new(public_key: [u8; 32]) -> PeerUpdate {
        PeerUpdate {
            public_key,
            remove: false,
            update_only: false,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
            replace_allowed_ips: false,
            allowed_ips: Vec::new(),
        }
    }
}

/// A parsed `set=1` request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetRequest {
    /// `private_key=` (all zero removes the key).
    pub private_key: Option<[u8; 32]>,
    /// `listen_port=`.
    pub listen_port: Option<u16>,
    /// `fwmark=` (0 removes it).
    pub fwmark: Option<u32>,
    /// `replace_peers=true`.
    pub replace_peers: bool,
    /// Peer sections in order.
    pub peers: Vec<PeerUpdate>,
}

fn invalid(line: &str, reason: impl Into<String>) -> Error {
    Error::UapiInvalid {
        line: line.to_string(),
        reason: reason.into(),
    }
}

/// Decodes a 64-hex-digit key.
pub fn parse_hex_key(line: &str, v: &str) -> Result<[u8; 32]> {
    if v.len() != 64 {
        return Err(invalid(line, "a key must be 64 hexadecimal digits"));
    }
    let mut out = [0u8; 32];
    for (i, chunk) in v.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).map_err(|_| invalid(line, "not hexadecimal"))?;
        out[i] = u8::from_str_radix(s, 16)
            .map_err(|_| invalid(line, "a key must be 64 hexadecimal digits"))?;
    }
    Ok(out)
}

/// Encodes a key as 64 lowercase hex digits.
pub fn hex_key(k: &[u8; 32]) -> String {
    let mut s = String::with_capacity(64);
    for b in k {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn parse_bool(line: &str, v: &str) -> Result<bool> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(line, "expected true or false")),
    }
}

/// Parses the key=value lines of a `set=1` request (without the `set=1`
/// line and the terminating blank line). All or nothing: any bad line
/// rejects the whole request.
pub fn parse_set<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<SetRequest> {
    let mut req = SetRequest::default();
    for line in lines {
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| invalid(line, "expected key=value"))?;
        let peer = req.peers.last_mut();
        match (k, peer) {
            ("public_key", _) => req.peers.push(PeerUpdate::new(parse_hex_key(line, v)?)),
            ("private_key", None) => req.private_key = Some(parse_hex_key(line, v)?),
            ("listen_port", None) => {
                req.listen_port = Some(
                    v.parse()
                        .map_err(|_| invalid(line, "expected a port 0-65535"))?,
                )
            }
            ("fwmark", None) => {
                req.fwmark = Some(
                    v.parse()
                        .map_err(|_| invalid(line, "expected a 32-bit number"))?,
                )
            }
            ("replace_peers", None) => req.replace_peers = parse_bool(line, v)?,
            ("remove", Some(p)) => p.remove = parse_bool(line, v)?,
            ("update_only", Some(p)) => p.update_only = parse_bool(line, v)?,
            ("preshared_key", Some(p)) => p.preshared_key = Some(parse_hex_key(line, v)?),
            ("endpoint", Some(p)) => {
                p.endpoint = Some(
                    v.parse()
                        .map_err(|_| invalid(line, "expected IP:port or [IPv6]:port"))?,
                )
            }
            ("persistent_keepalive_interval", Some(p)) => {
                p.persistent_keepalive = Some(
                    v.parse()
                        .map_err(|_| invalid(line, "expected seconds 0-65535"))?,
                )
            }
            ("replace_allowed_ips", Some(p)) => p.replace_allowed_ips = parse_bool(line, v)?,
            ("allowed_ip", Some(p)) => p.allowed_ips.push(
                v.parse()
                    .map_err(|_| invalid(line, "expected an address/prefix-length"))?,
            ),
            ("protocol_version", Some(_)) => {
                if v != "1" {
                    return Err(invalid(line, "only protocol_version=1 is supported"));
                }
            }
            (
                "remove"
                | "update_only"
                | "preshared_key"
                | "endpoint"
                | "persistent_keepalive_interval"
                | "replace_allowed_ips"
                | "allowed_ip"
                | "protocol_version",
                None,
            ) => return Err(invalid(line, "peer key before any public_key line")),
            ("private_key" | "listen_port" | "fwmark" | "replace_peers", Some(_)) => {
                return Err(invalid(line, "device key after a peer section"));
            }
            _ => return Err(invalid(line, "unknown key")),
        }
    }
    Ok(req)
}

/// One peer in a `get=1` answer: the device's [`PeerStatus`] plus what
/// only the UAPI shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Key, endpoint, AllowedIPs, keepalive, handshake time and counters.
    pub status: PeerStatus,
    /// Preshared key, when set.
    pub preshared_key: Option<[u8; 32]>,
}

/// The device state of a `get=1` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The private key.
    pub private_key: Option<[u8; 32]>,
    /// The UDP port.
    pub listen_port: u16,
    /// The fwmark (0 = none).
    pub fwmark: u32,
    /// The peers.
    pub peers: Vec<PeerInfo>,
}

/// Formats a `get=1` answer, including the final `errno=0` and blank line.
pub fn format_get(d: &DeviceInfo) -> String {
    let mut s = String::new();
    if let Some(k) = &d.private_key {
        let _ = writeln!(s, "private_key={}", hex_key(k));
    }
    let _ = writeln!(s, "listen_port={}", d.listen_port);
    if d.fwmark != 0 {
        let _ = writeln!(s, "fwmark={}", d.fwmark);
    }
    for p in &d.peers {
        let st = &p.status;
        let _ = writeln!(s, "public_key={}", hex_key(st.public_key.as_bytes()));
        if let Some(psk) = &p.preshared_key {
            let _ = writeln!(s, "preshared_key={}", hex_key(psk));
        }
        let _ = writeln!(s, "protocol_version=1");
        if let Some(ep) = st.endpoint {
            let _ = writeln!(s, "endpoint={ep}");
        }
        let (sec, nsec) = st
            .last_handshake
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| (d.as_secs(), d.subsec_nanos()))
            .unwrap_or((0, 0));
        let _ = writeln!(s, "last_handshake_time_sec={sec}");
        let _ = writeln!(s, "last_handshake_time_nsec={nsec}");
        let _ = writeln!(s, "tx_bytes={}", st.tx_bytes);
        let _ = writeln!(s, "rx_bytes={}", st.rx_bytes);
        let _ = writeln!(
            s,
            "persistent_keepalive_interval={}",
            st.persistent_keepalive.unwrap_or(0)
        );
        for a in &st.allowed_ips {
            let _ = writeln!(s, "allowed_ip={a}");
        }
    }
    s.push_str("errno=0\n\n");
    s
}
