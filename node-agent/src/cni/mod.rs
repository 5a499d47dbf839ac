//! The CNI plugin `mesh-cni` (CNI spec 1.0.0: ADD, DEL, CHECK, VERSION).
//!
//! A container runtime runs the plugin in the node's network namespace with
//! the `CNI_*` environment and the network configuration on stdin; the
//! result (or a CNI error object) goes to stdout, and errors exit non-zero.
//!
//! Network configuration (besides `cniVersion`, `name`, `type`):
//!
//! | field | default | |
//! | --- | --- | --- |
//! | `agentSocket` | `/var/run/meshwork/agent.sock` | the node-agent's local API |
//! | `stateDir` | `/var/lib/meshwork` | IPAM state lives under `<stateDir>/ipam/` |
//! | `podCIDR` | asked from the agent | the node's pod CIDR (IPv4) |
//! | `mtu` | the node-agent's pod MTU | MTU of both veth ends |
//!
//! A conflist as the chart installs it (`/etc/cni/net.d/05-meshwork.conflist`):
//!
//! ```json
//! { "cniVersion": "1.0.0", "name": "meshwork",
//!   "plugins": [ { "type": "mesh-cni", "agentSocket": "/var/run/meshwork/agent.sock",
//!                  "stateDir": "/var/lib/meshwork", "mtu": 1500 } ] }
//! ```
//!
//! Error codes: the spec's 1 (incompatible version), 4 (invalid environment
//! variable, including an unknown `CNI_COMMAND`), 5 (I/O failure), 6
//! (decoding failure), 7 (invalid network configuration), 11 (try again
//! later: the node-agent is unreachable), and ours: [`CODE_POD_CIDR_EXHAUSTED`],
//! [`CODE_LINK_SETUP`], [`CODE_AGENT_REFUSED`], [`CODE_CHECK_FAILED`].
//!
//! ADD is all or nothing: a failure after the address is allocated or the
//! veth created (e.g. the agent refuses or is unreachable at registration)
//! removes the veth and releases the address before reporting the error.

pub mod ipam;
pub mod link;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net};
use mesh_agent_api::{AgentClient, Error as AgentError};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::endpoint::{EndpointRegistration, container_id_problem, host_ifname, ifname_problem};
use crate::error::{Error, Result};
use ipam::Ipam;

/// The spec version of our results.
pub const CNI_VERSION: &str = "1.0.0";
/// Versions we accept in network configurations.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// Code: the pod CIDR has no free address.
pub const CODE_POD_CIDR_EXHAUSTED: u32 = 100;
/// Code: creating or configuring the veth, addresses or routes failed.
pub const CODE_LINK_SETUP: u32 = 101;
/// Code: the node-agent refused the endpoint or answered nonsense.
pub const CODE_AGENT_REFUSED: u32 = 102;
/// Code: CHECK found a difference.
pub const CODE_CHECK_FAILED: u32 = 103;

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Add the container to the network.
    Add,
    /// Remove it.
    Del,
    /// Verify it.
    Check,
    /// Report supported versions.
    Version,
}

/// The CNI environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID`.
    pub container_id: Option<String>,
    /// `CNI_NETNS`.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`.
    pub ifname: Option<String>,
    /// `CNI_ARGS`, split at `;` and `=`.
    pub args: BTreeMap<String, String>,
}

