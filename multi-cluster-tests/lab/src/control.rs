//! Each cluster's control plane and nodes, installed the way a platform
//! engineer installs Meshwork: a Kubernetes API (the test double), etcd, the
//! chart's configuration applied through the API, the mesh CA in a Secret,
//! then the real mesh-apiserver and one real node-agent per node, started
//! with the chart's ConfigMaps as their `--config-dir`.
//!
//! The lab plays the parts Kubernetes would: the kubelet (Node objects, and
//! one `mesh-lab kubelet` per node running the Pods bound to it, see
//! [`crate::kubelet`]) and the cloud's load balancer (the
//! mesh-apiserver Service gets the control namespace's address as its
//! load-balancer ingress, so `meshctl connect` finds it as on a cloud).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use mesh_certs::{CaDirectory, SpiffeId, TrustDomain, Validity};
use serde_json::json;

use crate::bins::Bins;
use crate::plan::{ClusterPlan, KUBE_API_PORT, MESH_API_PORT};
use crate::up::{Lab, progress, wait_for_file, wait_for_path};

/// Namespace Meshwork is installed in, in every lab cluster.
pub const NAMESPACE: &str = "meshwork-system";
/// The Secret keys the lab projects into files, as the chart mounts them:
/// the mesh-apiserver reads `meshwork-apiserver-tls`, the node-agents
/// `meshwork-node-agent-tls`; `meshwork-ca` is kept as the CA directory.
pub const TLS_PROJECTIONS: [(&str, &[&str]); 3] = [
    ("meshwork-ca", &["ca.crt", "ca.key", "bundle.crt"]),
    ("meshwork-apiserver-tls", &["tls.crt", "tls.key", "ca.crt"]),
    ("meshwork-node-agent-tls", &["tls.crt", "tls.key", "ca.crt"]),
];
/// Field manager for what the lab applies.
const MANAGER: &str = "mesh-lab";

/// Files of one cluster under the state dir.
#[derive(Debug, Clone)]
pub struct ClusterFiles {
    /// `<state>/<cluster>`.
    pub dir: PathBuf,
}

impl ClusterFiles {
    /// The files of cluster `c`.
    pub fn new(lab_dir: &Path, c: &ClusterPlan) -> ClusterFiles {
        ClusterFiles {
            dir: lab_dir.join(c.name.as_str()),
        }
    }
    /// The CA directory.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca")
    }
    /// Certificates issued from it.
    pub fn tls(&self) -> PathBuf {
        self.dir.join("tls")
    }
    /// What the kubelet would mount from Secret `secret`, key `key` (the
    /// TLS Secrets the processes read; see [`TLS_PROJECTIONS`]).
    pub fn projected(&self, secret: &str, key: &str) -> PathBuf {
        match secret {
            "meshwork-ca" => self.ca().join(key),
            _ => self.tls().join(secret).join(key),
        }
    }
    /// Kubeconfig for processes inside the lab (server = control IP).
    pub fn inner_kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }
    /// The chart's ConfigMap `name` as a config directory.
    pub fn config_dir(&self, name: &str) -> PathBuf {
        self.dir.join("config").join(name)
    }
    /// A node's state directory.
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.dir.join("nodes").join(node)
    }
}

impl Lab {
    /// Per cluster: CA and certificates, etcd and the test API server in the
    /// control namespace; then host forwarders and the merged kubeconfig.
    pub fn start_apis(&mut self, bins: &Bins) -> anyhow::Result<()> {
        for c in self.plan.clusters.clone() {
            let files = ClusterFiles::new(&self.dir, &c);
            std::fs::create_dir_all(&files.dir)?;
            progress(&format!("cluster {}: mesh CA and certificates", c.name));
            issue_certs(&files, &c, self.plan.cert_lifetime_seconds)?;
            progress(&format!(
                "cluster {}: etcd and Kubernetes API in {}",
                c.name, c.control_ns
            ));
            let etcd_dir = files.dir.join("etcd");
            let etcd_args: Vec<String> = [
                format!("--data-dir={}", etcd_dir.display()),
                "--name=lab".into(),
                "--listen-client-urls=http://127.0.0.1:2379".into(),
                "--advertise-client-urls=http://127.0.0.1:2379".into(),
                "--listen-peer-urls=http://127.0.0.1:2380".into(),
                "--initial-advertise-peer-urls=http://127.0.0.1:2380".into(),
                "--initial-cluster=lab=http://127.0.0.1:2380".into(),
                "--log-level=warn".into(),
            ]
            .into();
            self.spawn(
                &format!("{}/etcd", c.name),
                Some(&c.control_ns),
                &bins.etcd()?,
                &etcd_args,
                &[],
            )?;
            let ready = files.dir.join("kube.ready");
            let _ = std::fs::remove_file(&ready);
            let api_args = vec![
                format!("--listen={}:{KUBE_API_PORT}", c.control_ip),
                format!("--service-cidr={}", c.service_cidr),
                format!("--kubeconfig-out={}", files.inner_kubeconfig().display()),
                format!("--context={}", c.context),
                format!("--ready-file={}", ready.display()),
                "--tls-san=127.0.0.1".into(),
            ];
            self.spawn(
                &format!("{}/kube-apiserver", c.name),
                Some(&c.control_ns),
                &bins.ours("mesh-test-apiserver")?,
                &api_args,
                &[],
            )?;
            wait_for_file(&ready, Duration::from_secs(30)).with_context(|| {
                format!(
                    "cluster {}: the test API server did not start; see {}",
                    c.name,
                    self.log_of(&format!("{}/kube-apiserver", c.name)).display()
                )
            })?;
        }
        self.forward_kube_apis(&std::env::current_exe()?)?;
        self.write_host_kubeconfig()
    }

