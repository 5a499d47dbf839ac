//! The node-agent's local API as a contract: the JSON shapes of its
//! endpoints (`/v1/status`, `/v1/endpoints`, `/v1/services`,
//! `/v1/ipcache`, `/v1/flows`, `/v1/nodes`, `/v1/policies`,
//! `/v1/encryption`, …) and [`AgentClient`], a small blocking client of the
//! agent's unix socket written on std alone (HTTP/1.1, chunked bodies,
//! NDJSON follow).
//!
//! What it is for: whoever talks to an agent without being one. mesh-cni
//! registers endpoints with it, meshctl reads status, flows, policies and
//! encryption with it, tests drive agents with it; the node-agent serves the
//! same types, so the two sides cannot drift.
//!
//! What it is not for: serving the API, the datapath, or anything that needs
//! an async runtime, the kernel or Kubernetes (all in node-agent).
//! Dependencies are serde, serde_json, thiserror and the I/O-free mesh-api
//! (whose identities, protocols and node records the shapes are made of).

pub mod client;
pub mod datapath;
pub mod encryption;
pub mod endpoint;
mod error;
pub mod flows;
pub mod policy;
pub mod status;

pub use client::AgentClient;
pub use error::{Error, Result};
