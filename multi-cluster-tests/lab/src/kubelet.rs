//! The lab's kubelet: one process per node (`mesh-lab kubelet`, started by
//! `mesh-lab up`, logging to `logs/<node>_kubelet.log`) that runs the Pods
//! bound to its node, whoever made them: `mesh-lab pod add`, or a
//! Deployment's ReplicaSet through the test API server's scheduler.
//!
//! A pod is a network namespace wired by the real mesh-cni plugin (invoked
//! exactly as a container runtime invokes it: CNI ADD when the pod appears,
//! CNI DEL and the namespace removed when it goes), running `mesh-echo
//! serve` in place of its containers; its status is written as a kubelet
//! writes it (IP, Running, then Ready once the server accepts connections
//! on its port), so the EndpointSlice controller, the Deployment's rollout
//! and the mesh-apiserver see it as they would see a real pod.
//!
//! What each node runs is recorded in `<cluster>/nodes/<node>/pods/`, so a
//! restarted kubelet picks its pods up again. [`plan`] decides what to
//! start, stop and report from the Pods and those records; [`Kubelet`] is
//! the I/O around it.
//!
//! What it is not: a container runtime. Every pod runs `mesh-echo` on port
//! 8080 whatever its image and command say; a server that dies is not
//! restarted; there is no graceful termination (the test API server removes
//! a deleted Pod at once, and the kubelet stops it when it sees that).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::bins::Bins;
use crate::control::ClusterFiles;
use crate::plan::{ClusterPlan, NodePlan};
use crate::up::{Lab, progress};

/// Port every lab pod serves on (TCP and UDP).
pub const POD_PORT: u16 = 8080;

/// The reference portmap plugin (Debian's containernetworking-plugins).
pub const PORTMAP: &str = "/usr/lib/cni/portmap";

/// A pod to create with `mesh-lab pod add`.
#[derive(Debug, Clone)]
pub struct PodSpec {
    /// Cluster name.
    pub cluster: String,
    /// Node name.
    pub node: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// The network namespace of pod `namespace/name` of `cluster` in lab `prefix`.
pub fn pod_netns(prefix: &str, cluster: &str, namespace: &str, name: &str) -> String {
    format!("{prefix}-pod-{cluster}-{namespace}-{name}")
}

/// A Pod bound to this node, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: String,
    /// It has a deletionTimestamp.
    pub terminating: bool,
    /// `status.podIP`.
    pub ip: Option<String>,
    /// Its Ready condition is True.
    pub ready: bool,
    /// Names of its containers (their statuses are reported).
    pub containers: Vec<(String, String)>,
    /// The port numbers its containers declare, sorted, each served on TCP
    /// and UDP by the echo server (none declared: [`POD_PORT`]).
    pub ports: Vec<u16>,
    /// Its `hostPort`s, for the portmap plugin chained after mesh-cni.
    pub host_ports: Vec<HostPort>,
}

/// One `hostPort` of a pod: the CNI `portMappings` runtime entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HostPort {
    /// The node's port.
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    /// The pod's.
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

impl Bound {
    /// From a Pod object.
    pub fn of(pod: &serde_json::Value) -> Option<Bound> {
        let s = |p: &str| pod.pointer(p).and_then(|v| v.as_str()).map(str::to_string);
        Some(Bound {
            namespace: s("/metadata/namespace")?,
            name: s("/metadata/name")?,
            uid: s("/metadata/uid")?,
            terminating: pod.pointer("/metadata/deletionTimestamp").is_some(),
            ip: s("/status/podIP").filter(|ip| !ip.is_empty()),
            ready: pod
                .pointer("/status/conditions")
                .and_then(|c| c.as_array())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                }),
            containers: pod
                .pointer("/spec/containers")
                .and_then(|c| c.as_array())
                .map(|cs| {
                    cs.iter()
                        .map(|c| {
                            let f = |k: &str| c[k].as_str().unwrap_or("").to_string();
                            (f("name"), f("image"))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            ports: {
                let mut ports: Vec<u16> = pod
                    .pointer("/spec/containers")
                    .and_then(|c| c.as_array())
                    .into_iter()
                    .flatten()
                    .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
                    .filter_map(|p| u16::try_from(p["containerPort"].as_u64()?).ok())
                    .collect();
                ports.sort_unstable();
                ports.dedup();
                if ports.is_empty() {
                    ports.push(POD_PORT);
                }
                ports
            },
            host_ports: {
                let mut hp: Vec<HostPort> = pod
                    .pointer("/spec/containers")
                    .and_then(|c| c.as_array())
                    .into_iter()
                    .flatten()
                    .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
                    .filter_map(|p| {
                        Some(HostPort {
                            host_port: u16::try_from(p["hostPort"].as_u64()?).ok()?,
                            container_port: u16::try_from(p["containerPort"].as_u64()?).ok()?,
                            protocol: p["protocol"].as_str().unwrap_or("TCP").to_lowercase(),
                        })
                    })
                    .collect();
                hp.sort();
                hp.dedup();
                hp
            },
        })
    }
}

/// A pod this kubelet runs: its record on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The uid of the Pod it runs.
    pub uid: String,
    /// Its address, once CNI ADD gave one.
    pub ip: Option<String>,
    /// Its hostPorts (portmap's DEL needs them again).
    #[serde(default)]
    pub host_ports: Vec<HostPort>,
}

/// What the kubelet does for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run it: namespace, CNI ADD, echo server, status.
    Start(Bound),
    /// Remove it: echo server, CNI DEL, namespace, record.
    Stop(Running),
    /// It runs but its status does not say so (a restarted kubelet, a pod
    /// that was not Ready yet): check it answers, write the status.
    Report(Bound, String),
}

