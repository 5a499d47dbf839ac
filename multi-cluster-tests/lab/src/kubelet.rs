//! The lab as kubelet: a pod is a network namespace wired by the real
//! mesh-cni plugin (invoked exactly as a container runtime invokes it),
//! running `mesh-echo serve`, and a Pod object whose status the lab writes
//! (IP, Running, Ready), so the EndpointSlice controller and the
//! mesh-apiserver see it as they would see a real pod.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::bins::Bins;
use crate::control::ClusterFiles;
use crate::plan::NodePlan;
use crate::up::{Lab, progress};

/// Port every lab pod serves on (TCP and UDP).
pub const POD_PORT: u16 = 8080;

/// A pod to create.
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

impl PodSpec {
    fn netns(&self, prefix: &str) -> String {
        format!(
            "{prefix}-pod-{}-{}-{}",
            self.cluster, self.namespace, self.name
        )
    }
    fn container_id(&self) -> String {
        format!("{}-{}-{}", self.cluster, self.namespace, self.name)
    }
}

impl Lab {
    fn node(
        &self,
        cluster: &str,
        node: &str,
    ) -> anyhow::Result<(crate::plan::ClusterPlan, NodePlan)> {
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
            })?;
        Ok((c.clone(), n.clone()))
    }

    fn cni(
        &self,
        bins: &Bins,
        command: &str,
        spec: &PodSpec,
        node: &NodePlan,
        files: &ClusterFiles,
    ) -> anyhow::Result<serde_json::Value> {
        let node_dir = files.node_dir(node.name.as_str());
        let conf = json!({
            "cniVersion": "1.0.0", "name": "meshwork", "type": "mesh-cni",
            "agentSocket": node_dir.join("agent.sock"), "stateDir": node_dir.join("state"),
            "podCIDR": node.pod_cidr.to_string(),
        });
        let mut child = Command::new("ip")
            .args(["netns", "exec", &node.ns])
            .arg(bins.ours("mesh-cni")?)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", spec.container_id())
            .env(
                "CNI_NETNS",
                crate::netns::netns_path(&spec.netns(&self.plan.prefix)),
            )
            .env("CNI_IFNAME", "eth0")
            .env(
                "CNI_ARGS",
                format!(
                    "K8S_POD_NAMESPACE={};K8S_POD_NAME={}",
                    spec.namespace, spec.name
                ),
            )
            .env(
                "CNI_PATH",
                bins.ours("mesh-cni")?
                    .parent()
                    .unwrap_or(std::path::Path::new("/")),
            )
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
            "mesh-cni {command} for pod {}/{} on {}: {} {}",
            spec.namespace,
            spec.name,
            node.name,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(stdout)
    }

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

    /// Creates a pod: namespace, CNI ADD, echo server, Pod object with status.
    pub async fn add_pod(&mut self, bins: &Bins, spec: &PodSpec) -> anyhow::Result<String> {
        let (c, node) = self.node(&spec.cluster, &spec.node)?;
        let files = ClusterFiles::new(&self.dir, &c);
        let ns = spec.netns(&self.plan.prefix);
        mesh_testbed::run_ok("ip", &["netns", "add", &ns]);
        mesh_testbed::run_ok("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        let result = match self.cni(bins, "ADD", spec, &node, &files) {
            Ok(r) => r,
            Err(e) => {
                let _ = mesh_testbed::run("ip", &["netns", "del", &ns]);
                return Err(e);
            }
        };
        let ip = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .with_context(|| format!("mesh-cni returned no address: {result}"))?
            .to_string();
        let args = vec![
            "serve".to_string(),
            format!("--port={POD_PORT}"),
            format!("--pod={}/{}", spec.namespace, spec.name),
            format!("--node={}", spec.node),
            format!("--cluster={}", spec.cluster),
        ];
        self.spawn(
            &format!("{}/pod-{}-{}", spec.cluster, spec.namespace, spec.name),
            Some(&ns),
            &bins.ours("mesh-echo")?,
            &args,
            &[],
        )?;
        let client = self.client(&c).await?;
        let pods: Api<Pod> = Api::namespaced(client, &spec.namespace);
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": spec.labels},
            "spec": {"nodeName": spec.node, "containers": [{"name": "echo", "image": "mesh-echo",
                "ports": [{"name": "echo", "containerPort": POD_PORT, "protocol": "TCP"}, {"name": "echo-udp", "containerPort": POD_PORT, "protocol": "UDP"}]}]},
        }))?;
        pods.create(&PostParams::default(), &pod)
            .await
            .with_context(|| format!("create Pod {}/{}", spec.namespace, spec.name))?;
        let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": node.ip.to_string(),
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}],
            "containerStatuses": [{"name": "echo", "image": "mesh-echo", "imageID": "", "ready": true, "started": true, "restartCount": 0,
                "state": {"running": {}}}]}});
        pods.patch_status(&spec.name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        progress(&format!(
            "pod {}/{} on {} ({}): {ip}",
            spec.namespace, spec.name, spec.node, spec.cluster
        ));
        Ok(ip)
    }

    /// Deletes a pod: Pod object, echo server, CNI DEL, namespace.
    pub async fn delete_pod(&mut self, bins: &Bins, spec: &PodSpec) -> anyhow::Result<()> {
        let (c, node) = self.node(&spec.cluster, &spec.node)?;
        let files = ClusterFiles::new(&self.dir, &c);
        let client = self.client(&c).await?;
        let pods: Api<Pod> = Api::namespaced(client, &spec.namespace);
        let _ = pods.delete(&spec.name, &DeleteParams::default()).await;
        let ns = spec.netns(&self.plan.prefix);
        let pids = mesh_testbed::run("ip", &["netns", "pids", &ns]);
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            let _ = mesh_testbed::run("kill", &["-9", pid]);
        }
        self.cni(bins, "DEL", spec, &node, &files)?;
        let _ = mesh_testbed::run("ip", &["netns", "del", &ns]);
        Ok(())
    }
}