impl CniEnv {
    /// Reads the environment through `var` (e.g. `std::env::var(..).ok()`).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<CniEnv> {
        let non_empty = |name: &str| var(name).filter(|v| !v.is_empty());
        let command = match non_empty("CNI_COMMAND").as_deref() {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("VERSION") => Command::Version,
            Some(other) => {
                return Err(Error::CniInvalidEnv {
                    var: "CNI_COMMAND",
                    reason: format!(
                        "unknown command {other:?}; this plugin speaks ADD, DEL, CHECK and VERSION"
                    ),
                });
            }
            None => {
                return Err(Error::CniInvalidEnv {
                    var: "CNI_COMMAND",
                    reason: "not set; set it to ADD, DEL, CHECK or VERSION".into(),
                });
            }
        };
        let mut args = BTreeMap::new();
        for pair in non_empty("CNI_ARGS")
            .unwrap_or_default()
            .split(';')
            .filter(|p| !p.is_empty())
        {
            let (k, v) = pair.split_once('=').ok_or_else(|| Error::CniInvalidEnv {
                var: "CNI_ARGS",
                reason: format!("{pair:?} is not KEY=VALUE (pairs are separated by ';')"),
            })?;
            args.insert(k.to_string(), v.to_string());
        }
        Ok(CniEnv {
            command,
            container_id: non_empty("CNI_CONTAINERID"),
            netns: non_empty("CNI_NETNS").map(PathBuf::from),
            ifname: non_empty("CNI_IFNAME"),
            args,
        })
    }

    fn container_id(&self) -> Result<&str> {
        let id = self.container_id.as_deref().ok_or(Error::CniInvalidEnv {
            var: "CNI_CONTAINERID",
            reason: "not set".into(),
        })?;
        if let Some(p) = container_id_problem(id) {
            return Err(Error::CniInvalidEnv {
                var: "CNI_CONTAINERID",
                reason: format!("{id:?}: {p}"),
            });
        }
        Ok(id)
    }

    fn ifname(&self) -> Result<&str> {
        let name = self.ifname.as_deref().ok_or(Error::CniInvalidEnv {
            var: "CNI_IFNAME",
            reason: "not set".into(),
        })?;
        if let Some(p) = ifname_problem(name) {
            return Err(Error::CniInvalidEnv {
                var: "CNI_IFNAME",
                reason: format!("{name:?}: {p}"),
            });
        }
        Ok(name)
    }

    fn netns(&self) -> Result<&Path> {
        let ns = self.netns.as_deref().ok_or(Error::CniInvalidEnv {
            var: "CNI_NETNS",
            reason: "not set".into(),
        })?;
        if !ns.exists() {
            return Err(Error::CniInvalidEnv {
                var: "CNI_NETNS",
                reason: format!("{} does not exist", ns.display()),
            });
        }
        Ok(ns)
    }
}

/// The network configuration read from stdin.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// Spec version of the configuration.
    pub cni_version: String,
    /// Network name.
    pub name: String,
    /// Plugin type (our binary name).
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// The node-agent's socket.
    #[serde(default = "default_socket")]
    pub agent_socket: PathBuf,
    /// State directory.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Pod CIDR; asked from the agent when absent.
    #[serde(default, rename = "podCIDR")]
    pub pod_cidr: Option<String>,
    /// MTU of the veth pair.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// The result of the previous ADD (CHECK, DEL).
    #[serde(default)]
    pub prev_result: Option<Value>,
}

fn default_socket() -> PathBuf {
    PathBuf::from("/var/run/meshwork/agent.sock")
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/meshwork")
}

impl NetConf {
    /// Decodes stdin: not JSON → code 6; JSON of the wrong shape or a bad
    /// value → code 7; an unsupported version → code 1.
    pub fn parse(stdin: &[u8]) -> Result<NetConf> {
        let value: Value =
            serde_json::from_slice(stdin).map_err(|source| Error::CniDecode { source })?;
        let conf: NetConf = serde_json::from_value(value).map_err(|e| Error::CniInvalidConfig {
            field: "(document)",
            reason: format!("{e}; required: cniVersion, name, type"),
        })?;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(Error::CniIncompatibleVersion {
                version: conf.cni_version.clone(),
                supported: SUPPORTED_VERSIONS.join(", "),
            });
        }
        if conf.name.is_empty() {
            return Err(Error::CniInvalidConfig {
                field: "name",
                reason: "must not be empty".into(),
            });
        }
        if let Some(mtu) = conf.mtu
            && !(576..=65535).contains(&mtu)
        {
            return Err(Error::CniInvalidConfig {
                field: "mtu",
                reason: format!("{mtu} is out of range: use 576-65535"),
            });
        }
        if let Some(cidr) = &conf.pod_cidr {
            parse_pod_cidr(cidr)?;
        }
        Ok(conf)
    }
}

fn parse_pod_cidr(text: &str) -> Result<Ipv4Net> {
    let invalid = |reason: String| Error::CniInvalidConfig {
        field: "podCIDR",
        reason,
    };
    match mesh_api::cidr::parse_cidr("podCIDR", text).map_err(|e| invalid(e.to_string()))? {
        IpNet::V4(v4) if v4.prefix_len() <= 30 => Ok(v4),
        IpNet::V4(v4) => Err(invalid(format!(
            "{v4} has no room for pods: use /30 or shorter"
        ))),
        IpNet::V6(v6) => Err(invalid(format!("{v6}: only IPv4 pod CIDRs are supported"))),
    }
}