/// Decides what to do, given the Pods bound to this node and the pods it
/// runs. Stops come first: a pod deleted and made again under the same name
/// (another uid) needs its namespace back.
pub fn plan(bound: &[Bound], running: &[Running]) -> Vec<Action> {
    let mut out = Vec::new();
    for r in running {
        let wanted = bound.iter().any(|b| {
            b.uid == r.uid && b.namespace == r.namespace && b.name == r.name && !b.terminating
        });
        if !wanted {
            out.push(Action::Stop(r.clone()));
        }
    }
    for b in bound.iter().filter(|b| !b.terminating) {
        match running
            .iter()
            .find(|r| r.namespace == b.namespace && r.name == b.name && r.uid == b.uid)
        {
            None => out.push(Action::Start(b.clone())),
            Some(Running { ip: Some(ip), .. }) if !b.ready || b.ip.as_ref() != Some(ip) => {
                out.push(Action::Report(b.clone(), ip.clone()));
            }
            Some(_) => {}
        }
    }
    out
}

/// The kubelet of one node.
#[derive(Debug, Clone)]
pub struct Kubelet {
    prefix: String,
    cluster: ClusterPlan,
    node: NodePlan,
    files: ClusterFiles,
    bins: Bins,
    logs: PathBuf,
}

impl Kubelet {
    /// The kubelet of `node` in the lab recorded in `lab`.
    pub fn new(lab: &Lab, node: &str, bins: Bins) -> anyhow::Result<Kubelet> {
        let cluster = lab
            .plan
            .clusters
            .iter()
            .find(|c| c.nodes.iter().any(|n| n.name.as_str() == node))
            .with_context(|| format!("no node {node} in this lab; see `mesh-lab status`"))?
            .clone();
        let node = cluster
            .nodes
            .iter()
            .find(|n| n.name.as_str() == node)
            .expect("found above")
            .clone();
        Ok(Kubelet {
            prefix: lab.plan.prefix.clone(),
            files: ClusterFiles::new(&lab.dir, &cluster),
            cluster,
            node,
            bins,
            logs: lab.dir.join("logs"),
        })
    }

    /// The cluster of its node.
    pub fn cluster(&self) -> &ClusterPlan {
        &self.cluster
    }

    fn pods_dir(&self) -> PathBuf {
        self.files.node_dir(self.node.name.as_str()).join("pods")
    }

    /// The file `mesh-lab up` waits for: the kubelet watches its Pods.
    pub fn ready_file(files: &ClusterFiles, node: &str) -> PathBuf {
        files.node_dir(node).join("kubelet.ready")
    }

    fn record_path(&self, namespace: &str, name: &str) -> PathBuf {
        self.pods_dir().join(format!("{namespace}_{name}.json"))
    }

    fn netns(&self, namespace: &str, name: &str) -> String {
        pod_netns(&self.prefix, self.cluster.name.as_str(), namespace, name)
    }

    /// The pods recorded as running on this node.
    pub fn running(&self) -> Vec<Running> {
        let Ok(dir) = std::fs::read_dir(self.pods_dir()) else {
            return Vec::new();
        };
        dir.flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect()
    }

