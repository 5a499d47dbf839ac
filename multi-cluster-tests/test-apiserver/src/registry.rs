//! The resource types the server knows (built in and from CRDs), and the
//! discovery documents built from them.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// One served resource type at one group/version.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceType {
    /// API group, empty for core.
    pub group: String,
    /// Version (`v1`).
    pub version: String,
    /// Plural resource name (`pods`).
    pub plural: String,
    /// Singular name (`pod`).
    pub singular: String,
    /// Kind (`Pod`).
    pub kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names kubectl accepts (`po`).
    pub short_names: Vec<String>,
    /// Whether a `/status` subresource exists (status is then ignored on the main resource).
    pub status: bool,
    /// Whether this is a custom resource (no strategic merge patch).
    pub custom: bool,
    /// Whether this version is the storage (preferred) version of the group.
    pub preferred: bool,
    /// Discovery categories (`all` makes `kubectl get all` include it).
    pub categories: Vec<String>,
}

impl ResourceType {
    /// `apiVersion` of objects of this type.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage key of the type: versions of one resource share storage,
    /// and so do core and events.k8s.io Events (one store in kube-apiserver;
    /// `crate::store::events` converts between their schemas).
    pub fn storage_key(&self) -> (String, String) {
        if self.group == "events.k8s.io" && self.plural == "events" {
            return (String::new(), self.plural.clone());
        }
        (self.group.clone(), self.plural.clone())
    }

    /// Whether this is a Deployment or a ReplicaSet (the types with a
    /// `/scale` subresource and apps/v1 defaults).
    pub fn is_workload(&self) -> bool {
        self.group == "apps" && matches!(self.plural.as_str(), "deployments" | "replicasets")
    }