/// The CNI error code of an error.
pub fn error_code(err: &Error) -> u32 {
    match err {
        Error::CniIncompatibleVersion { .. } => 1,
        Error::CniInvalidEnv { .. } => 4,
        Error::CniDecode { .. } => 6,
        Error::CniInvalidConfig { .. } => 7,
        Error::Agent(AgentError::AgentUnreachable { .. }) => 11,
        Error::PodCidrExhausted { .. } => CODE_POD_CIDR_EXHAUSTED,
        Error::Netlink { .. } | Error::LinkMissing { .. } => CODE_LINK_SETUP,
        Error::Agent(AgentError::AgentRefused { .. } | AgentError::AgentProtocol { .. }) => {
            CODE_AGENT_REFUSED
        }
        Error::CniCheckFailed { .. } => CODE_CHECK_FAILED,
        _ => 5,
    }
}

/// The CNI error object for `err`.
pub fn error_json(err: &Error, cni_version: &str) -> Value {
    let mut details = Vec::new();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        details.push(s.to_string());
        source = s.source();
    }
    json!({
        "cniVersion": cni_version,
        "code": error_code(err),
        "msg": err.to_string(),
        "details": details.join(": "),
    })
}

/// Runs one plugin invocation; returns what to print on stdout (nothing for
/// DEL).
pub fn run(env: &CniEnv, stdin: &[u8]) -> Result<Option<Value>> {
    if env.command == Command::Version {
        return Ok(Some(json!({
            "cniVersion": CNI_VERSION,
            "supportedVersions": SUPPORTED_VERSIONS,
        })));
    }
    let conf = NetConf::parse(stdin)?;
    match env.command {
        Command::Add => add(env, &conf).map(Some),
        Command::Del => del(env, &conf).map(|()| None),
        Command::Check => check(env, &conf).map(|()| None),
        Command::Version => unreachable!("handled above"),
    }
}

fn pod_cidr(conf: &NetConf, agent: &AgentClient) -> Result<Ipv4Net> {
    if let Some(text) = &conf.pod_cidr {
        return parse_pod_cidr(text);
    }
    match agent.status()?.pod_cidr {
        Some(IpNet::V4(v4)) => Ok(v4),
        Some(IpNet::V6(v6)) => Err(Error::CniInvalidConfig {
            field: "podCIDR",
            reason: format!("the node-agent's pod CIDR {v6} is IPv6, which this plugin does not support"),
        }),
        None => Err(Error::CniInvalidConfig {
            field: "podCIDR",
            reason: "not set, and the node-agent knows no pod CIDR either: set podCIDR or start the agent with --pod-cidr".into(),
        }),
    }
}

/// The veth MTU: the configuration's `mtu`, else the one the node-agent
/// derived (its node interface's, less the encryption overhead), else 1500
/// from an agent that does not say.
fn pod_mtu(conf: &NetConf, agent: &AgentClient) -> Result<u32> {
    if let Some(mtu) = conf.mtu {
        return Ok(mtu);
    }
    Ok(agent.status()?.mtu.map_or(1500, |m| m.pod))
}

fn add(env: &CniEnv, conf: &NetConf) -> Result<Value> {
    let container_id = env.container_id()?;
    let ifname = env.ifname()?;
    let netns = env.netns()?;
    let agent = AgentClient::new(&conf.agent_socket);
    let cidr = pod_cidr(conf, &agent)?;
    let mtu = pod_mtu(conf, &agent)?;
    let host = host_ifname(container_id, ifname);
    let ipam = Ipam::open(&conf.state_dir, cidr)?;

    // A leftover of an interrupted ADD for the same container: start clean.
    link::teardown(&host)?;
    let addr = ipam.allocate(container_id, ifname)?;
    let attempt = || -> Result<link::Links> {
        let links = link::setup(&host, netns, ifname, addr, mtu)?;
        agent.register(&EndpointRegistration {
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
            netns: netns.display().to_string(),
            host_ifname: host.clone(),
            host_ifindex: links.host_ifindex,
            pod_mac: Some(links.pod_mac.clone()),
            ips: vec![IpAddr::V4(addr)],
            pod_namespace: env.args.get("K8S_POD_NAMESPACE").cloned(),
            pod_name: env.args.get("K8S_POD_NAME").cloned(),
        })?;
        Ok(links)
    };
    let links = match attempt() {
        Ok(links) => links,
        Err(err) => {
            rollback(&host, &ipam, container_id, ifname);
            return Err(err);
        }
    };
    Ok(add_result(
        &conf.cni_version,
        &host,
        &links,
        netns,
        ifname,
        addr,
    ))
}