    fn save(&self, r: &Running) -> anyhow::Result<()> {
        std::fs::create_dir_all(self.pods_dir())?;
        let path = self.record_path(&r.namespace, &r.name);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(r)?)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    fn cni(&self, command: &str, namespace: &str, name: &str) -> anyhow::Result<serde_json::Value> {
        let node_dir = self.files.node_dir(self.node.name.as_str());
        let conf = json!({
            "cniVersion": "1.0.0", "name": "meshwork", "type": "mesh-cni",
            "agentSocket": node_dir.join("agent.sock"), "stateDir": node_dir.join("state"),
            "podCIDR": self.node.pod_cidr.to_string(),
        });
        let plugin = self.bins.ours("mesh-cni")?;
        self.run_plugin(&plugin, command, namespace, name, &conf)
    }

    /// The reference portmap plugin, chained after mesh-cni as the chart's
    /// conflist does (`prev` is mesh-cni's result on ADD).
    fn portmap(
        &self,
        command: &str,
        namespace: &str,
        name: &str,
        host_ports: &[HostPort],
        prev: Option<&serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let mut conf = json!({
            "cniVersion": "1.0.0", "name": "meshwork", "type": "portmap", "snat": true,
            "runtimeConfig": {"portMappings": host_ports},
        });
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        self.run_plugin(Path::new(PORTMAP), command, namespace, name, &conf)
    }

    fn run_plugin(
        &self,
        plugin: &Path,
        command: &str,
        namespace: &str,
        name: &str,
        conf: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        anyhow::ensure!(
            plugin.exists(),
            "CNI plugin {} is missing (scripts/setup.sh installs containernetworking-plugins)",
            plugin.display()
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.node.ns])
            .arg(plugin)
            .env("CNI_COMMAND", command)
            .env(
                "CNI_CONTAINERID",
                format!("{}-{namespace}-{name}", self.cluster.name),
            )
            .env(
                "CNI_NETNS",
                crate::netns::netns_path(&self.netns(namespace, name)),
            )
            .env("CNI_IFNAME", "eth0")
            .env(
                "CNI_ARGS",
                format!("K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name}"),
            )
            .env("CNI_PATH", plugin.parent().unwrap_or(Path::new("/")))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(conf.to_string().as_bytes())?;
        let out = child.wait_with_output()?;
        let stdout: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(json!({}));
        anyhow::ensure!(
            out.status.success(),
            "{} {command} for pod {namespace}/{name} on {}: {} {}",
            plugin.file_name().unwrap_or_default().to_string_lossy(),
            self.node.name,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(stdout)
    }

