//! A device in its own process (`mesh-wg`), driven over its UAPI socket:
//! what the node-agent runs, so the tunnel outlives the agent. An agent
//! killed, crashed or upgraded leaves the device running with its key,
//! peers, sessions and counters; the next agent attaches to it on the same
//! socket instead of starting another, and traffic never stops.
//!
//! [`DeviceProcess::attach_or_start`] asks the socket first; only when no
//! device answers does it start the program (its own process group, so a
//! signal to the agent's group spares it; its log in a file of its own).
//! Everything after that is the standard UAPI (`get=1`, `set=1`), so the
//! device may as well have been started by someone else (a separate
//! container, a unit file) — the agent never needs to be its parent.
//!
//! What it is not for: the device itself ([`crate::Device`], which `mesh-wg`
//! runs), deciding peers (the agent's).

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mesh_api::WireGuardKey;

use crate::device::DeviceConfig;
use crate::error::{Error, Result};
use crate::key::{KeyStore, PrivateKey};
use crate::peers::{Change, PeerConfig, PeerStatus, PeerSync, plan_peers, screen_peers};
use crate::sys;
use crate::uapi::{self, DeviceInfo, PeerUpdate, SetRequest};

/// How long one UAPI request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a started device has to answer on its socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopped device has to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How to find or start the device.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// The device's settings (interface, port, socket directory, MTU,
    /// queues, offload), passed to the program when it is started.
    pub device: DeviceConfig,
    /// The device program (`mesh-wg`).
    pub program: PathBuf,
    /// State dir holding the private key: the program reads it at start,
    /// and rotations are persisted there before the device gets them.
    pub state_dir: PathBuf,
    /// Where a started program writes its log (appended).
    pub log: PathBuf,
    /// Start the program when no device answers. False: the device is run
    /// by someone else (a container of its own) and is only attached to.
    pub start: bool,
}

/// Whether [`DeviceProcess::attach_or_start`] found a device or started one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A device was already answering on the socket (a previous agent's).
    Attached,
    /// No device answered: the program was started.
    Started,
}

/// A device running in another process, reached over its UAPI socket.
#[derive(Debug)]
pub struct DeviceProcess {
    uapi_path: PathBuf,
    ifname: String,
    listen_port: u16,
    pid: Option<u32>,
    origin: Origin,
    public_key: Mutex<WireGuardKey>,
    /// Our child, when we started it (reaped on stop).
    child: Mutex<Option<Child>>,
}

impl DeviceProcess {
    /// Attaches to the device answering on `<uapi_dir>/<ifname>.sock`, or
    /// starts `program` when none does. Either way the device ends up with
    /// `key` (the key store's, which is the truth) and listening on the
    /// configured port: a device left with another port is stopped and
    /// started again, since a running device cannot change it.
    pub fn attach_or_start(cfg: &ProcessConfig, key: &PrivateKey) -> Result<DeviceProcess> {
        let d = &cfg.device;
        let uapi_path = d.uapi_dir.join(format!("{}.sock", d.ifname));
        if let Ok((info, pid)) = get(&uapi_path) {
            let port_ok = d.listen_port == 0 || info.listen_port == d.listen_port;
            let found =
                DeviceProcess::new(&uapi_path, &d.ifname, &info, pid, Origin::Attached, None);
            if port_ok {
                tracing::info!(ifname = %d.ifname, pid, peers = info.peers.len(), "attached to the running WireGuard device");
                found.ensure_key(&info, key)?;
                return Ok(found);
            }
            tracing::warn!(ifname = %d.ifname, pid, running = info.listen_port, configured = d.listen_port, "the running WireGuard device listens on another port; restarting it");
            found.stop()?;
        }
        if !cfg.start {
            return Err(Error::DeviceProcess {
                program: cfg.program.clone(),
                reason: format!(
                    "no device answers on {} and starting one is off (the device is run elsewhere, e.g. the chart's wireguard container): check that it runs",
                    uapi_path.display()
                ),
            });
        }
        DeviceProcess::start(cfg, &uapi_path, key)
    }

    fn new(
        uapi_path: &Path,
        ifname: &str,
        info: &DeviceInfo,
        pid: Option<u32>,
        origin: Origin,
        child: Option<Child>,
    ) -> DeviceProcess {
        let public = info
            .private_key
            .map(|k| PrivateKey::from_bytes(k).public_key())
            .unwrap_or_else(|| WireGuardKey::from_bytes([0; 32]));
        DeviceProcess {
            uapi_path: uapi_path.to_path_buf(),
            ifname: ifname.to_string(),
            listen_port: info.listen_port,
            pid,
            origin,
            public_key: Mutex::new(public),
            child: Mutex::new(child),
        }
    }

