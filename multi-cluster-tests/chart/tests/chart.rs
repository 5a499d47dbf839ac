//! The chart and the code cannot drift: Helm's own engine renders and lints
//! the chart, every object is a valid Kubernetes object of its kind, and the
//! ConfigMaps are parsed by the node-agent's and mesh-apiserver's own config
//! parsers into the values that were set.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use mesh_chart::{Object, config_map, helm, render};
use serde_json::{Value, json};

/// The value sets the issue names, each with what must render.
fn scenarios() -> Vec<(&'static str, Value)> {
    vec![
        ("defaults", json!({})),
        ("encryption", json!({"encryption": {"enabled": true}})),
        (
            "strict mode",
            json!({"encryption": {"enabled": true, "nodeEncryption": true, "nodeEncryptionExcludeCIDRs": ["192.168.1.10/32", "10.0.0.0/24"], "strictMode": {"enabled": true}, "wireguard": {"persistentKeepalive": 25}}}),
        ),
        ("maglev", json!({"loadBalancer": {"algorithm": "maglev"}})),
        (
            "external etcd, 3 replicas",
            json!({"clustermesh": {"apiserver": {"replicas": 3, "etcd": {"mode": "external", "endpoints": ["https://etcd-0:2379", "https://etcd-1:2379"], "tls": {"existingSecret": "external-etcd-client"}}}}}),
        ),
        (
            "external etcd, server-verified TLS",
            json!({"clustermesh": {"apiserver": {"etcd": {"mode": "external", "endpoints": ["https://10.0.0.5:2379"], "tls": {"existingSecret": "etcd-ca-only", "clientCertificate": false, "serverName": "etcd.example"}}}}}),
        ),
        (
            "external etcd, plaintext",
            json!({"clustermesh": {"apiserver": {"etcd": {"mode": "external", "endpoints": ["http://etcd-0:2379"]}}}}),
        ),
        (
            "in-memory",
            json!({"clustermesh": {"apiserver": {"etcd": {"mode": "memory"}}}}),
        ),
        (
            "nameservers for remote endpoint names",
            json!({"clustermesh": {"apiserver": {"dnsNameservers": ["10.96.0.10", "10.96.0.11:53"]}}}),
        ),
        (
            "service monitors",
            json!({"metrics": {"serviceMonitor": {"enabled": true}}}),
        ),
        (
            "cilium annotations",
            json!({"compat": {"ciliumAnnotations": true}, "cluster": {"name": "east", "id": 7}}),
        ),
        (
            "services and egress",
            json!({"bpf": {"masquerade": false}, "ipMasqAgent": {"config": {"nonMasqueradeCIDRs": ["172.16.0.0/12", "192.168.0.0/16"]}},
                   "maglev": {"hashSeed": "my-cluster-seed"}, "MTU": 1450,
                   "lbIPAM": {"pools": [{"name": "blue", "cidrs": ["192.168.10.240/29", "192.168.11.0/30"]}, {"name": "green", "cidrs": ["10.200.0.0/28"]}]},
                   "k8sServiceHost": "api.internal", "k8sServicePort": 443}),
        ),
    ]
}

/// Deserializes into `T` and back: a field `T` does not know would be
/// dropped, so the round trip must give the same object.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(o: &Object) {
    let t: T = serde_json::from_value(o.value.clone()).unwrap_or_else(|e| {
        panic!(
            "{} {} ({}): not a valid {}: {e}",
            o.kind, o.name, o.template, o.kind
        )
    });
    let back = serde_json::to_value(&t).unwrap();
    assert_eq!(
        strip_nulls(back),
        strip_nulls(o.value.clone()),
        "{} {} ({}) has fields its type does not know",
        o.kind,
        o.name,
        o.template
    );
}

fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .filter(|(_, v)| !matches!(v, Value::Object(m) if m.is_empty()))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_nulls).collect()),
        v => v,
    }
}