    /// Path of a role's log.
    pub fn log_of(&self, role: &str) -> PathBuf {
        self.dir
            .join("logs")
            .join(format!("{}.log", role.replace('/', "_")))
    }

    /// The kubeconfig for people and meshctl: one context per cluster,
    /// through the host-loopback forwarders.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    fn write_host_kubeconfig(&self) -> anyhow::Result<()> {
        let mut merged = json!({"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": [],
            "current-context": self.plan.clusters[0].context});
        for c in &self.plan.clusters {
            let files = ClusterFiles::new(&self.dir, c);
            let text = std::fs::read_to_string(files.inner_kubeconfig())?;
            let mut kc: serde_json::Value = serde_yaml::from_str(&text)?;
            let port = self.state.kube_api_ports[c.name.as_str()];
            for cl in kc["clusters"]
                .as_array_mut()
                .context("kubeconfig without clusters")?
            {
                cl["cluster"]["server"] = json!(format!("https://127.0.0.1:{port}"));
            }
            for key in ["clusters", "users", "contexts"] {
                let items = kc[key].as_array().cloned().unwrap_or_default();
                merged[key].as_array_mut().expect("array").extend(items);
            }
        }
        let path = self.kubeconfig();
        std::fs::write(&path, serde_yaml::to_string(&merged)?)?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(())
    }

    /// A client for cluster `c` through the host kubeconfig.
    pub async fn client(&self, c: &ClusterPlan) -> anyhow::Result<kube::Client> {
        let kc = kube::config::Kubeconfig::read_from(self.kubeconfig())?;
        let opts = kube::config::KubeConfigOptions {
            context: Some(c.context.clone()),
            ..Default::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kc, &opts).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Installs each cluster's Meshwork configuration (the chart's rendered
    /// ConfigMaps, the CA Secret, the mesh-apiserver Service) and its Nodes.
    pub async fn install(&self) -> anyhow::Result<()> {
        for c in &self.plan.clusters {
            progress(&format!(
                "cluster {}: installing Meshwork's configuration (chart values: cluster {}, id {}, encryption {})",
                c.name, c.name, c.id, self.plan.encryption
            ));
            let client = self.client(c).await?;
            let files = ClusterFiles::new(&self.dir, c);
            let mut values = json!({
                "cluster": {"name": c.name.as_str(), "id": c.id.get()},
                "ipam": {"podCIDR": c.pod_cidr.to_string()},
                "encryption": {"enabled": self.plan.encryption},
                "clustermesh": {"apiserver": {"service": {"type": "LoadBalancer"}}},
                "lbIPAM": {"pools": [{"name": "lab", "cidrs": [crate::plan::lb_pool(c.id.get()).to_string()]}]},
            });
            if let Some(t) = self.plan.stale_timeout_seconds {
                values["clustermesh"]["apiserver"]["staleTimeout"] = json!(t);
            }
            if let Some(t) = self.plan.cert_lifetime_seconds {
                values["clustermesh"]["apiserver"]["tls"]["certLifetimeSeconds"] = json!(t);
            }
            for (path, value) in &self.plan.values {
                crate::plan::set_value(&mut values, path, value.clone());
            }
            let objects = mesh_chart::render(&values)
                .map_err(|e| anyhow::anyhow!("render the chart for {}: {e}", c.name))?;
            let ns: Api<Namespace> = Api::all(client.clone());
            apply(
                &ns,
                NAMESPACE,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
            )
            .await?;
            // The policy CRDs, as the chart ships them (node-agents watch them).
            let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
            let mut shipped = 0;
            for o in objects
                .iter()
                .filter(|o| o.kind == "CustomResourceDefinition")
            {
                apply(&crds, &o.name, o.value.clone()).await?;
                shipped += 1;
            }
            anyhow::ensure!(
                shipped > 0,
                "the chart rendered no CustomResourceDefinition"
            );
            let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
            for name in ["meshwork-config", "mesh-apiserver-config"] {
                let o = objects
                    .iter()
                    .find(|o| o.kind == "ConfigMap" && o.name == name)
                    .with_context(|| format!("the chart rendered no ConfigMap {name}"))?;
                apply(&cms, name, o.value.clone()).await?;
                write_config_dir(
                    &files.config_dir(name),
                    &mesh_chart::config_map(&objects, name),
                )?;
            }
            let svcs: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
            let svc = objects
                .iter()
                .find(|o| o.kind == "Service" && o.name == "mesh-apiserver")
                .context("the chart rendered no mesh-apiserver Service")?;
            apply(&svcs, "mesh-apiserver", svc.value.clone()).await?;
            let lb = json!({"status": {"loadBalancer": {"ingress": [{"ip": c.control_ip.to_string()}]}}});
            svcs.patch_status(
                "mesh-apiserver",
                &PatchParams::default(),
                &Patch::Merge(&lb),
            )
            .await
            .context("set the mesh-apiserver Service's load-balancer address")?;
            let ca = CaDirectory::new(files.ca());
            let text =
                |p: PathBuf| std::fs::read_to_string(&p).with_context(|| p.display().to_string());
            let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "meshwork-ca", "namespace": NAMESPACE}, "type": "Opaque",
                "stringData": {"ca.crt": text(ca.path().join(CaDirectory::CERT))?, "ca.key": text(ca.path().join(CaDirectory::KEY))?, "bundle.crt": text(ca.path().join(CaDirectory::BUNDLE))?}});
            let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
            apply(&secrets, "meshwork-ca", secret).await?;
            // The certificate Secrets the chart's certgen Job would create,
            // from the files the lab issued (the processes read them back
            // through config-sync, as pods read mounted Secrets).
            for (name, keys) in &TLS_PROJECTIONS[1..] {
                let mut data = serde_json::Map::new();
                for k in *keys {
                    data.insert((*k).to_string(), json!(text(files.projected(name, k))?));
                }
                let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NAMESPACE}, "type": "Opaque", "stringData": data});
                apply(&secrets, name, secret).await?;
            }
            let nodes: Api<Node> = Api::all(client.clone());
            for n in &c.nodes {
                let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n.name.as_str(), "labels": {"kubernetes.io/hostname": n.name.as_str()}},
                    "spec": {"podCIDR": n.pod_cidr.to_string(), "podCIDRs": [n.pod_cidr.to_string()]}});
                apply(&nodes, n.name.as_str(), node).await?;
                let status = json!({"status": {"addresses": [{"type": "InternalIP", "address": n.ip.to_string()}, {"type": "Hostname", "address": n.name.as_str()}],
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "mesh-lab node namespace is up"}]}});
                nodes
                    .patch_status(
                        n.name.as_str(),
                        &PatchParams::default(),
                        &Patch::Merge(&status),
                    )
                    .await
                    .with_context(|| format!("Node {} status", n.name))?;
            }
            // What a real API server keeps: the `kubernetes` Service in
            // `default`, its endpoints the API server's own address (the
            // agents' `kube-apiserver` entity).
            let default_svcs: Api<Service> = Api::namespaced(client.clone(), "default");
            apply(
                &default_svcs,
                "kubernetes",
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
                    "spec": {"ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": KUBE_API_PORT}]}}),
            )
            .await?;
            let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
            apply(
                &slices,
                "kubernetes",
                json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes"}},
                    "addressType": "IPv4",
                    "endpoints": [{"addresses": [c.control_ip.to_string()], "conditions": {"ready": true}}],
                    "ports": [{"name": "https", "port": KUBE_API_PORT, "protocol": "TCP"}]}),
            )
            .await?;
        }
        Ok(())
    }

    /// Starts each cluster's mesh-apiserver and node-agents with the chart's
    /// configuration plus what is specific to the lab (addresses, paths).
    pub fn start_mesh(&mut self, bins: &Bins) -> anyhow::Result<()> {
        let cgroup_root = mesh_testbed::cgroup2_root();
        crate::bpffs::mount(&self.dir)?;
        // The kubelet's part: a changed meshwork-config reaches the agents'
        // config dir (they apply encryption.* at runtime).
        for c in self.plan.clusters.clone() {
            let files = ClusterFiles::new(&self.dir, &c);
            let args = vec![
                "config-sync".to_string(),
                format!("--lab={}", self.plan.prefix),
                format!("--context={}", c.context),
                format!("--kubeconfig={}", self.kubeconfig().display()),
                format!("--namespace={NAMESPACE}"),
                "--config-map=meshwork-config".into(),
                format!("--dir={}", files.config_dir("meshwork-config").display()),
            ];
            let mut args = args;
            for (name, keys) in TLS_PROJECTIONS {
                for k in keys {
                    args.push(format!(
                        "--secret-file={name}/{k}={}",
                        files.projected(name, k).display()
                    ));
                }
            }
            self.spawn(
                &format!("{}/config-sync", c.name),
                None,
                &std::env::current_exe()?,
                &args,
                &[],
            )?;
        }
        for c in self.plan.clusters.clone() {
            let files = ClusterFiles::new(&self.dir, &c);
            let kube_env = [(
                "KUBECONFIG".to_string(),
                files.inner_kubeconfig().display().to_string(),
            )];
            progress(&format!(
                "cluster {}: mesh-apiserver at {}:{MESH_API_PORT}",
                c.name, c.control_ip
            ));
            let args = vec![
                format!(
                    "--config-dir={}",
                    files.config_dir("mesh-apiserver-config").display()
                ),
                format!("--grpc-listen={}:{MESH_API_PORT}", c.control_ip),
                "--status-listen=127.0.0.1:9963".into(),
                format!(
                    "--tls-cert={}",
                    files
                        .projected("meshwork-apiserver-tls", "tls.crt")
                        .display()
                ),
                format!(
                    "--tls-key={}",
                    files
                        .projected("meshwork-apiserver-tls", "tls.key")
                        .display()
                ),
                format!(
                    "--tls-ca={}",
                    files
                        .projected("meshwork-apiserver-tls", "ca.crt")
                        .display()
                ),
                format!("--replica-name={}-apiserver", c.name),
                // The chart's signing-ca volume: the projected meshwork-ca.
                format!(
                    "--signing-ca-cert={}",
                    files.projected("meshwork-ca", "ca.crt").display()
                ),
                format!(
                    "--signing-ca-key={}",
                    files.projected("meshwork-ca", "ca.key").display()
                ),
            ];
            self.spawn(
                &format!("{}/mesh-apiserver", c.name),
                Some(&c.control_ns),
                &bins.ours("mesh-apiserver")?,
                &args,
                &kube_env,
            )?;
            for n in &c.nodes {
                let node_dir = files.node_dir(n.name.as_str());
                std::fs::create_dir_all(&node_dir)?;
                let bpf_root = crate::bpffs::pin_root(&self.dir, n.name.as_str());
                let cgroup = cgroup_root.join(format!("{}-{}", self.plan.prefix, n.name));
                std::fs::create_dir_all(&cgroup)?;
                progress(&format!(
                    "cluster {}: node-agent on {} ({})",
                    c.name, n.name, n.ns
                ));
                let args = vec![
                    format!(
                        "--config-dir={}",
                        files.config_dir("meshwork-config").display()
                    ),
                    format!("--node-name={}", n.name),
                    format!("--pod-cidr={}", n.pod_cidr),
                    format!("--bpf-root={}", bpf_root.display()),
                    format!("--state-dir={}", node_dir.join("state").display()),
                    format!("--cgroup-root={}", cgroup.display()),
                    format!("--agent-socket={}", node_dir.join("agent.sock").display()),
                    format!("--wireguard-interface={}", n.wg_interface),
                    // The chart runs the device in a `wireguard` container
                    // of the pod; the lab has no container runtime, so the
                    // agent starts the same program as its own process
                    // (which outlives it all the same).
                    "--wireguard-device-start=true".to_string(),
                    format!("--mesh-apiserver-address={}:{MESH_API_PORT}", c.control_ip),
                    format!(
                        "--mesh-client-cert={}",
                        files
                            .projected("meshwork-node-agent-tls", "tls.crt")
                            .display()
                    ),
                    format!(
                        "--mesh-client-key={}",
                        files
                            .projected("meshwork-node-agent-tls", "tls.key")
                            .display()
                    ),
                    format!(
                        "--mesh-client-ca={}",
                        files
                            .projected("meshwork-node-agent-tls", "ca.crt")
                            .display()
                    ),
                    "--metrics-address=127.0.0.1:9962".into(),
                ];
                self.spawn(
                    &format!("{}/node-agent", n.name),
                    Some(&n.ns),
                    &bins.ours("node-agent")?,
                    &args,
                    &kube_env,
                )?;
            }
        }
        for c in self.plan.clusters.clone() {
            let files = ClusterFiles::new(&self.dir, &c);
            for n in &c.nodes {
                let sock = files.node_dir(n.name.as_str()).join("agent.sock");
                wait_for_path(&sock, Duration::from_secs(30)).with_context(|| {
                    format!(
                        "node-agent on {} did not start; see {}",
                        n.name,
                        self.log_of(&format!("{}/node-agent", n.name)).display()
                    )
                })?;
            }
        }
        Ok(())
    }
}