    fn start(cfg: &ProcessConfig, uapi_path: &Path, key: &PrivateKey) -> Result<DeviceProcess> {
        let d = &cfg.device;
        let fail = |reason: String| Error::DeviceProcess {
            program: cfg.program.clone(),
            reason,
        };
        if !cfg.program.exists() {
            return Err(fail(
                "not found: install it beside the node-agent (it is built with it: `cargo build --workspace --bins`) or name it with --wireguard-device-program".to_string(),
            ));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cfg.log)
            .map_err(|e| fail(format!("open log {}: {e}", cfg.log.display())))?;
        let mut cmd = Command::new(&cfg.program);
        cmd.arg(format!("--ifname={}", d.ifname))
            .arg(format!("--port={}", d.listen_port))
            .arg(format!("--uapi-dir={}", d.uapi_dir.display()))
            .arg(format!("--state-dir={}", cfg.state_dir.display()))
            .arg(format!("--mtu={}", d.mtu))
            .arg(format!("--queues={}", d.queues));
        if !d.offload {
            cmd.arg("--no-offload");
        }
        let err_log = log
            .try_clone()
            .map_err(|e| fail(format!("log {}: {e}", cfg.log.display())))?;
        // Its own process group: a signal to the agent's group (a terminal's
        // ^C, a supervisor killing the group) leaves the tunnel up.
        cmd.stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| fail(format!("start: {e}")))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok((info, pid)) = get(uapi_path) {
                tracing::info!(ifname = %d.ifname, pid, log = %cfg.log.display(), "started the WireGuard device process");
                let p = DeviceProcess::new(
                    uapi_path,
                    &d.ifname,
                    &info,
                    pid.or(Some(child.id())),
                    Origin::Started,
                    Some(child),
                );
                p.ensure_key(&info, key)?;
                return Ok(p);
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(fail(format!(
                    "exited ({status}) before answering on {}; its log {} ends with: {}",
                    uapi_path.display(),
                    cfg.log.display(),
                    log_tail(&cfg.log)
                )));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!(
                    "did not answer on {} within {START_TIMEOUT:?}; killed. Its log {} ends with: {}",
                    uapi_path.display(),
                    cfg.log.display(),
                    log_tail(&cfg.log)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Gives the device `key` unless it has it already (which would restart
    /// every session for nothing).
    fn ensure_key(&self, info: &DeviceInfo, key: &PrivateKey) -> Result<()> {
        if info.private_key.as_ref() != Some(key.as_bytes()) {
            tracing::info!(ifname = %self.ifname, "the device's key differs from the key store's; setting it");
            self.set_private_key(key)?;
        }
        Ok(())
    }

    /// Whether a running device was found (not started).
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// The interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The UDP port the device listens on.
    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }

    /// The device process, when visible from here.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The UAPI socket path.
    pub fn uapi_path(&self) -> &Path {
        &self.uapi_path
    }

    /// This device's public key.
    pub fn public_key(&self) -> WireGuardKey {
        *self.public_key.lock().expect("key lock")
    }

    /// Whether the device still answers on its socket.
    pub fn alive(&self) -> bool {
        if let Some(c) = self.child.lock().expect("child lock").as_mut()
            && matches!(c.try_wait(), Ok(Some(_)))
        {
            return false;
        }
        get(&self.uapi_path).is_ok()
    }

    /// Replaces the private key (sessions restart with the next packet).
    pub fn set_private_key(&self, key: &PrivateKey) -> Result<()> {
        set(
            &self.uapi_path,
            "private key change",
            &SetRequest {
                private_key: Some(*key.as_bytes()),
                ..SetRequest::default()
            },
        )?;
        *self.public_key.lock().expect("key lock") = key.public_key();
        Ok(())
    }

    /// Sets the fwmark of the device's UDP packets (0: none).
    pub fn set_fwmark(&self, mark: u32) -> Result<()> {
        set(
            &self.uapi_path,
            "fwmark change",
            &SetRequest {
                fwmark: Some(mark),
                ..SetRequest::default()
            },
        )
    }

    /// Generates a new key, persists it in `store`, then gives it to the
    /// device. Returns the new public key.
    pub fn rotate_key(&self, store: &KeyStore) -> Result<WireGuardKey> {
        let k = store.rotate()?;
        self.set_private_key(&k)?;
        Ok(k.public_key())
    }

    /// Every peer's state, sorted as the device reports them.
    pub fn peers(&self) -> Result<Vec<PeerStatus>> {
        let (info, _) = get(&self.uapi_path)?;
        Ok(info.peers.into_iter().map(|p| p.status).collect())
    }

    /// Makes the peer table equal to `desired` with the fewest changes, as
    /// [`crate::Device::apply_peers`] does, in one `set=1`: removals first,
    /// unchanged peers untouched (they keep their sessions).
    pub fn apply_peers(&self, desired: &[PeerConfig]) -> Result<PeerSync> {
        let mut sync = PeerSync::default();
        let (accepted, rejected) = screen_peers(&self.public_key(), desired);
        sync.rejected = rejected;
        for e in &sync.rejected {
            tracing::warn!(ifname = %self.ifname, error = %e, "peer refused");
        }
        let plan = plan_peers(&self.peers()?, &accepted);
        let mut req = SetRequest::default();
        for k in plan.remove {
            let mut up = PeerUpdate::new(*k.as_bytes());
            up.remove = true;
            req.peers.push(up);
            sync.removed.push(k);
        }
        for (change, p) in plan.upsert {
            match change {
                Change::Add => sync.added.push(p.public_key),
                Change::Update => sync.updated.push(p.public_key),
            }
            req.peers.push(PeerUpdate::replacing(p));
        }
        if !req.peers.is_empty() {
            set(&self.uapi_path, "peer changes", &req)?;
            tracing::info!(ifname = %self.ifname, added = sync.added.len(), updated = sync.updated.len(), removed = sync.removed.len(), rejected = sync.rejected.len(), "peers applied");
        }
        Ok(sync)
    }

    /// Stops the device: SIGTERM (it removes its TUN and socket), SIGKILL
    /// after [`STOP_TIMEOUT`]. A device whose process is not visible from
    /// here (another pid namespace) is emptied of peers instead, so it
    /// carries nothing.
    pub fn stop(self) -> Result<()> {
        let Some(pid) = self.pid else {
            tracing::warn!(ifname = %self.ifname, "the device process is not visible from here; removing its peers instead of stopping it");
            return set(
                &self.uapi_path,
                "removing every peer",
                &SetRequest {
                    replace_peers: true,
                    ..SetRequest::default()
                },
            );
        };
        let _ = sys::kill(pid, libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut child = self.child.lock().expect("child lock").take();
        loop {
            let gone = match child.as_mut() {
                Some(c) => matches!(c.try_wait(), Ok(Some(_))),
                None => !running(pid),
            };
            if gone {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(ifname = %self.ifname, pid, "the device did not stop on SIGTERM; killing it");
                let _ = sys::kill(pid, libc::SIGKILL);
                if let Some(c) = child.as_mut() {
                    let _ = c.wait();
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::info!(ifname = %self.ifname, pid, "WireGuard device process stopped");
        Ok(())
    }
}

/// Whether `pid` runs (exists and is not a zombie left to its parent).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        // The state follows the parenthesised command name.
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
    })
}

/// The last lines of a log file, for an error message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
    if tail.is_empty() {
        "(nothing)".to_string()
    } else {
        tail
    }
}

/// One request on a fresh connection: its answer and the pid serving it.
fn request(path: &Path, op: &'static str, text: &str) -> Result<(uapi::Answer, Option<u32>)> {
    let io = |step, source| Error::Uapi {
        path: path.to_path_buf(),
        op: step,
        source,
    };
    let conn = UnixStream::connect(path).map_err(|e| io("connect", e))?;
    conn.set_read_timeout(Some(REQUEST_TIMEOUT))
        .and_then(|()| conn.set_write_timeout(Some(REQUEST_TIMEOUT)))
        .map_err(|e| io("set timeouts", e))?;
    let pid = sys::peer_pid(conn.as_raw_fd()).unwrap_or(None);
    (&conn)
        .write_all(text.as_bytes())
        .map_err(|e| io("send", e))?;
    let mut answer = String::new();
    let mut r = BufReader::new(&conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).map_err(|e| io("read answer", e))? == 0 {
            return Err(io(
                "read answer",
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the device closed the connection during {op}"),
                ),
            ));
        }
        let done = line.starts_with("errno=");
        answer.push_str(&line);
        if done {
            break;
        }
    }
    let parsed = uapi::parse_answer(&answer)?;
    if parsed.errno != 0 {
        return Err(Error::UapiRefused {
            path: path.to_path_buf(),
            op,
            errno: parsed.errno,
        });
    }
    Ok((parsed, pid))
}

/// `get=1`: the device's state and its pid.
fn get(path: &Path) -> Result<(DeviceInfo, Option<u32>)> {
    let (answer, pid) = request(path, "get", "get=1\n\n")?;
    Ok((
        uapi::parse_get(answer.lines.iter().map(String::as_str))?,
        pid,
    ))
}

/// `set=1` of `req`.
fn set(path: &Path, op: &'static str, req: &SetRequest) -> Result<()> {
    request(path, op, &uapi::format_set(req)).map(|_| ())
}