    /// Namespace, CNI ADD, echo server; returns the pod's address.
    fn set_up(&self, b: &Bound) -> anyhow::Result<String> {
        let ns = self.netns(&b.namespace, &b.name);
        // Recorded before anything exists, so a crash half-way is cleaned up.
        let mut record = Running {
            namespace: b.namespace.clone(),
            name: b.name.clone(),
            uid: b.uid.clone(),
            ip: None,
            host_ports: Vec::new(),
        };
        self.save(&record)?;
        let added = mesh_testbed::run("ip", &["netns", "add", &ns]);
        anyhow::ensure!(
            added.status.success(),
            "create network namespace {ns}: {}",
            String::from_utf8_lossy(&added.stderr).trim()
        );
        mesh_testbed::run_ok("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        let result = self.cni("ADD", &b.namespace, &b.name)?;
        if !b.host_ports.is_empty() {
            record.host_ports = b.host_ports.clone();
            self.save(&record)?;
            self.portmap("ADD", &b.namespace, &b.name, &b.host_ports, Some(&result))?;
        }
        let ip = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .with_context(|| format!("mesh-cni returned no address: {result}"))?
            .to_string();
        record.ip = Some(ip.clone());
        self.save(&record)?;
        self.spawn_echo(b, &ns)?;
        Ok(ip)
    }

    /// Starts `mesh-echo serve` in the pod's namespace (not recorded in the
    /// lab's state: `down` kills whatever runs in a lab namespace).
    fn spawn_echo(&self, b: &Bound, ns: &str) -> anyhow::Result<()> {
        use std::os::unix::process::CommandExt as _;
        let log = self.logs.join(format!(
            "{}_pod-{}-{}.log",
            self.cluster.name, b.namespace, b.name
        ));
        let out = std::fs::File::create(&log)?;
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", crate::netns::netns_path(ns).display()))
            .arg("--")
            .arg(self.bins.ours("mesh-echo")?)
            .arg("serve")
            .args(b.ports.iter().map(|p| format!("--port={p}")))
            .args([
                format!("--pod={}/{}", b.namespace, b.name),
                format!("--node={}", self.node.name),
                format!("--cluster={}", self.cluster.name),
            ])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .context("start mesh-echo")?;
        // Reaped here; it lives on if this kubelet is restarted.
        std::thread::spawn(move || child.wait());
        Ok(())
    }

    /// Whether the pod's server accepts a connection on its port (from
    /// inside its namespace, as a kubelet's TCP probe would).
    fn probe(&self, namespace: &str, name: &str, port: u16, timeout: Duration) -> bool {
        let ns = self.netns(namespace, name);
        let probe = std::thread::spawn(move || {
            if crate::netns::enter(&ns).is_err() {
                return false;
            }
            let deadline = Instant::now() + timeout;
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            loop {
                if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return true;
                }
                if Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        probe.join().unwrap_or(false)
    }

    /// Echo server, CNI DEL, namespace, record.
    fn tear_down(&self, r: &Running) -> anyhow::Result<()> {
        let ns = self.netns(&r.namespace, &r.name);
        let pids = mesh_testbed::run("ip", &["netns", "pids", &ns]);
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            let _ = mesh_testbed::run("kill", &["-9", pid]);
        }
        let unmapped = if r.host_ports.is_empty() {
            Ok(json!({}))
        } else {
            self.portmap("DEL", &r.namespace, &r.name, &r.host_ports, None)
        };
        let del = self.cni("DEL", &r.namespace, &r.name);
        let _ = mesh_testbed::run("ip", &["netns", "del", &ns]);
        unmapped?;
        // The namespace is gone either way; a failed DEL is reported, and
        // the record kept only when the agent may still hold the endpoint.
        del?;
        let _ = std::fs::remove_file(self.record_path(&r.namespace, &r.name));
        Ok(())
    }

    fn status(&self, b: &Bound, ip: &str, ready: bool) -> serde_json::Value {
        let now = now_rfc3339();
        let cond = |ty: &str, ok: bool| json!({"type": ty, "status": if ok { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": now});
        let containers: Vec<serde_json::Value> = b
            .containers
            .iter()
            .map(|(name, image)| {
                json!({"name": name, "image": image, "imageID": "", "ready": ready, "started": true,
                    "restartCount": 0, "state": {"running": {"startedAt": now}}})
            })
            .collect();
        json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "hostIP": self.node.ip.to_string(), "hostIPs": [{"ip": self.node.ip.to_string()}], "startTime": now,
            "conditions": [cond("PodReadyToStartContainers", true), cond("Initialized", true),
                cond("Ready", ready), cond("ContainersReady", ready), cond("PodScheduled", true)],
            "containerStatuses": containers}})
    }

    async fn write_status(&self, pods: &Api<Pod>, b: &Bound, ip: &str, ready: bool) {
        let api: Api<Pod> = Api::namespaced(pods.clone().into_client(), &b.namespace);
        let status = self.status(b, ip, ready);
        if let Err(e) = api
            .patch_status(&b.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            progress(&format!("status of {}/{}: {e}", b.namespace, b.name));
        }
    }

    /// Runs one action; errors are logged and the action is retried on the
    /// next pass.
    async fn act(self: Arc<Self>, pods: Api<Pod>, action: Action) {
        match action {
            Action::Start(b) => {
                let me = self.clone();
                let pod = b.clone();
                let started = tokio::task::spawn_blocking(move || match me.set_up(&pod) {
                    Ok(ip) => Ok(ip),
                    Err(e) => {
                        // Leave nothing half made: the next pass starts afresh.
                        let record = Running {
                            namespace: pod.namespace.clone(),
                            name: pod.name.clone(),
                            uid: pod.uid.clone(),
                            ip: None,
                            host_ports: pod.host_ports.clone(),
                        };
                        let _ = me.tear_down(&record);
                        let _ = std::fs::remove_file(me.record_path(&pod.namespace, &pod.name));
                        Err(e)
                    }
                })
                .await;
                match started {
                    Ok(Ok(ip)) => {
                        progress(&format!(
                            "pod {}/{} on {}: {ip}",
                            b.namespace, b.name, self.node.name
                        ));
                        self.write_status(&pods, &b, &ip, false).await;
                        self.clone().report(pods, b, ip).await;
                    }
                    Ok(Err(e)) => progress(&format!("start {}/{}: {e:#}", b.namespace, b.name)),
                    Err(e) => progress(&format!("start {}/{}: {e}", b.namespace, b.name)),
                }
            }
            Action::Stop(r) => {
                let me = self.clone();
                let what = format!("{}/{}", r.namespace, r.name);
                match tokio::task::spawn_blocking(move || me.tear_down(&r)).await {
                    Ok(Ok(())) => progress(&format!("pod {what} removed from {}", self.node.name)),
                    Ok(Err(e)) => progress(&format!("stop {what}: {e:#}")),
                    Err(e) => progress(&format!("stop {what}: {e}")),
                }
            }
            Action::Report(b, ip) => self.report(pods, b, ip).await,
        }
    }

    /// Waits until the pod answers on its port, then reports it Ready
    /// (unless it already says so: the watch may lag our own writes).
    async fn report(self: Arc<Self>, pods: Api<Pod>, b: Bound, ip: String) {
        let me = self.clone();
        let (ns, name) = (b.namespace.clone(), b.name.clone());
        let port = b.ports.first().copied().unwrap_or(POD_PORT);
        let answers = tokio::task::spawn_blocking(move || {
            me.probe(&ns, &name, port, Duration::from_secs(10))
        })
        .await
        .unwrap_or(false);
        let api: Api<Pod> = Api::namespaced(pods.clone().into_client(), &b.namespace);
        let current = api
            .get_opt(&b.name)
            .await
            .ok()
            .flatten()
            .and_then(|p| Bound::of(&serde_json::to_value(p).ok()?));
        match current {
            // Gone, or another pod of that name: the next pass sees it.
            None => {}
            Some(c) if c.uid != b.uid => {}
            Some(c) if c.ready && c.ip.as_deref() == Some(ip.as_str()) => {}
            Some(_) if answers => self.write_status(&pods, &b, &ip, true).await,
            Some(_) => progress(&format!(
                "pod {}/{} does not answer on port {port} yet",
                b.namespace, b.name
            )),
        }
    }

    /// Watches the Pods bound to this node and keeps what runs equal to
    /// them, until killed.
    pub async fn run(self, client: kube::Client) -> anyhow::Result<()> {
        let me = Arc::new(self);
        let pods: Api<Pod> = Api::all(client);
        let config = watcher::Config::default().fields(&format!("spec.nodeName={}", me.node.name));
        let (reader, writer) = reflector::store();
        let changed = Arc::new(tokio::sync::Notify::new());
        let notify = changed.clone();
        let stream = watcher(pods.clone(), config)
            .default_backoff()
            .reflect(writer);
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                if let Err(e) = ev {
                    progress(&format!("watch: {e}"));
                }
                notify.notify_one();
            }
        });
        reader
            .wait_until_ready()
            .await
            .context("the Pod watch did not start")?;
        let ready = Self::ready_file(&me.files, me.node.name.as_str());
        std::fs::write(&ready, b"watching\n")
            .with_context(|| format!("write {}", ready.display()))?;
        progress(&format!(
            "kubelet of {} watching its pods ({} running)",
            me.node.name,
            me.running().len()
        ));
        loop {
            let bound: Vec<Bound> = reader
                .state()
                .iter()
                .filter_map(|p| Bound::of(&serde_json::to_value(p.as_ref()).ok()?))
                .collect();
            let actions = plan(&bound, &me.running());
            let (stops, others): (Vec<Action>, Vec<Action>) = actions
                .into_iter()
                .partition(|a| matches!(a, Action::Stop(_)));
            for a in stops {
                me.clone().act(pods.clone(), a).await;
            }
            futures::future::join_all(others.into_iter().map(|a| me.clone().act(pods.clone(), a)))
                .await;
            // A change, or a periodic pass that retries what failed.
            let _ = tokio::time::timeout(Duration::from_secs(2), changed.notified()).await;
        }
    }
}

