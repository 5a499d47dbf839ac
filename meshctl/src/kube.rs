//! Reaching a cluster through a kube context, and reading what Meshwork
//! installed there (the chart's objects), so every command works the same
//! against kind, a real cluster, or the lab.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret, Service};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use mesh_api::clustermesh::{
    CLUSTERMESH_SECRET, MeshStatus, RemoteClusterConfig, STATUS_CONFIGMAP, STATUS_KEY,
};
use mesh_api::{ClusterId, ClusterName};

/// The ConfigMap holding the mesh-apiserver's flags (the chart writes it).
pub const APISERVER_CONFIG: &str = "mesh-apiserver-config";
/// The Secret holding the mesh CA (`ca.crt`, `ca.key`, `bundle.crt`).
pub const CA_SECRET: &str = "meshwork-ca";
/// The Service other clusters reach the mesh-apiserver through.
pub const APISERVER_SERVICE: &str = "mesh-apiserver";
/// Field manager for what meshctl writes.
const MANAGER: &str = "meshctl";

/// Where to find clusters.
#[derive(Debug, Clone, clap::Args)]
pub struct KubeArgs {
    /// Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace Meshwork is installed in.
    #[arg(long, global = true, default_value = "meshwork-system")]
    pub namespace: String,
}

/// One cluster reached through a context.
#[derive(Clone)]
pub struct Cluster {
    /// The kube context.
    pub context: String,
    /// Meshwork's namespace.
    pub namespace: String,
    /// The API server's URL.
    pub server: String,
    client: kube::Client,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cluster({})", self.context)
    }
}

impl Cluster {
    /// The names of every context of the kubeconfig.
    pub fn contexts(args: &KubeArgs) -> anyhow::Result<Vec<String>> {
        let kubeconfig = match &args.kubeconfig {
            Some(p) => Kubeconfig::read_from(p)
                .with_context(|| format!("read kubeconfig {}", p.display()))?,
            None => {
                Kubeconfig::read().context("read kubeconfig (set --kubeconfig or KUBECONFIG)")?
            }
        };
        Ok(kubeconfig.contexts.into_iter().map(|c| c.name).collect())
    }

    /// The context of the kubeconfig whose Meshwork cluster is named
    /// `cluster` (each context's mesh-apiserver ConfigMap is read, 5 s at
    /// most each), if any.
    pub async fn of_cluster_name(args: &KubeArgs, cluster: &str) -> Option<Cluster> {
        for ctx in Cluster::contexts(args).unwrap_or_default() {
            let Ok(c) = Cluster::connect(args, &ctx).await else {
                continue;
            };
            if let Ok(Ok(info)) =
                tokio::time::timeout(std::time::Duration::from_secs(5), c.info()).await
                && info.name.as_str() == cluster
            {
                return Some(c);
            }
        }
        None
    }

    /// Connects to `context` of the kubeconfig.
    pub async fn connect(args: &KubeArgs, context: &str) -> anyhow::Result<Cluster> {
        let kubeconfig = match &args.kubeconfig {
            Some(p) => Kubeconfig::read_from(p)
                .with_context(|| format!("read kubeconfig {}", p.display()))?,
            None => {
                Kubeconfig::read().context("read kubeconfig (set --kubeconfig or KUBECONFIG)")?
            }
        };
        if !kubeconfig.contexts.iter().any(|c| c.name == context) {
            let known: Vec<&str> = kubeconfig
                .contexts
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            anyhow::bail!(
                "context {context:?} is not in the kubeconfig; known contexts: {}",
                if known.is_empty() {
                    "(none)".to_string()
                } else {
                    known.join(", ")
                }
            );
        }
        let options = KubeConfigOptions {
            context: Some(context.to_string()),
            ..KubeConfigOptions::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .with_context(|| format!("context {context}"))?;
        let server = config.cluster_url.to_string();
        let client =
            kube::Client::try_from(config).with_context(|| format!("context {context}"))?;
        Ok(Cluster {
            context: context.to_string(),
            namespace: args.namespace.clone(),
            server,
            client,
        })
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Error context for reading `object`: names the context and the API server.
    fn reading(&self, object: &str) -> String {
        format!(
            "context {}: cannot read {object} in namespace {} from the Kubernetes API server at {} (is the cluster up and the context right?)",
            self.context, self.namespace, self.server
        )
    }

    /// Every object of kind `K` in the cluster (`what` names it in errors).
    async fn list_all<K>(&self, what: &str) -> anyhow::Result<Vec<K>>
    where
        K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let api: Api<K> = Api::all(self.client.clone());
        Ok(api
            .list(&ListParams::default())
            .await
            .with_context(|| self.reading(what))?
            .items)
    }

    /// Every Node of the cluster.
    pub async fn nodes(&self) -> anyhow::Result<Vec<Node>> {
        self.list_all("nodes").await
    }

    /// Pod `namespace/name`, if it exists.
    pub async fn pod(&self, namespace: &str, name: &str) -> anyhow::Result<Option<Pod>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        api.get_opt(name).await.with_context(|| {
            format!(
                "context {}: cannot read Pod {namespace}/{name} from {}",
                self.context, self.server
            )
        })
    }