#[test]
fn every_scenario_renders_lints_and_is_made_of_valid_objects() {
    for (name, values) in scenarios() {
        let objects = render(&values).unwrap_or_else(|e| panic!("{name}: render failed: {e}"));
        assert!(
            objects.len() >= 10,
            "{name}: only {} objects",
            objects.len()
        );
        for o in &objects {
            match o.kind.as_str() {
                "ConfigMap" => typed::<ConfigMap>(o),
                "Secret" => typed::<Secret>(o),
                "Service" => typed::<Service>(o),
                "ServiceAccount" => typed::<ServiceAccount>(o),
                "DaemonSet" => typed::<DaemonSet>(o),
                "Deployment" => typed::<Deployment>(o),
                "Job" => typed::<Job>(o),
                "ClusterRole" => typed::<ClusterRole>(o),
                "ClusterRoleBinding" => typed::<ClusterRoleBinding>(o),
                "Role" => typed::<Role>(o),
                "RoleBinding" => typed::<RoleBinding>(o),
                "PodDisruptionBudget" => typed::<PodDisruptionBudget>(o),
                "CustomResourceDefinition" => typed::<CustomResourceDefinition>(o),
                "ServiceMonitor" => {
                    assert_eq!(o.value["apiVersion"], "monitoring.coreos.com/v1", "{name}")
                }
                other => panic!("{name}: {} renders an unexpected kind {other}", o.template),
            }
        }
        let report: Value = serde_json::from_str(&helm("lint", &values).unwrap()).unwrap();
        assert_eq!(report["errors"], json!([]), "{name}: helm lint: {report}");
        let severe: Vec<&Value> = report["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["severity"].as_i64() >= Some(2))
            .collect();
        assert!(severe.is_empty(), "{name}: helm lint warnings: {severe:?}");
        let monitors = objects
            .iter()
            .filter(|o| o.kind == "ServiceMonitor")
            .count();
        assert_eq!(
            monitors,
            if name == "service monitors" { 2 } else { 0 },
            "{name}"
        );
    }
}

/// The agent re-reads `encryption.*` from its mounted ConfigMap while it
/// runs (`config_watch`): the chart's ConfigMap, written as the kubelet
/// mounts it (one file per key), gives the runtime settings the values set.
#[test]
fn the_mounted_config_map_gives_the_runtime_encryption_settings() {
    for (name, values) in scenarios() {
        let objects = render(&values).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "meshwork-chart-{}-{}",
            std::process::id(),
            name.replace(' ', "-").replace(',', "")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for (k, v) in config_map(&objects, "meshwork-config") {
            std::fs::write(dir.join(k), v).unwrap();
        }
        let args: Vec<std::ffi::OsString> = vec![
            "node-agent".into(),
            format!("--config-dir={}", dir.display()).into(),
            "--node-name=worker-1".into(),
        ];
        let got = node_agent::config_watch::read(&args);
        let _ = std::fs::remove_dir_all(&dir);
        let got = got.unwrap_or_else(|e| panic!("{name}: {e}"));
        let v = |path: &[&str]| path.iter().fold(&values, |v, k| &v[*k]).clone();
        let want = node_agent::config::EncryptionSettings {
            enabled: v(&["encryption", "enabled"]).as_bool().unwrap_or(false),
            strict_mode: v(&["encryption", "strictMode", "enabled"])
                .as_bool()
                .unwrap_or(false),
            node_encryption: v(&["encryption", "nodeEncryption"])
                .as_bool()
                .unwrap_or(false),
            persistent_keepalive: v(&["encryption", "wireguard", "persistentKeepalive"])
                .as_u64()
                .unwrap_or(0) as u16,
            node_encryption_exclude: v(&["encryption", "nodeEncryptionExcludeCIDRs"])
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c.as_str().unwrap().parse().unwrap())
                .collect(),
        };
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn the_agent_config_map_is_read_by_the_agents_own_parser() {
    for (name, values) in scenarios() {
        let objects = render(&values).unwrap();
        let map = config_map(&objects, "meshwork-config");
        let cfg = node_agent::config::AgentConfig::parse_with_map(
            &map,
            ["node-agent", "--node-name=worker-1"],
        )
        .unwrap_or_else(|e| {
            panic!("{name}: the agent refuses the chart's ConfigMap: {e}\n{map:?}")
        });
        cfg.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        let v = |path: &[&str]| path.iter().fold(&values, |v, k| &v[*k]).clone();
        assert_eq!(
            cfg.enable_encryption,
            v(&["encryption", "enabled"]).as_bool().unwrap_or(false),
            "{name}"
        );
        assert_eq!(
            cfg.encryption_strict_mode,
            v(&["encryption", "strictMode", "enabled"])
                .as_bool()
                .unwrap_or(false),
            "{name}"
        );
        assert_eq!(
            cfg.node_encryption,
            v(&["encryption", "nodeEncryption"])
                .as_bool()
                .unwrap_or(false),
            "{name}"
        );
        assert_eq!(
            u64::from(cfg.wireguard_persistent_keepalive),
            v(&["encryption", "wireguard", "persistentKeepalive"])
                .as_u64()
                .unwrap_or(0),
            "{name}"
        );
        assert_eq!(
            cfg.compat_cilium_annotations,
            v(&["compat", "ciliumAnnotations"])
                .as_bool()
                .unwrap_or(false),
            "{name}"
        );
        assert_eq!(
            cfg.cluster_id.get() as u64,
            v(&["cluster", "id"]).as_u64().unwrap_or(1),
            "{name}"
        );
        assert_eq!(
            cfg.cluster_name.as_str(),
            v(&["cluster", "name"]).as_str().unwrap_or("default"),
            "{name}"
        );
        let algo = format!("{:?}", cfg.lb_algorithm).to_lowercase();
        assert_eq!(
            algo,
            v(&["loadBalancer", "algorithm"])
                .as_str()
                .unwrap_or("random"),
            "{name}"
        );
        assert_eq!(cfg.wireguard_port, 51871, "{name}");
        assert_eq!(cfg.wireguard_interface, "mesh-wg0", "{name}");
    }
}

#[test]
fn the_apiserver_config_map_is_read_by_its_own_parser() {
    for (name, values) in scenarios() {
        let objects = render(&values).unwrap();
        let map = config_map(&objects, "mesh-apiserver-config");
        let cfg = mesh_apiserver::config::Config::from_map(&map).unwrap_or_else(|e| {
            panic!("{name}: the mesh-apiserver refuses the chart's ConfigMap: {e}\n{map:?}")
        });
        let local = cfg.local().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            local.name.as_str(),
            values["cluster"]["name"].as_str().unwrap_or("default"),
            "{name}"
        );
        let mode = values["clustermesh"]["apiserver"]["etcd"]["mode"]
            .as_str()
            .unwrap_or("sidecar");
        let store = format!("{:?}", cfg.store).to_lowercase();
        assert_eq!(
            store,
            if mode == "memory" { "memory" } else { "etcd" },
            "{name}"
        );
        let etcd = &values["clustermesh"]["apiserver"]["etcd"];
        if mode == "external" {
            let want: Vec<String> = serde_json::from_value(etcd["endpoints"].clone()).unwrap();
            assert_eq!(cfg.etcd_endpoints, want, "{name}");
        }
        // The etcd flags agree with each other (what the binary checks
        // before it serves), and TLS is on exactly when a Secret is given.
        let plan = cfg.etcd_plan().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            plan.tls.is_some(),
            etcd["tls"]["existingSecret"].as_str().is_some(),
            "{name}"
        );
        assert_eq!(
            cfg.compat_cilium_annotations,
            values["compat"]["ciliumAnnotations"]
                .as_bool()
                .unwrap_or(false),
            "{name}"
        );
        assert_eq!(cfg.namespace, "meshwork-system", "{name}");
        let nameservers: Vec<String> = cfg
            .nameservers()
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .iter()
            .map(|a| a.ip().to_string())
            .collect();
        let want: Vec<String> = values["clustermesh"]["apiserver"]["dnsNameservers"]
            .as_array()
            .map(|v| {
                v.iter()
                    .map(|s| s.as_str().unwrap().split(':').next().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(nameservers, want, "{name}");
    }
}

#[test]
fn bad_values_are_refused_with_helms_message() {
    for (values, want) in [
        (json!({"cluster": {"id": 0}}), "/cluster/id"),
        (
            json!({"clustermesh": {"apiserver": {"dnsNameservers": ["dns.example"]}}}),
            "/clustermesh/apiserver/dnsNameservers/0",
        ),
        (json!({"cluster": {"id": 256}}), "/cluster/id"),
        (json!({"cluster": {"name": "Not_A_Label"}}), "/cluster/name"),
        (json!({"encryption": {"type": "ipsec"}}), "/encryption/type"),
        (
            json!({"loadBalancer": {"algorithm": "roundrobin"}}),
            "/loadBalancer/algorithm",
        ),
        (json!({"encryptoin": {"enabled": true}}), "encryptoin"),
        (
            json!({"clustermesh": {"apiserver": {"replicas": 3}}}),
            "etcd.mode=external",
        ),
        (
            json!({"encryption": {"strictMode": {"enabled": true}}}),
            "needs encryption.enabled=true",
        ),
        (
            json!({"clustermesh": {"apiserver": {"etcd": {"mode": "external"}}}}),
            "needs clustermesh.apiserver.etcd.endpoints",
        ),
        (
            json!({"clustermesh": {"apiserver": {"etcd": {"mode": "external", "endpoints": ["https://etcd-0:2379"]}}}}),
            "set clustermesh.apiserver.etcd.tls.existingSecret",
        ),
        (
            json!({"clustermesh": {"apiserver": {"etcd": {"mode": "external", "endpoints": ["http://etcd-0:2379"], "tls": {"existingSecret": "etcd-client"}}}}}),
            "would be plaintext",
        ),
        (
            json!({"clustermesh": {"apiserver": {"etcd": {"mode": "external", "endpoints": ["https://etcd-0:2379", "http://etcd-1:2379"], "tls": {"existingSecret": "etcd-client"}}}}}),
            "mixes https:// and http://",
        ),
        (
            json!({"clustermesh": {"apiserver": {"etcd": {"mode": "external", "endpoints": ["etcd-0:2379"]}}}}),
            "has no scheme",
        ),
        (
            json!({"clustermesh": {"apiserver": {"etcd": {"tls": {"existingSecret": "etcd-client"}}}}}),
            "is for etcd.mode=external",
        ),
        (
            json!({"clustermesh": {"apiserver": {"etcd": {"tls": {"secret": "etcd-client"}}}}}),
            "/clustermesh/apiserver/etcd/tls",
        ),
    ] {
        let err = render(&values).expect_err(&format!("{values} must be refused"));
        assert!(err.contains(want), "{values}: {err}");
    }
}

#[test]
fn clusters_in_values_become_clustermesh_entries_the_apiserver_accepts() {
    let pem = |kind: &str| format!("-----BEGIN {kind}-----\nMIIB\n-----END {kind}-----\n");
    let values = json!({"cluster": {"name": "c1", "id": 1}, "clustermesh": {"config": {"clusters": [
        {"name": "c2", "id": 2, "endpoints": ["192.0.2.40:32379"], "caCert": pem("CERTIFICATE"), "tls": {"cert": pem("CERTIFICATE"), "key": pem("PRIVATE KEY")}}
    ]}}});
    let objects = render(&values).unwrap();
    let secret = objects
        .iter()
        .find(|o| o.kind == "Secret" && o.name == "meshwork-clustermesh")
        .expect("Secret rendered");
    let yaml = secret.value["stringData"]["c2"].as_str().unwrap();
    let entry = mesh_api_entry("c2", yaml);
    assert_eq!(entry.endpoints, vec!["192.0.2.40:32379"]);
    let err = render(&json!({"cluster": {"name": "c1", "id": 1}, "clustermesh": {"config": {"clusters": [
        {"name": "c1", "id": 2, "endpoints": ["x:1"], "caCert": "x", "tls": {"cert": "x", "key": "x"}}]}}}))
    .unwrap_err();
    assert!(err.contains("this cluster's own name"), "{err}");
}

fn mesh_api_entry(key: &str, yaml: &str) -> mesh_api::clustermesh::RemoteClusterConfig {
    mesh_api::clustermesh::RemoteClusterConfig::parse(key, yaml)
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

#[test]
fn the_charts_crds_are_the_ones_generated_from_the_rust_types() {
    let objects = render(&json!({})).unwrap();
    let rendered: Vec<&Object> = objects
        .iter()
        .filter(|o| o.kind == "CustomResourceDefinition")
        .collect();
    let generated = node_agent::policy::crd::crd_yaml();
    assert_eq!(
        rendered.len(),
        generated.len(),
        "the chart ships {} CRDs, the code defines {}",
        rendered.len(),
        generated.len()
    );
    for (file, yaml) in generated {
        let want: Value = serde_yaml::from_str(&yaml).unwrap();
        let name = want["metadata"]["name"].as_str().unwrap();
        let got = rendered
            .iter()
            .find(|o| o.name == name)
            .unwrap_or_else(|| panic!("the chart lacks CRD {name}"));
        assert_eq!(
            got.value, want,
            "helm/meshwork/crds/{file} differs from the Rust types: run `make crds`"
        );
    }
}

#[test]
fn cilium_policy_crds_and_their_rbac_come_only_with_compat_cilium_policies() {
    let crd_names = |objects: &[Object]| -> Vec<String> {
        objects
            .iter()
            .filter(|o| o.kind == "CustomResourceDefinition")
            .map(|o| o.name.clone())
            .collect()
    };
    let grants_cilium = |objects: &[Object]| {
        objects
            .iter()
            .filter(|o| o.kind == "ClusterRole")
            .any(|o| o.value.to_string().contains("ciliumnetworkpolicies"))
    };
    let off = render(&json!({})).unwrap();
    assert!(
        crd_names(&off).iter().all(|n| !n.ends_with(".cilium.io")),
        "{:?}",
        crd_names(&off)
    );
    assert!(!grants_cilium(&off), "no cilium.io access unless asked");
    assert_eq!(
        mesh_chart::config_map(&off, "meshwork-config")["compat-cilium-policies"],
        "false"
    );
    let on = render(&json!({"compat": {"ciliumPolicies": true}})).unwrap();
    assert!(grants_cilium(&on));
    assert_eq!(
        mesh_chart::config_map(&on, "meshwork-config")["compat-cilium-policies"],
        "true"
    );
    for (file, yaml) in node_agent::policy::crd::cilium_crd_yaml() {
        let want: Value = serde_yaml::from_str(&yaml).unwrap();
        let name = want["metadata"]["name"].as_str().unwrap();
        let got = on
            .iter()
            .find(|o| o.kind == "CustomResourceDefinition" && o.name == name)
            .unwrap_or_else(|| panic!("compat.ciliumPolicies=true installs no CRD {name}"));
        assert_eq!(
            got.value, want,
            "templates/cilium-policy-crds.yaml ({file}) differs from the Rust types: run `make crds`"
        );
        assert_eq!(want["spec"]["group"], "cilium.io");
        assert_eq!(want["spec"]["versions"][0]["name"], "v2");
        let schema = &want["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        assert!(
            schema["properties"]["specs"]["items"]["properties"]["endpointSelector"].is_object()
        );
    }
}

#[test]
fn the_certgen_jobs_arguments_are_accepted_by_meshctl() {
    let objects = render(&json!({})).unwrap();
    let job = objects
        .iter()
        .find(|o| o.kind == "Job")
        .expect("certgen Job");
    let args: Vec<String> = serde_json::from_value(
        job.value["spec"]["template"]["spec"]["containers"][0]["args"].clone(),
    )
    .unwrap();
    let exe = std::env::current_exe().unwrap();
    let meshctl = exe
        .parent()
        .and_then(std::path::Path::parent)
        .unwrap()
        .join("meshctl");
    assert!(
        meshctl.exists(),
        "{} is missing: run `cargo build --workspace --bins` (make test does)",
        meshctl.display()
    );
    // No cluster is reachable: meshctl must get past its argument parser
    // (exit 2 is clap's usage error) and fail on the Kubernetes client.
    let out = std::process::Command::new(meshctl)
        .args(&args)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(2),
        "meshctl refuses the Job's arguments {args:?}: {err}"
    );
    assert!(err.contains("Kubernetes client"), "{err}");
}

/// The key-mode check of mesh-certs (owner and group only) and the pods'
/// Secret mounts agree: the non-root mesh-apiserver reads its key through
/// its fsGroup with mode 0440; the root node-agent's key is 0400.
#[test]
fn tls_keys_are_mounted_readable_by_the_process_and_nobody_else() {
    for (name, values) in scenarios() {
        let objects = render(&values).unwrap_or_else(|e| panic!("{name}: {e}"));
        let etcd_secret =
            values["clustermesh"]["apiserver"]["etcd"]["tls"]["existingSecret"].as_str();
        let mut checked = 0;
        for o in &objects {
            let spec = match o.kind.as_str() {
                "Deployment" | "DaemonSet" => &o.value["spec"]["template"]["spec"],
                _ => continue,
            };
            for v in spec["volumes"].as_array().into_iter().flatten() {
                let Some(secret) = v["secret"]["secretName"].as_str() else {
                    continue;
                };
                if !secret.ends_with("-tls") && Some(secret) != etcd_secret {
                    continue;
                }
                let mode = v["secret"]["defaultMode"].as_u64().unwrap_or_else(|| {
                    panic!("{name}: {} mounts {secret} with the default 0644", o.name)
                });
                assert_eq!(
                    mode & 0o007,
                    0,
                    "{name}: {} mounts {secret} readable by others",
                    o.name
                );
                checked += 1;
                let runs_as = spec["containers"][0]["securityContext"]["runAsUser"].as_u64();
                if runs_as.is_some_and(|u| u != 0) {
                    assert_eq!(
                        (spec["securityContext"]["fsGroup"].as_u64(), mode & 0o040),
                        (runs_as, 0o040),
                        "{name}: {} runs as {runs_as:?}: it reads {secret} through its fsGroup",
                        o.name
                    );
                }
            }
        }
        assert_eq!(
            checked,
            2 + usize::from(etcd_secret.is_some()),
            "{name}: the apiserver's and the agents' TLS mounts (and the etcd client's)"
        );
    }
}

/// External etcd over TLS: the ConfigMap's keys are the mesh-apiserver's
/// flag names, its parser turns them into the paths of the files, and the
/// Deployment mounts the Secret's keys at exactly those paths.
#[test]
fn external_etcd_tls_reaches_the_apiserver_parser_and_the_secret_is_mounted_at_its_paths() {
    let values = json!({"clustermesh": {"apiserver": {"etcd": {
        "mode": "external",
        "endpoints": ["https://etcd-0.etcd:2379", "https://etcd-1.etcd:2379"],
        "tls": {"existingSecret": "external-etcd-client", "serverName": "etcd.example"}
    }}}});
    let objects = render(&values).unwrap();
    let map = config_map(&objects, "mesh-apiserver-config");
    let keys = mesh_apiserver::config::Config::keys();
    for k in ["etcd-ca", "etcd-cert", "etcd-key", "etcd-server-name"] {
        assert!(map.contains_key(k), "the ConfigMap lacks {k}: {map:?}");
        assert!(
            keys.contains(&k.to_string()),
            "{k} is no mesh-apiserver flag"
        );
    }
    let cfg = mesh_apiserver::config::Config::from_map(&map)
        .unwrap_or_else(|e| panic!("the mesh-apiserver refuses the ConfigMap: {e}\n{map:?}"));
    cfg.local().unwrap();
    let plan = cfg.etcd_plan().unwrap();
    assert_eq!(
        plan.endpoints,
        vec!["https://etcd-0.etcd:2379", "https://etcd-1.etcd:2379"]
    );
    let tls = plan.tls.expect("TLS to etcd");
    let (cert, key) = tls.client.clone().expect("a client certificate");
    assert_eq!(tls.server_name.as_deref(), Some("etcd.example"));

    let deployment = objects
        .iter()
        .find(|o| o.kind == "Deployment" && o.name == "mesh-apiserver")
        .expect("mesh-apiserver Deployment");
    let spec = &deployment.value["spec"]["template"]["spec"];
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["secret"]["secretName"] == "external-etcd-client")
        .unwrap_or_else(|| panic!("no volume of the Secret: {}", spec["volumes"]));
    let container = spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "mesh-apiserver")
        .unwrap();
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .unwrap_or_else(|| panic!("the Secret's volume is not mounted: {container}"));
    assert_eq!(mount["readOnly"], true);
    let dir = std::path::Path::new(mount["mountPath"].as_str().unwrap());
    let mounted: Vec<(String, std::path::PathBuf)> = volume["secret"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["key"].as_str().unwrap().to_string(),
                dir.join(i["path"].as_str().unwrap()),
            )
        })
        .collect();
    assert_eq!(
        mounted,
        vec![
            ("ca.crt".to_string(), tls.ca),
            ("tls.crt".to_string(), cert),
            ("tls.key".to_string(), key),
        ],
        "Secret keys and the paths the flags name"
    );

    // Verifying the server only: the CA alone is mounted and named.
    let values = json!({"clustermesh": {"apiserver": {"etcd": {
        "mode": "external",
        "endpoints": ["https://etcd-0.etcd:2379"],
        "tls": {"existingSecret": "etcd-ca-only", "clientCertificate": false}
    }}}});
    let objects = render(&values).unwrap();
    let map = config_map(&objects, "mesh-apiserver-config");
    assert!(
        !map.contains_key("etcd-cert") && !map.contains_key("etcd-key"),
        "{map:?}"
    );
    let tls = mesh_apiserver::config::Config::from_map(&map)
        .unwrap()
        .etcd_plan()
        .unwrap()
        .tls
        .unwrap();
    assert_eq!(tls.client, None);
    let deployment = objects
        .iter()
        .find(|o| o.kind == "Deployment" && o.name == "mesh-apiserver")
        .unwrap();
    let items = deployment.value["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["secret"]["secretName"] == "etcd-ca-only")
        .unwrap()["secret"]["items"]
        .clone();
    assert_eq!(items, json!([{"key": "ca.crt", "path": "ca.crt"}]));
}

