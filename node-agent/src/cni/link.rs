//! Pod networking with iproute2: the veth pair, addresses, routes and the
//! static neighbour of the gateway.
//!
//! The node side runs `ip` in the plugin's own namespace (the node's); the
//! pod side runs `nsenter --net=<CNI_NETNS> ip -batch -`, one process for all
//! of the pod's settings. (iproute2 rather than netlink sockets: a process
//! per namespace keeps namespace switching out of this program.)
//!
//! Layout (as Calico/Cilium do): the pod gets `<ip>/32` on its interface, a
//! link route to the gateway [`GATEWAY`] and a default route via it; the
//! gateway's MAC is pinned as a permanent neighbour entry to the host veth's
//! MAC, so no ARP proxy is needed and the host veth needs no address. The
//! node gets `<ip>/32 dev <host veth>`, and forwarding is enabled.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The pods' default gateway: a link-local address answered (by a pinned
/// neighbour entry) by the host side of each veth.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// What setup created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Links {
    /// Host veth ifindex (in the node's namespace).
    pub host_ifindex: u32,
    /// Host veth MAC.
    pub host_mac: String,
    /// Pod interface ifindex (in the pod's namespace).
    pub pod_ifindex: u32,
    /// Pod interface MAC.
    pub pod_mac: String,
}