    /// Every Pod of the cluster.
    pub async fn pods(&self) -> anyhow::Result<Vec<Pod>> {
        self.list_all("pods").await
    }

    /// Service `namespace/name`, if it exists.
    pub async fn service(&self, namespace: &str, name: &str) -> anyhow::Result<Option<Service>> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), namespace);
        api.get_opt(name).await.with_context(|| {
            format!(
                "context {}: cannot read Service {namespace}/{name} from {}",
                self.context, self.server
            )
        })
    }

    /// Every Service of the cluster.
    pub async fn services(&self) -> anyhow::Result<Vec<Service>> {
        self.list_all("services").await
    }

    /// Reads the cluster's identity from the mesh-apiserver's ConfigMap.
    pub async fn info(&self) -> anyhow::Result<ClusterInfo> {
        let cm = self
            .api::<ConfigMap>()
            .get_opt(APISERVER_CONFIG)
            .await
            .with_context(|| {
                format!(
                    "context {}: read ConfigMap {}/{APISERVER_CONFIG}",
                    self.context, self.namespace
                )
            })?;
        let Some(cm) = cm else {
            anyhow::bail!(
                "context {}: Meshwork is not installed in namespace {} (no ConfigMap {APISERVER_CONFIG}); install the chart or pass --namespace",
                self.context,
                self.namespace
            );
        };
        let data = cm.data.unwrap_or_default();
        let get = |k: &str| {
            data.get(k).cloned().with_context(|| {
                format!(
                    "context {}: ConfigMap {APISERVER_CONFIG} has no key {k}",
                    self.context
                )
            })
        };
        let name = ClusterName::new(get("cluster-name")?)
            .with_context(|| format!("context {}", self.context))?;
        let id: ClusterId = get("cluster-id")?
            .parse()
            .with_context(|| format!("context {}", self.context))?;
        let pod_cidrs = get("pod-cidrs")?
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| mesh_api::cidr::parse_cidr("pod-cidrs", s))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("context {}", self.context))?;
        // What its mesh-apiserver renews certificates to (absent: the
        // chart predates renewal).
        let cert_lifetime = match data.get("cert-lifetime-seconds") {
            Some(s) => Some(std::time::Duration::from_secs(s.parse().with_context(|| {
                format!(
                    "context {}: ConfigMap {APISERVER_CONFIG} key cert-lifetime-seconds={s:?} is not a number of seconds",
                    self.context
                )
            })?)),
            None => None,
        };
        Ok(ClusterInfo {
            name,
            id,
            pod_cidrs,
            cert_lifetime,
        })
    }

    /// The mesh CA (certificate, key) and trust bundle PEMs.
    pub async fn ca(&self) -> anyhow::Result<(String, String, String)> {
        let secret = self
            .api::<Secret>()
            .get_opt(CA_SECRET)
            .await
            .with_context(|| self.reading(CA_SECRET))?
            .with_context(|| format!("context {}: no Secret {}/{CA_SECRET} (the mesh CA); install the chart with clustermesh.apiserver.tls.method=job, or create it with `meshctl ca create`", self.context, self.namespace))?;
        let data = secret.data.unwrap_or_default();
        let text = |k: &str| -> anyhow::Result<String> {
            let v = data.get(k).with_context(|| {
                format!("context {}: Secret {CA_SECRET} has no {k}", self.context)
            })?;
            String::from_utf8(v.0.clone()).with_context(|| {
                format!(
                    "context {}: Secret {CA_SECRET} {k} is not text",
                    self.context
                )
            })
        };
        let cert = text("ca.crt")?;
        let bundle = text("bundle.crt").unwrap_or_else(|_| cert.clone());
        Ok((cert, text("ca.key")?, bundle))
    }

    /// Where other clusters reach this cluster's mesh-apiserver.
    pub async fn endpoints(&self) -> anyhow::Result<Vec<String>> {
        let svc = self.api::<Service>().get_opt(APISERVER_SERVICE).await.with_context(|| self.reading(APISERVER_SERVICE))?.with_context(|| {
            format!("context {}: no Service {}/{APISERVER_SERVICE}: is the mesh-apiserver installed?", self.context, self.namespace)
        })?;
        let spec = svc.spec.unwrap_or_default();
        let port = spec
            .ports
            .as_ref()
            .and_then(|p| p.first())
            .cloned()
            .unwrap_or_default();
        let ty = spec.type_.unwrap_or_else(|| "ClusterIP".into());
        let mut out = Vec::new();
        match ty.as_str() {
            "LoadBalancer" => {
                for ing in svc
                    .status
                    .and_then(|s| s.load_balancer)
                    .and_then(|l| l.ingress)
                    .unwrap_or_default()
                {
                    if let Some(h) = ing.ip.or(ing.hostname) {
                        out.push(format_endpoint(&h, port.port));
                    }
                }
            }
            "NodePort" => {
                let node_port = port.node_port.unwrap_or(port.port);
                let nodes: Api<Node> = Api::all(self.client.clone());
                for n in nodes
                    .list(&ListParams::default())
                    .await
                    .with_context(|| self.reading("nodes"))?
                    .items
                {
                    let addrs = n.status.and_then(|s| s.addresses).unwrap_or_default();
                    if let Some(a) = addrs.iter().find(|a| a.type_ == "InternalIP") {
                        out.push(format_endpoint(&a.address, node_port));
                    }
                }
            }
            other => anyhow::bail!(
                "context {}: Service {APISERVER_SERVICE} is of type {other}, which other clusters cannot reach; set clustermesh.apiserver.service.type to NodePort or LoadBalancer",
                self.context
            ),
        }
        out.extend(
            spec.external_ips
                .unwrap_or_default()
                .iter()
                .map(|ip| format_endpoint(ip, port.port)),
        );
        anyhow::ensure!(
            !out.is_empty(),
            "context {}: Service {APISERVER_SERVICE} has no reachable address yet (no load-balancer ingress or node addresses); wait for it and retry",
            self.context
        );
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The mesh-apiserver's published status, if any.
    pub async fn status(&self) -> anyhow::Result<Option<MeshStatus>> {
        let Some(cm) = self
            .api::<ConfigMap>()
            .get_opt(STATUS_CONFIGMAP)
            .await
            .with_context(|| self.reading(STATUS_CONFIGMAP))?
        else {
            return Ok(None);
        };
        let Some(json) = cm.data.and_then(|d| d.get(STATUS_KEY).cloned()) else {
            return Ok(None);
        };
        Ok(Some(
            MeshStatus::parse(&json).with_context(|| format!("context {}", self.context))?,
        ))
    }

    /// The remote clusters configured here.
    pub async fn remotes(
        &self,
    ) -> anyhow::Result<BTreeMap<String, Result<RemoteClusterConfig, String>>> {
        let Some(secret) = self
            .api::<Secret>()
            .get_opt(CLUSTERMESH_SECRET)
            .await
            .with_context(|| self.reading(CLUSTERMESH_SECRET))?
        else {
            return Ok(BTreeMap::new());
        };
        Ok(secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| {
                let parsed = String::from_utf8(v.0)
                    .map_err(|_| "not text".to_string())
                    .and_then(|t| RemoteClusterConfig::parse(&k, &t).map_err(|e| e.to_string()));
                (k, parsed)
            })
            .collect())
    }

    /// Secret `name` in Meshwork's namespace, if it exists: its data as text
    /// (keys that are not UTF-8 are skipped) and its annotations.
    pub async fn secret_texts(
        &self,
        name: &str,
    ) -> anyhow::Result<Option<(BTreeMap<String, String>, BTreeMap<String, String>)>> {
        let Some(secret) = self
            .api::<Secret>()
            .get_opt(name)
            .await
            .with_context(|| self.reading(name))?
        else {
            return Ok(None);
        };
        let data = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| String::from_utf8(v.0).ok().map(|t| (k, t)))
            .collect();
        Ok(Some((
            data,
            secret.metadata.annotations.unwrap_or_default(),
        )))
    }

    /// Merges into Secret `name`: keys set (`Some`) or removed (`None`), and
    /// annotations set or removed the same way, in one patch.
    pub async fn patch_secret(
        &self,
        name: &str,
        data: &BTreeMap<String, Option<String>>,
        annotations: &BTreeMap<String, Option<String>>,
    ) -> anyhow::Result<()> {
        let data: serde_json::Map<String, serde_json::Value> = data
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_ref().map_or(serde_json::Value::Null, |t| {
                        serde_json::Value::String(base64_encode(t.as_bytes()))
                    }),
                )
            })
            .collect();
        let patch = serde_json::json!({"metadata": {"annotations": annotations}, "data": data});
        self.api::<Secret>()
            .patch(
                name,
                &PatchParams {
                    field_manager: Some(MANAGER.into()),
                    ..PatchParams::default()
                },
                &Patch::Merge(&patch),
            )
            .await
            .with_context(|| {
                format!(
                    "context {}: update Secret {}/{name}",
                    self.context, self.namespace
                )
            })?;
        Ok(())
    }

    /// Adds or replaces remote entries (`Some`) and removes others (`None`) in one patch.
    pub async fn patch_remotes(
        &self,
        changes: &BTreeMap<String, Option<RemoteClusterConfig>>,
    ) -> anyhow::Result<()> {
        let api = self.api::<Secret>();
        let exists = api
            .get_opt(CLUSTERMESH_SECRET)
            .await
            .with_context(|| self.reading(CLUSTERMESH_SECRET))?
            .is_some();
        let string_data: serde_json::Map<String, serde_json::Value> = changes
            .iter()
            .filter_map(|(k, v)| {
                v.as_ref()
                    .map(|c| (k.clone(), serde_json::Value::String(c.to_yaml())))
            })
            .collect();
        if !exists {
            let secret = serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": CLUSTERMESH_SECRET, "namespace": self.namespace,
                             "labels": {"app.kubernetes.io/part-of": "meshwork"}},
                "type": "Opaque", "stringData": string_data,
            });
            api.create(&Default::default(), &serde_json::from_value(secret)?)
                .await
                .with_context(|| {
                    format!(
                        "context {}: create Secret {CLUSTERMESH_SECRET}",
                        self.context
                    )
                })?;
            return Ok(());
        }
        let mut data = serde_json::Map::new();
        for (k, v) in changes {
            data.insert(
                k.clone(),
                match v {
                    Some(c) => serde_json::Value::String(base64_encode(c.to_yaml().as_bytes())),
                    None => serde_json::Value::Null,
                },
            );
        }
        let patch = serde_json::json!({ "data": data });
        api.patch(
            CLUSTERMESH_SECRET,
            &PatchParams {
                field_manager: Some(MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await
        .with_context(|| {
            format!(
                "context {}: update Secret {CLUSTERMESH_SECRET}",
                self.context
            )
        })?;
        Ok(())
    }
}

/// A cluster's identity as Meshwork is configured there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClusterInfo {
    /// Name.
    pub name: ClusterName,
    /// Id.
    pub id: ClusterId,
    /// Pod CIDRs.
    pub pod_cidrs: Vec<ipnet::IpNet>,
    /// Lifetime of the certificates its mesh-apiserver renews
    /// (`cert-lifetime-seconds`), if set.
    pub cert_lifetime: Option<std::time::Duration>,
}

fn format_endpoint(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