/// Now, as Kubernetes writes times (RFC 3339, seconds, UTC).
fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

impl Lab {
    /// Creates Kubernetes namespace `name` in `cluster` when missing.
    pub async fn ensure_namespace(&self, cluster: &str, name: &str) -> anyhow::Result<()> {
        let c = self
            .plan
            .cluster(cluster)
            .with_context(|| format!("no cluster {cluster} in this lab"))?;
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client(c).await?);
        if api.get_opt(name).await?.is_none() {
            let ns = serde_json::from_value(json!({"metadata": {"name": name}}))?;
            api.create(&PostParams::default(), &ns)
                .await
                .with_context(|| format!("create namespace {name}"))?;
        }
        Ok(())
    }

    fn node_of(&self, cluster: &str, node: &str) -> anyhow::Result<(ClusterPlan, NodePlan)> {
        let c = self
            .plan
            .cluster(cluster)
            .with_context(|| format!("no cluster {cluster} in this lab"))?
            .clone();
        let n = c
            .nodes
            .iter()
            .find(|n| n.name.as_str() == node)
            .with_context(|| {
                let names: Vec<&str> = c.nodes.iter().map(|n| n.name.as_str()).collect();
                format!(
                    "no node {node} in cluster {cluster}; nodes: {}",
                    names.join(", ")
                )
            })?
            .clone();
        Ok((c, n))
    }

    /// Creates a Pod bound to `spec.node` and waits until that node's
    /// kubelet runs it and reports it Ready; returns its IP.
    pub async fn add_pod(&self, spec: &PodSpec) -> anyhow::Result<String> {
        let (c, node) = self.node_of(&spec.cluster, &spec.node)?;
        self.ensure_namespace(&spec.cluster, &spec.namespace)
            .await?;
        let pods: Api<Pod> = Api::namespaced(self.client(&c).await?, &spec.namespace);
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": spec.labels},
            "spec": {"nodeName": spec.node, "containers": [{"name": "echo", "image": "mesh-echo",
                "ports": [{"name": "echo", "containerPort": POD_PORT, "protocol": "TCP"}, {"name": "echo-udp", "containerPort": POD_PORT, "protocol": "UDP"}]}]},
        }))?;
        pods.create(&PostParams::default(), &pod)
            .await
            .with_context(|| format!("create Pod {}/{}", spec.namespace, spec.name))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(p) = pods.get_opt(&spec.name).await?
                && let Some(b) = serde_json::to_value(&p).ok().as_ref().and_then(Bound::of)
                && b.ready
                && let Some(ip) = b.ip
            {
                progress(&format!(
                    "pod {}/{} on {} ({}): {ip}",
                    spec.namespace, spec.name, spec.node, spec.cluster
                ));
                return Ok(ip);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "pod {}/{} is not Ready after 60 s; see the kubelet's log {}",
                spec.namespace,
                spec.name,
                self.log_of(&format!("{}/kubelet", node.name)).display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Deletes a Pod and waits until its node's kubelet has removed it
    /// (echo server, CNI DEL, namespace).
    pub async fn delete_pod(&self, spec: &PodSpec) -> anyhow::Result<()> {
        let (c, node) = self.node_of(&spec.cluster, &spec.node)?;
        let pods: Api<Pod> = Api::namespaced(self.client(&c).await?, &spec.namespace);
        match pods.delete(&spec.name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(anyhow::Error::from(e)
                    .context(format!("delete Pod {}/{}", spec.namespace, spec.name)));
            }
        }
        let ns = pod_netns(
            &self.plan.prefix,
            &spec.cluster,
            &spec.namespace,
            &spec.name,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while crate::netns::netns_path(&ns).exists() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "pod {}/{} still runs 30 s after its deletion; see the kubelet's log {}",
                spec.namespace,
                spec.name,
                self.log_of(&format!("{}/kubelet", node.name)).display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Starts one kubelet per node and waits until each watches its Pods.
    pub fn start_kubelets(&mut self) -> anyhow::Result<()> {
        let exe = std::env::current_exe()?;
        let dir = std::fs::canonicalize(&self.dir)?;
        for c in self.plan.clusters.clone() {
            let files = ClusterFiles::new(&self.dir, &c);
            for n in &c.nodes {
                let ready = Kubelet::ready_file(&files, n.name.as_str());
                let _ = std::fs::remove_file(&ready);
                let args = vec![
                    format!("--state-dir={}", dir.display()),
                    "kubelet".to_string(),
                    format!("--lab={}", self.plan.prefix),
                    format!("--node={}", n.name),
                ];
                self.spawn(&format!("{}/kubelet", n.name), None, &exe, &args, &[])?;
            }
        }
        for c in self.plan.clusters.clone() {
            let files = ClusterFiles::new(&self.dir, &c);
            for n in &c.nodes {
                crate::up::wait_for_file(
                    &Kubelet::ready_file(&files, n.name.as_str()),
                    Duration::from_secs(30),
                )
                .with_context(|| {
                    format!(
                        "the kubelet of {} did not start; see {}",
                        n.name,
                        self.log_of(&format!("{}/kubelet", n.name)).display()
                    )
                })?;
            }
            progress(&format!("cluster {}: kubelets running", c.name));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