#[test]
fn certificate_renewal_values_reach_the_apiserver_parser_with_the_ca_mounted_and_rbac_to_write_back()
 {
    let values = json!({"clustermesh": {"apiserver": {"tls": {"certLifetimeSeconds": 120}}}});
    let objects = render(&values).unwrap();
    let map = config_map(&objects, "mesh-apiserver-config");
    let cfg = mesh_apiserver::config::Config::from_map(&map)
        .unwrap_or_else(|e| panic!("the mesh-apiserver refuses the ConfigMap: {e}\n{map:?}"));
    let signer = cfg
        .signer()
        .unwrap()
        .expect("autoRenew (the default) gives the mesh-apiserver its CA");
    assert_eq!(signer.lifetime, std::time::Duration::from_secs(120));
    let deployment = objects
        .iter()
        .find(|o| o.kind == "Deployment" && o.name == "mesh-apiserver")
        .expect("mesh-apiserver Deployment");
    let spec = &deployment.value["spec"]["template"]["spec"];
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["secret"]["secretName"] == "meshwork-ca")
        .unwrap_or_else(|| panic!("no volume of meshwork-ca: {}", spec["volumes"]));
    let mount = spec["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the CA volume is mounted");
    let dir = std::path::Path::new(mount["mountPath"].as_str().unwrap());
    assert_eq!(signer.cert, dir.join("ca.crt"));
    assert_eq!(signer.key, dir.join("ca.key"));
    let role = objects
        .iter()
        .find(|o| o.kind == "Role" && o.name == "mesh-apiserver")
        .expect("mesh-apiserver Role");
    let writes: Vec<&Value> = role.value["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["verbs"].as_array().unwrap().iter().any(|v| v == "update"))
        .filter(|r| r["resources"][0] == "secrets")
        .collect();
    let names: Vec<&str> = writes
        .iter()
        .flat_map(|r| r["resourceNames"].as_array().unwrap())
        .filter_map(Value::as_str)
        .collect();
    for secret in [
        "meshwork-clustermesh",
        "meshwork-apiserver-tls",
        "meshwork-node-agent-tls",
    ] {
        assert!(names.contains(&secret), "cannot write {secret}: {names:?}");
    }

    // Off: no CA in the pod, no signer, no Secret writes.
    let values = json!({"clustermesh": {"apiserver": {"tls": {"autoRenew": false}}}});
    let objects = render(&values).unwrap();
    let cfg =
        mesh_apiserver::config::Config::from_map(&config_map(&objects, "mesh-apiserver-config"))
            .unwrap();
    assert!(cfg.signer().unwrap().is_none());
    let deployment = objects
        .iter()
        .find(|o| o.kind == "Deployment" && o.name == "mesh-apiserver")
        .unwrap();
    assert!(
        !deployment.value["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["secret"]["secretName"] == "meshwork-ca"),
        "the CA is not mounted"
    );
}

/// With encryption on, the WireGuard device runs in the pod's `wireguard`
/// container (an agent container restart leaves the tunnel up) and the
/// agent only attaches to it: the container's device is the one the agent's
/// config names (interface, port, socket dir, key in the same state dir).
/// Off, there is no container and an agent turned on at runtime starts the
/// device itself.
#[test]
fn with_encryption_the_device_runs_in_its_own_container_the_agent_attaches_to() {
    for (name, values) in scenarios() {
        let objects = render(&values).unwrap_or_else(|e| panic!("{name}: {e}"));
        let map = config_map(&objects, "meshwork-config");
        let cfg = node_agent::config::AgentConfig::parse_with_map(
            &map,
            ["node-agent", "--node-name=worker-1"],
        )
        .unwrap();
        let enabled = values["encryption"]["enabled"].as_bool().unwrap_or(false);
        assert_eq!(cfg.wireguard_device_start, !enabled, "{name}");
        let ds = objects
            .iter()
            .find(|o| o.kind == "DaemonSet" && o.name == "node-agent")
            .expect("the node-agent DaemonSet");
        let spec = &ds.value["spec"]["template"]["spec"];
        let containers = spec["containers"].as_array().unwrap();
        let wg = containers.iter().find(|c| c["name"] == "wireguard");
        let Some(wg) = wg else {
            assert!(!enabled, "{name}: encryption on but no wireguard container");
            continue;
        };
        assert!(enabled, "{name}: a wireguard container with encryption off");
        let args: Vec<&str> = wg["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args[0], "/usr/local/bin/mesh-wg", "{name}");
        for want in [
            format!("--ifname={}", cfg.wireguard_interface),
            format!("--port={}", cfg.wireguard_port),
            format!("--uapi-dir={}", mesh_wireguard::DEFAULT_UAPI_DIR),
            format!("--state-dir={}", cfg.state_dir.display()),
        ] {
            assert!(args.contains(&want.as_str()), "{name}: {want} in {args:?}");
        }
        let mounts = |c: &serde_json::Value| -> Vec<String> {
            c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    format!(
                        "{}={}",
                        m["name"].as_str().unwrap(),
                        m["mountPath"].as_str().unwrap()
                    )
                })
                .collect()
        };
        let agent = containers
            .iter()
            .find(|c| c["name"] == "node-agent")
            .unwrap();
        for shared in [
            format!("wireguard-run={}", mesh_wireguard::DEFAULT_UAPI_DIR),
            format!("state={}", cfg.state_dir.display()),
        ] {
            assert!(
                mounts(wg).contains(&shared),
                "{name}: wireguard mounts {shared}"
            );
            assert!(
                mounts(&agent.clone()).contains(&shared),
                "{name}: node-agent mounts {shared}"
            );
        }
    }
}

