//! The WireGuard cross-platform userspace API (wireguard.com/xplatform),
//! both sides: parsing `set=1` requests and formatting `get=1` answers (the
//! device's server), formatting requests and parsing answers (the client
//! that drives a device in another process). Pure: no sockets.

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
    /// A planned peer as the section that creates or replaces it: the
    /// endpoint only when given, keepalive and AllowedIPs always.
    pub(crate) fn replacing(p: crate::peers::PeerConfig) -> PeerUpdate {
        let mut up = PeerUpdate::new(*p.public_key.as_bytes());
        up.endpoint = p.endpoint;
        up.persistent_keepalive = Some(p.persistent_keepalive.unwrap_or(0));
        up.replace_allowed_ips = true;
        up.allowed_ips = p.allowed_ips;
        up
    }

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

/// Formats a `set=1` request, from the `set=1` line to the blank line that
/// ends it: what [`parse_set`] reads back.
pub fn format_set(req: &SetRequest) -> String {
    let mut s = String::from("set=1\n");
    if let Some(k) = &req.private_key {
        let _ = writeln!(s, "private_key={}", hex_key(k));
    }
    if let Some(p) = req.listen_port {
        let _ = writeln!(s, "listen_port={p}");
    }
    if let Some(m) = req.fwmark {
        let _ = writeln!(s, "fwmark={m}");
    }
    if req.replace_peers {
        s.push_str("replace_peers=true\n");
    }
    for p in &req.peers {
        let _ = writeln!(s, "public_key={}", hex_key(&p.public_key));
        if p.remove {
            s.push_str("remove=true\n");
            continue;
        }
        if p.update_only {
            s.push_str("update_only=true\n");
        }
        if let Some(psk) = &p.preshared_key {
            let _ = writeln!(s, "preshared_key={}", hex_key(psk));
        }
        if let Some(ep) = p.endpoint {
            let _ = writeln!(s, "endpoint={ep}");
        }
        if let Some(k) = p.persistent_keepalive {
            let _ = writeln!(s, "persistent_keepalive_interval={k}");
        }
        if p.replace_allowed_ips {
            s.push_str("replace_allowed_ips=true\n");
        }
        for a in &p.allowed_ips {
            let _ = writeln!(s, "allowed_ip={a}");
        }
    }
    s.push('\n');
    s
}

/// The outcome of one UAPI request: the answer's lines before `errno=`,
/// and the errno.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// key=value lines before the `errno=` line.
    pub lines: Vec<String>,
    /// The `errno=` value (0: success).
    pub errno: i32,
}

/// Splits an answer (up to and including its `errno=` line) into lines and
/// errno. An answer without `errno=` is refused.
pub fn parse_answer(text: &str) -> Result<Answer> {
    let mut lines = Vec::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("errno=") {
            let errno = v
                .parse()
                .map_err(|_| invalid(line, "expected errno=<number>"))?;
            return Ok(Answer { lines, errno });
        }
        if line.is_empty() {
            continue;
        }
        lines.push(line.to_string());
    }
    Err(invalid(
        text.lines().last().unwrap_or_default(),
        "the answer ended without an errno= line",
    ))
}

/// Parses the lines of a `get=1` answer (as [`parse_answer`] returns them)
/// into the device state [`format_get`] wrote. Unknown keys are skipped (a
/// newer device may report more).
pub fn parse_get<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<DeviceInfo> {
    let mut d = DeviceInfo {
        private_key: None,
        listen_port: 0,
        fwmark: 0,
        peers: Vec::new(),
    };
    let mut handshake: Vec<(u64, u32)> = Vec::new();
    let num = |line: &str, v: &str| -> Result<u64> {
        v.parse().map_err(|_| invalid(line, "expected a number"))
    };
    for line in lines {
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| invalid(line, "expected key=value"))?;
        if k == "public_key" {
            d.peers.push(PeerInfo {
                status: PeerStatus {
                    public_key: mesh_api::WireGuardKey::from_bytes(parse_hex_key(line, v)?),
                    endpoint: None,
                    allowed_ips: Vec::new(),
                    persistent_keepalive: None,
                    last_handshake: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                },
                preshared_key: None,
            });
            handshake.push((0, 0));
            continue;
        }
        match (d.peers.last_mut(), handshake.last_mut()) {
            (None, _) | (_, None) => match k {
                "private_key" => d.private_key = Some(parse_hex_key(line, v)?),
                "listen_port" => {
                    d.listen_port = v
                        .parse()
                        .map_err(|_| invalid(line, "expected a port 0-65535"))?
                }
                "fwmark" => {
                    d.fwmark = v
                        .parse()
                        .map_err(|_| invalid(line, "expected a 32-bit number"))?
                }
                _ => {}
            },
            (Some(p), Some(hs)) => match k {
                "preshared_key" => p.preshared_key = Some(parse_hex_key(line, v)?),
                "endpoint" => {
                    p.status.endpoint = Some(
                        v.parse()
                            .map_err(|_| invalid(line, "expected IP:port or [IPv6]:port"))?,
                    )
                }
                "allowed_ip" => p.status.allowed_ips.push(
                    v.parse()
                        .map_err(|_| invalid(line, "expected an address/prefix-length"))?,
                ),
                "persistent_keepalive_interval" => {
                    let k: u16 = v
                        .parse()
                        .map_err(|_| invalid(line, "expected seconds 0-65535"))?;
                    p.status.persistent_keepalive = (k != 0).then_some(k);
                }
                "rx_bytes" => p.status.rx_bytes = num(line, v)?,
                "tx_bytes" => p.status.tx_bytes = num(line, v)?,
                "last_handshake_time_sec" => hs.0 = num(line, v)?,
                "last_handshake_time_nsec" => {
                    hs.1 = u32::try_from(num(line, v)?)
                        .map_err(|_| invalid(line, "nanoseconds out of range"))?
                }
                _ => {}
            },
        }
    }
    for (p, (sec, nsec)) in d.peers.iter_mut().zip(handshake) {
        if (sec, nsec) != (0, 0) {
            p.status.last_handshake = Some(UNIX_EPOCH + std::time::Duration::new(sec, nsec));
        }
    }
    Ok(d)
}