    /// The discovery entry of `<plural>/scale` for the types that have one.
    fn scale_discovery(&self) -> Option<Value> {
        self.is_workload().then(|| {
            json!({
                "name": format!("{}/scale", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            })
        })
    }

    fn discovery_entries(&self) -> Vec<Value> {
        let verbs = [
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ];
        let mut main = json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": verbs,
        });
        if !self.short_names.is_empty() {
            main["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            main["categories"] = json!(self.categories);
        }
        let mut out = vec![main];
        out.extend(self.scale_discovery());
        if self.status {
            out.push(json!({
                "name": format!("{}/status", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        out
    }
}

fn builtin(
    group: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    short: &[&str],
    status: bool,
) -> ResourceType {
    ResourceType {
        group: group.into(),
        version: "v1".into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        kind: kind.into(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        status,
        custom: false,
        preferred: true,
        categories: if matches!(plural, "pods" | "services" | "deployments" | "replicasets") {
            vec!["all".to_string()]
        } else {
            Vec::new()
        },
    }
}

/// All served types, keyed by (group, version, plural).
#[derive(Debug, Clone)]
pub struct Registry {
    types: BTreeMap<(String, String, String), ResourceType>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// The built-in types.
    pub fn new() -> Self {
        let mut r = Registry {
            types: BTreeMap::new(),
        };
        for t in [
            builtin("", "namespaces", "Namespace", false, &["ns"], true),
            builtin("", "nodes", "Node", false, &["no"], true),
            builtin("", "pods", "Pod", true, &["po"], true),
            builtin("", "services", "Service", true, &["svc"], true),
            builtin("", "secrets", "Secret", true, &[], false),
            builtin("", "configmaps", "ConfigMap", true, &["cm"], false),
            builtin(
                "",
                "serviceaccounts",
                "ServiceAccount",
                true,
                &["sa"],
                false,
            ),
            builtin("", "events", "Event", true, &["ev"], false),
            builtin(
                "discovery.k8s.io",
                "endpointslices",
                "EndpointSlice",
                true,
                &[],
                false,
            ),
            builtin("coordination.k8s.io", "leases", "Lease", true, &[], false),
            builtin(
                "networking.k8s.io",
                "networkpolicies",
                "NetworkPolicy",
                true,
                &["netpol"],
                false,
            ),
            builtin("apps", "deployments", "Deployment", true, &["deploy"], true),
            builtin("apps", "replicasets", "ReplicaSet", true, &["rs"], true),
            builtin("events.k8s.io", "events", "Event", true, &["ev"], false),
            builtin(
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
                &["crd", "crds"],
                true,
            ),
        ] {
            r.insert(t);
        }
        r
    }

    fn insert(&mut self, t: ResourceType) {
        self.types
            .insert((t.group.clone(), t.version.clone(), t.plural.clone()), t);
    }

    /// The type served at `group/version/plural`.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
    }

    /// Every served type (each version once).
    pub fn types(&self) -> impl Iterator<Item = &ResourceType> {
        self.types.values()
    }

    /// Any served version of (group, plural), the preferred one first.
    pub fn any_version(&self, group: &str, plural: &str) -> Option<&ResourceType> {
        let mut found = None;
        for t in self.types.values() {
            if t.group == group && t.plural == plural {
                if t.preferred {
                    return Some(t);
                }
                found = Some(t);
            }
        }
        found
    }

    /// Registers the types a CRD defines (replacing what it defined before).
    pub fn register_crd(&mut self, types: Vec<ResourceType>) {
        if let Some(first) = types.first() {
            let (group, plural) = first.storage_key();
            self.unregister(&group, &plural);
        }
        for t in types {
            self.insert(t);
        }
    }

    /// Removes every version of (group, plural).
    pub fn unregister(&mut self, group: &str, plural: &str) {
        self.types
            .retain(|(g, _, p), t| !(g == group && p == plural && t.custom));
    }

    /// `/api`.
    pub fn core_versions(&self) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [],
        })
    }

    fn groups(&self) -> BTreeMap<String, Vec<(String, bool)>> {
        let mut groups: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new();
        for t in self.types.values() {
            if t.group.is_empty() {
                continue;
            }
            let versions = groups.entry(t.group.clone()).or_default();
            if !versions.iter().any(|(v, _)| v == &t.version) {
                versions.push((t.version.clone(), t.preferred));
            }
        }
        groups
    }

    fn group_doc(group: &str, versions: &[(String, bool)]) -> Value {
        let vs: Vec<Value> = versions
            .iter()
            .map(|(v, _)| json!({ "groupVersion": format!("{group}/{v}"), "version": v }))
            .collect();
        let preferred = versions
            .iter()
            .find(|(_, p)| *p)
            .or(versions.first())
            .map(|(v, _)| json!({ "groupVersion": format!("{group}/{v}"), "version": v }));
        json!({
            "name": group,
            "versions": vs,
            "preferredVersion": preferred,
        })
    }

    /// `/apis`.
    pub fn group_list(&self) -> Value {
        let groups: Vec<Value> = self
            .groups()
            .iter()
            .map(|(g, vs)| {
                let mut d = Self::group_doc(g, vs);
                d["serverAddressByClientCIDRs"] = Value::Null;
                d
            })
            .collect();
        json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
    }

    /// `/apis/<group>`.
    pub fn group(&self, group: &str) -> Option<Value> {
        self.groups().get(group).map(|vs| {
            let mut d = Self::group_doc(group, vs);
            d["kind"] = json!("APIGroup");
            d["apiVersion"] = json!("v1");
            d
        })
    }

    /// `/api/v1` or `/apis/<group>/<version>`.
    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let resources: Vec<Value> = self
            .types
            .values()
            .filter(|t| t.group == group && t.version == version)
            .flat_map(|t| t.discovery_entries())
            .collect();
        if resources.is_empty() {
            return None;
        }
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        Some(json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": resources,
        }))
    }
}

