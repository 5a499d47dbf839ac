//! Encryption as `/v1/status`, `GET /v1/encryption` and `POST
//! /v1/encryption/rotate-key` report it: the WireGuard device, its key and
//! peers.

use std::net::SocketAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// A peer as `/v1/status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerReport {
    /// Public key (base64).
    pub public_key: String,
    /// Endpoint.
    pub endpoint: Option<SocketAddr>,
    /// AllowedIPs.
    pub allowed_ips: Vec<IpNet>,
    /// Seconds since the last handshake (None: never).
    pub last_handshake_seconds_ago: Option<u64>,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
}

/// The encryption part of `/v1/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionStatus {
    /// Whether encryption is on.
    pub enabled: bool,
    /// The device's interface.
    pub interface: Option<String>,
    /// Its UDP port.
    pub port: Option<u16>,
    /// The device process (`mesh-wg`), which outlives agent restarts: the
    /// same pid before and after one means the tunnel never went down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_pid: Option<u32>,
    /// This node's public key.
    pub public_key: Option<String>,
    /// Whether the key is on the Node annotation.
    pub key_published: bool,
    /// Peers.
    pub peers: Vec<PeerReport>,
    /// Peers refused by the last sync, with the reason.
    pub rejected: Vec<String>,
}

/// What `GET /v1/encryption` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionReport {
    /// The node.
    pub node: String,
    /// Its cluster.
    pub cluster: String,
    /// `wireguard` or `off`.
    pub mode: String,
    /// Strict mode (`encryption.strictMode.enabled`).
    pub strict_mode: bool,
    /// Node encryption (`encryption.nodeEncryption`).
    pub node_encryption: bool,
    /// The device, its key and peers (None when encryption is off).
    pub device: Option<crate::encryption::EncryptionStatus>,
}

/// What `POST /v1/encryption/rotate-key` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotatedKey {
    /// The node.
    pub node: String,
    /// The public key before.
    pub old_public_key: String,
    /// The public key now.
    pub new_public_key: String,
    /// Whether the new key is on the Node annotation (peers follow it).
    pub published: bool,
    /// Why it is not, if not.
    pub publish_error: Option<String>,
}