/// Undoes an ADD: every step is attempted; failures are logged on stderr
/// (stdout carries the CNI error).
fn rollback(host: &str, ipam: &Ipam, container_id: &str, ifname: &str) {
    if let Err(e) = link::teardown(host) {
        eprintln!("mesh-cni: rollback: cannot delete {host}: {e}");
    }
    if let Err(e) = ipam.release(container_id, ifname) {
        eprintln!("mesh-cni: rollback: cannot release the address of {container_id}/{ifname}: {e}");
    }
}

fn add_result(
    version: &str,
    host: &str,
    links: &link::Links,
    netns: &Path,
    ifname: &str,
    addr: Ipv4Addr,
) -> Value {
    let mut ip = json!({
        "address": format!("{addr}/32"),
        "gateway": link::GATEWAY.to_string(),
        "interface": 1,
    });
    if version != "1.0.0" {
        ip["version"] = json!("4");
    }
    json!({
        "cniVersion": version,
        "interfaces": [
            { "name": host, "mac": links.host_mac },
            { "name": ifname, "mac": links.pod_mac, "sandbox": netns.display().to_string() },
        ],
        "ips": [ip],
        "routes": [ { "dst": "0.0.0.0/0", "gw": link::GATEWAY.to_string() } ],
        "dns": {},
    })
}

fn del(env: &CniEnv, conf: &NetConf) -> Result<()> {
    let container_id = env.container_id()?;
    let ifname = env.ifname()?;
    // The netns may be gone already: the host side is all we need.
    link::teardown(&host_ifname(container_id, ifname))?;
    Ipam::release_everywhere(&conf.state_dir, container_id, ifname)?;
    // Unknown to the agent is fine (DEL is idempotent); unreachable is
    // "try again later" so the runtime retries and the agent forgets it.
    AgentClient::new(&conf.agent_socket).deregister(container_id, ifname)?;
    Ok(())
}

fn check(env: &CniEnv, conf: &NetConf) -> Result<()> {
    let container_id = env.container_id()?;
    let ifname = env.ifname()?;
    let netns = env.netns()?;
    let failed = |reason: String| Error::CniCheckFailed {
        container_id: container_id.to_string(),
        ifname: ifname.to_string(),
        reason,
    };
    let prev = conf.prev_result.as_ref().ok_or(Error::CniInvalidConfig {
        field: "prevResult",
        reason: "CHECK needs the result of ADD in prevResult".into(),
    })?;
    let addr = prev["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse::<Ipv4Addr>().ok())
        .ok_or(Error::CniInvalidConfig {
            field: "prevResult",
            reason: "prevResult.ips[0].address is missing or not an IPv4 CIDR".into(),
        })?;
    let host = host_ifname(container_id, ifname);
    if let Err(reason) = link::check(&host, netns, ifname, addr)? {
        return Err(failed(reason));
    }
    let cidr = pod_cidr(conf, &AgentClient::new(&conf.agent_socket))?;
    let owned = Ipam::open(&conf.state_dir, cidr)?
        .allocations()?
        .into_iter()
        .any(|(ip, o)| ip == addr && o.container_id == container_id && o.ifname == ifname);
    if !owned {
        return Err(failed(format!(
            "IPAM has no allocation of {addr} for this container"
        )));
    }
    let registered = AgentClient::new(&conf.agent_socket)
        .endpoints()?
        .into_iter()
        .any(|e| e.registration.container_id == container_id && e.registration.ifname == ifname);
    if !registered {
        return Err(failed(
            "the node-agent has no endpoint for this container".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