/// The types a CRD object defines, or why it cannot be served.
pub fn crd_types(crd: &Value) -> Result<Vec<ResourceType>, String> {
    let spec = crd.get("spec").ok_or("spec: Required value")?;
    let group = spec
        .get("group")
        .and_then(Value::as_str)
        .ok_or("spec.group: Required value")?;
    let names = spec.get("names").ok_or("spec.names: Required value")?;
    let plural = names
        .get("plural")
        .and_then(Value::as_str)
        .ok_or("spec.names.plural: Required value")?;
    let kind = names
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("spec.names.kind: Required value")?;
    let singular = names
        .get("singular")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let short_names: Vec<String> = names
        .get("shortNames")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let categories: Vec<String> = names
        .get("categories")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let namespaced = match spec.get("scope").and_then(Value::as_str) {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        _ => return Err("spec.scope: Unsupported value: must be Namespaced or Cluster".into()),
    };
    let expected = format!("{plural}.{group}");
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name != expected {
        return Err(format!(
            "metadata.name: Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group ({expected})"
        ));
    }
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .filter(|v| !v.is_empty())
        .ok_or("spec.versions: Required value: must have exactly one version marked as storage version")?;
    let mut out = Vec::new();
    for v in versions {
        let Some(vname) = v.get("name").and_then(Value::as_str) else {
            return Err("spec.versions[].name: Required value".into());
        };
        if v.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        out.push(ResourceType {
            group: group.into(),
            version: vname.into(),
            plural: plural.into(),
            singular: singular.clone(),
            kind: kind.into(),
            namespaced,
            short_names: short_names.clone(),
            status: v.pointer("/subresources/status").is_some(),
            custom: true,
            preferred: v.get("storage").and_then(Value::as_bool) == Some(true),
            categories: categories.clone(),
        });
    }
    Ok(out)
}

impl Registry {
    fn group_versions(&self) -> Vec<(String, String)> {
        let mut gvs: Vec<(String, String)> = self
            .types
            .values()
            .map(|t| (t.group.clone(), t.version.clone()))
            .collect();
        gvs.dedup();
        gvs
    }

    /// `/openapi/v3`: one entry per group/version. `revision` changes the
    /// URLs' hash whenever the set of types changes, so clients refetch.
    pub fn openapi_v3_root(&self, revision: u64) -> Value {
        let mut paths = serde_json::Map::new();
        for (g, v) in self.group_versions() {
            let key = if g.is_empty() {
                format!("api/{v}")
            } else {
                format!("apis/{g}/{v}")
            };
            paths.insert(
                key.clone(),
                json!({ "serverRelativeURL": format!("/openapi/v3/{key}?hash={revision:016X}") }),
            );
        }
        json!({ "paths": paths })
    }

    /// `/openapi/v3/<api/v1|apis/g/v>`: the operations of each resource,
    /// tagged with their GVK and the query parameters they accept, so
    /// kubectl sees that the server validates fields itself. No schemas:
    /// this server does not validate against OpenAPI.
    pub fn openapi_v3_gv(&self, group: &str, version: &str) -> Option<Value> {
        let mut paths = serde_json::Map::new();
        for t in self
            .types
            .values()
            .filter(|t| t.group == group && t.version == version)
        {
            let gvk = json!({ "group": t.group, "version": t.version, "kind": t.kind });
            let param =
                |name: &str| json!({ "name": name, "in": "query", "schema": { "type": "string" } });
            let op = |id: &str| {
                json!({
                    "operationId": format!("{id}{}", t.kind),
                    "parameters": [param("dryRun"), param("fieldManager"), param("fieldValidation")],
                    "responses": { "200": { "description": "OK" } },
                    "x-kubernetes-group-version-kind": gvk,
                })
            };
            let prefix = if group.is_empty() {
                format!("/api/{version}")
            } else {
                format!("/apis/{group}/{version}")
            };
            let (collection, item) = if t.namespaced {
                (
                    format!("{prefix}/namespaces/{{namespace}}/{}", t.plural),
                    format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", t.plural),
                )
            } else {
                (
                    format!("{prefix}/{}", t.plural),
                    format!("{prefix}/{}/{{name}}", t.plural),
                )
            };
            paths.insert(
                collection,
                json!({ "post": op("create"), "get": op("list") }),
            );
            paths.insert(
                item,
                json!({ "get": op("read"), "put": op("replace"), "patch": op("patch"), "delete": op("delete") }),
            );
        }
        if paths.is_empty() {
            return None;
        }
        Some(json!({
            "openapi": "3.0.0",
            "info": { "title": "mesh-test-apiserver", "version": "v1.34.0" },
            "paths": paths,
            "components": { "schemas": {} },
        }))
    }
}