#[derive(Debug, Deserialize)]
struct LinkJson {
    ifindex: u32,
    address: Option<String>,
    #[serde(default)]
    flags: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct AddrJson {
    #[serde(default)]
    addr_info: Vec<AddrInfo>,
}

#[derive(Debug, Deserialize)]
struct AddrInfo {
    local: String,
    prefixlen: u8,
}

#[derive(Debug, Deserialize)]
struct RouteJson {
    dst: String,
    gateway: Option<String>,
    dev: Option<String>,
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<String> {
    let command = describe(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| Error::CommandStart {
        command: command.clone(),
        source,
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|source| Error::CommandStart {
                command: command.clone(),
                source,
            })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| Error::CommandStart {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args), None)
}

fn ip_in(netns: &Path, args: &[&str]) -> Result<String> {
    let ns = format!("--net={}", netns.display());
    run(Command::new("nsenter").arg(ns).arg("ip").args(args), None)
}

fn batch_in(netns: &Path, script: &str) -> Result<String> {
    let ns = format!("--net={}", netns.display());
    run(
        Command::new("nsenter").arg(ns).args(["ip", "-batch", "-"]),
        Some(script),
    )
}

fn parse<T: serde::de::DeserializeOwned>(command: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::CommandOutput {
        command: command.to_string(),
        reason: format!("not the JSON iproute2 prints: {e}"),
    })
}

fn link(netns: Option<&Path>, dev: &str) -> Result<Option<LinkJson>> {
    let args = ["-j", "link", "show", "dev", dev];
    let out = match netns {
        None => ip(&args),
        Some(ns) => ip_in(ns, &args),
    };
    match out {
        Ok(text) => {
            let mut links: Vec<LinkJson> = parse("ip -j link show", &text)?;
            Ok(links.pop())
        }
        Err(Error::Command { stderr, .. }) if stderr.contains("does not exist") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether a link exists in the node's namespace.
pub fn host_link_exists(dev: &str) -> Result<bool> {
    Ok(link(None, dev)?.is_some())
}

/// Creates and configures the pod's veth pair. On error the caller tears
/// down the host side (which removes the pair).
pub fn setup(host: &str, netns: &Path, ifname: &str, addr: Ipv4Addr, mtu: u32) -> Result<Links> {
    let mtu = mtu.to_string();
    let ns = netns.to_string_lossy();
    // The pod end is created directly inside the pod's namespace: its name
    // (e.g. eth0) may exist in the node's namespace.
    ip(&[
        "link", "add", host, "mtu", &mtu, "type", "veth", "peer", "name", ifname, "mtu", &mtu,
        "netns", &ns,
    ])?;
    ip(&["link", "set", host, "up"])?;
    enable_forwarding()?;
    let host_link = link(None, host)?.ok_or_else(|| Error::CommandOutput {
        command: format!("ip link show dev {host}"),
        reason: "the host veth just created is missing".into(),
    })?;
    let host_mac = host_link.address.clone().unwrap_or_default();
    let script = format!(
        "link set {ifname} up\n\
         addr add {addr}/32 dev {ifname}\n\
         route add {GATEWAY} dev {ifname} scope link\n\
         route add default via {GATEWAY} dev {ifname}\n\
         neigh replace {GATEWAY} lladdr {host_mac} dev {ifname} nud permanent\n"
    );
    batch_in(netns, &script)?;
    ip(&[
        "route",
        "replace",
        &format!("{addr}/32"),
        "dev",
        host,
        "scope",
        "link",
    ])?;
    let pod_link = link(Some(netns), ifname)?.ok_or_else(|| Error::CommandOutput {
        command: format!("nsenter --net={ns} ip link show dev {ifname}"),
        reason: "the pod interface just created is missing".into(),
    })?;
    Ok(Links {
        host_ifindex: host_link.ifindex,
        host_mac,
        pod_ifindex: pod_link.ifindex,
        pod_mac: pod_link.address.unwrap_or_default(),
    })
}

/// Deletes the host veth (and with it the pod end and the host route);
/// `false` when it did not exist.
pub fn teardown(host: &str) -> Result<bool> {
    match ip(&["link", "del", host]) {
        Ok(_) => Ok(true),
        Err(Error::Command { stderr, .. })
            if stderr.contains("Cannot find device") || stderr.contains("does not exist") =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Turns on IPv4 forwarding in the node's namespace (pod↔pod and
/// pod↔other nodes go through it).
pub fn enable_forwarding() -> Result<()> {
    let path = Path::new("/proc/sys/net/ipv4/ip_forward");
    if std::fs::read_to_string(path)
        .map(|s| s.trim() == "1")
        .unwrap_or(false)
    {
        return Ok(());
    }
    std::fs::write(path, "1").map_err(Error::io("write", path))
}

/// Compares the pod's networking with what [`setup`] makes; `Err(reason)`
/// names the first difference.
pub fn check(
    host: &str,
    netns: &Path,
    ifname: &str,
    addr: Ipv4Addr,
) -> Result<std::result::Result<(), String>> {
    let Some(host_link) = link(None, host)? else {
        return Ok(Err(format!("host veth {host} is missing")));
    };
    if !host_link.flags.iter().any(|f| f == "UP") {
        return Ok(Err(format!("host veth {host} is down")));
    }
    let routes: Vec<RouteJson> = parse(
        "ip -j route show",
        &ip(&["-j", "route", "show", &format!("{addr}/32")])?,
    )?;
    if !routes.iter().any(|r| r.dev.as_deref() == Some(host)) {
        return Ok(Err(format!("node route {addr}/32 dev {host} is missing")));
    }
    let Some(pod_link) = link(Some(netns), ifname)? else {
        return Ok(Err(format!(
            "interface {ifname} is missing in {}",
            netns.display()
        )));
    };
    if !pod_link.flags.iter().any(|f| f == "UP") {
        return Ok(Err(format!("interface {ifname} is down")));
    }
    let addrs: Vec<AddrJson> = parse(
        "ip -j addr show",
        &ip_in(netns, &["-j", "-4", "addr", "show", "dev", ifname])?,
    )?;
    let has_addr = addrs
        .iter()
        .flat_map(|a| &a.addr_info)
        .any(|i| i.local == addr.to_string() && i.prefixlen == 32);
    if !has_addr {
        return Ok(Err(format!("address {addr}/32 is missing on {ifname}")));
    }
    let routes: Vec<RouteJson> = parse(
        "ip -j route show",
        &ip_in(netns, &["-j", "-4", "route", "show"])?,
    )?;
    let default_ok = routes.iter().any(|r| {
        r.dst == "default"
            && r.gateway.as_deref() == Some(&GATEWAY.to_string())
            && r.dev.as_deref() == Some(ifname)
    });
    if !default_ok {
        return Ok(Err(format!(
            "default route via {GATEWAY} dev {ifname} is missing"
        )));
    }
    Ok(Ok(()))
}