#[test]
fn services_and_egress_values_reach_the_agent_and_apiserver_parsers_and_the_pods() {
    let values = &scenarios()
        .into_iter()
        .find(|(n, _)| *n == "services and egress")
        .unwrap()
        .1;
    let objects = render(values).unwrap();
    let agent = node_agent::config::AgentConfig::parse_with_map(
        &config_map(&objects, "meshwork-config"),
        ["node-agent", "--node-name=n1"],
    )
    .expect("the agent parses its ConfigMap");
    assert!(!agent.enable_bpf_masquerade);
    assert_eq!(
        agent
            .non_masquerade_cidrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["172.16.0.0/12", "192.168.0.0/16"]
    );
    assert_eq!(agent.bpf_lb_maglev_hash_seed, "my-cluster-seed");
    assert_eq!(agent.mtu, 1450);
    let apiserver =
        mesh_apiserver::config::Config::from_map(&config_map(&objects, "mesh-apiserver-config"))
            .unwrap();
    let pools = apiserver.lb_ipam_pools().expect("pools parse");
    assert_eq!(
        pools
            .iter()
            .map(|p| (p.name.as_str(), p.cidrs.len()))
            .collect::<Vec<_>>(),
        [("blue", 2), ("green", 1)]
    );
    let rbac = objects
        .iter()
        .find(|o| o.kind == "ClusterRole" && o.name == "meshwork-mesh-apiserver")
        .unwrap();
    assert!(
        rbac.value.to_string().contains("services/status"),
        "LB-IPAM may write Service status: {}",
        rbac.value
    );
    // kube-proxy-free bootstrap: both dial the API server directly.
    for (kind, name, container) in [
        ("DaemonSet", "node-agent", "node-agent"),
        ("Deployment", "mesh-apiserver", "mesh-apiserver"),
    ] {
        let o = objects
            .iter()
            .find(|o| o.kind == kind && o.name == name)
            .unwrap_or_else(|| panic!("{kind} {name}"));
        let containers = o.value["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        let c = containers
            .iter()
            .find(|c| c["name"] == container)
            .unwrap_or_else(|| panic!("{container} in {}", o.value));
        let env: std::collections::BTreeMap<String, String> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| Some((e["name"].as_str()?.into(), e["value"].as_str()?.into())))
            .collect();
        assert_eq!(
            env.get("KUBERNETES_SERVICE_HOST").map(String::as_str),
            Some("api.internal"),
            "{name}"
        );
        assert_eq!(
            env.get("KUBERNETES_SERVICE_PORT").map(String::as_str),
            Some("443"),
            "{name}"
        );
    }
    // Defaults: no pools, no status RBAC, no override of in-cluster config.
    let defaults = render(&json!({})).unwrap();
    assert!(!config_map(&defaults, "mesh-apiserver-config").contains_key("lb-ipam-pools"));
    assert!(
        !serde_json::to_string(&defaults.iter().map(|o| &o.value).collect::<Vec<_>>())
            .unwrap()
            .contains("KUBERNETES_SERVICE_HOST")
    );
}