impl Lab {
    /// Waits until every cluster's mesh-apiserver has published its status
    /// (what `meshctl` reads): the lab is up only when meshctl can use it.
    pub async fn wait_mesh_ready(&self) -> anyhow::Result<()> {
        for c in &self.plan.clusters {
            let api: Api<ConfigMap> = Api::namespaced(self.client(c).await?, NAMESPACE);
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while api
                .get_opt(mesh_api::clustermesh::STATUS_CONFIGMAP)
                .await?
                .is_none()
            {
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "cluster {}: the mesh-apiserver published no status within 60 s; see {}",
                    c.name,
                    self.log_of(&format!("{}/mesh-apiserver", c.name)).display()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            progress(&format!("cluster {}: mesh-apiserver ready", c.name));
        }
        Ok(())
    }
}

/// Creates or replaces an object from its JSON.
async fn apply<K>(api: &Api<K>, name: &str, value: serde_json::Value) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K =
        serde_json::from_value(value).with_context(|| format!("{name}: not a valid object"))?;
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            api.patch(
                name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await
            .with_context(|| format!("update {name}"))?;
            Ok(())
        }
        Err(e) => Err(anyhow::Error::from(e).context(format!("create {name}"))),
    }
}

/// Writes a ConfigMap's data as a directory of files, one per key, as the
/// kubelet mounts it.
fn write_config_dir(dir: &Path, data: &BTreeMap<String, String>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (k, v) in data {
        std::fs::write(dir.join(k), v)?;
    }
    Ok(())
}

/// The cluster's CA, the mesh-apiserver's server certificate and the
/// node-agents' client certificate (one for all nodes, as the chart's
/// certgen issues it), each with the CA bundle, laid out as
/// [`ClusterFiles::projected`] names them.
fn issue_certs(
    files: &ClusterFiles,
    c: &ClusterPlan,
    lifetime_seconds: Option<u64>,
) -> anyhow::Result<()> {
    let leaf = || match lifetime_seconds {
        Some(s) => Validity::lasting(std::time::Duration::from_secs(s)),
        None => Validity::days(30),
    };
    let dir = CaDirectory::new(files.ca());
    let ca = dir.create(TrustDomain::default(), Validity::days(30)?)?;
    let bundle = dir.bundle()?;
    let names = vec![
        c.control_ip.to_string(),
        format!("mesh-apiserver.{NAMESPACE}.svc"),
    ];
    let node = SpiffeId::node(
        ca.trust_domain().clone(),
        c.name.clone(),
        mesh_api::NodeName::new("node-agents")?,
    );
    for (secret, cert) in [
        (
            "meshwork-apiserver-tls",
            ca.issue_cluster_server(
                &SpiffeId::cluster(ca.trust_domain().clone(), c.name.clone()),
                &names,
                leaf()?,
            )?,
        ),
        ("meshwork-node-agent-tls", ca.issue_client(&node, leaf()?)?),
    ] {
        let path = |k: &str| files.projected(secret, k);
        std::fs::create_dir_all(files.tls().join(secret))?;
        mesh_certs::pem::write_atomic(
            &path("tls.key"),
            cert.key_pem.as_bytes(),
            mesh_certs::pem::KEY_MODE,
        )?;
        mesh_certs::pem::write_atomic(
            &path("tls.crt"),
            cert.cert_pem.as_bytes(),
            mesh_certs::pem::CERT_MODE,
        )?;
        bundle.save(&path("ca.crt"))?;
    }
    Ok(())
}
