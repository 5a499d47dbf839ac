//! The stock kubectl (Debian's kubernetes-client) against the
//! `mesh-test-apiserver` binary: get, apply, annotate, delete, get -w.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::binary::{BINARY, Killed, ServerProcess};
use common::kubectl::Kubectl;

struct Lab {
    server: ServerProcess,
    kubectl: Kubectl,
}

fn start_binary() -> Lab {
    let server = ServerProcess::start(&["--service-cidr", "10.96.0.0/16"]);
    let addr = std::fs::read_to_string(&server.ready).unwrap();
    assert!(
        addr.trim().starts_with("127.0.0.1:"),
        "ready file holds the address: {addr}"
    );
    Lab {
        kubectl: server.kubectl().context("lab-c1"),
        server,
    }
}

impl Lab {
    fn kubectl(&self, args: &[&str]) -> std::process::Output {
        self.kubectl.output(args)
    }

    fn ok(&self, args: &[&str]) -> String {
        self.kubectl.ok(args)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.server.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: demo, labels: {app: web}}
spec:
  containers: [{name: c, image: IMAGE, ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: demo}
stringData: {password: hunter2}
"#;

const WIDGET: &str = r#"
apiVersion: example.com/v1
kind: Widget
metadata: {name: w1, namespace: demo}
spec: {size: 3}
"#;

#[test]
fn kubectl_get_apply_annotate_watch_delete() {
    let lab = start_binary();
    let ns = lab.ok(&["get", "namespaces"]);
    assert!(ns.contains("default") && ns.contains("kube-system"), "{ns}");

    let m = lab.write("m.yaml", &MANIFESTS.replace("IMAGE", "echo:1"));
    let out = lab.ok(&["apply", "-f", s(&m)]);
    for want in [
        "namespace/demo created",
        "customresourcedefinition.apiextensions.k8s.io/widgets.example.com created",
        "service/web created",
        "pod/web-1 created",
        "secret/creds created",
    ] {
        assert!(out.contains(want), "apply output lacks {want:?}: {out}");
    }
    let w = lab.write("w.yaml", WIDGET);
    assert!(
        lab.ok(&["apply", "-f", s(&w)])
            .contains("widget.example.com/w1 created")
    );
    assert!(
        lab.ok(&["get", "wd", "-n", "demo"]).contains("w1"),
        "short name from discovery works"
    );
    let ip = lab.ok(&[
        "get",
        "svc",
        "web",
        "-n",
        "demo",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    assert!(ip.starts_with("10.96."), "ClusterIP allocated: {ip}");
    assert_eq!(
        lab.ok(&[
            "get",
            "secret",
            "creds",
            "-n",
            "demo",
            "-o",
            "jsonpath={.data.password}"
        ]),
        "aHVudGVyMg==",
        "stringData is stored as base64 data"
    );

    // Tables: the columns kubectl users expect.
    let table = lab.ok(&["get", "svc", "web", "-n", "demo"]);
    assert!(
        table.contains("CLUSTER-IP") && table.contains(&ip) && table.contains("80/TCP"),
        "{table}"
    );
    lab.ok(&[
        "patch", "pod", "web-1", "-n", "demo", "--subresource=status", "--type=merge", "-p",
        r#"{"status":{"phase":"Running","podIP":"10.244.0.5","conditions":[{"type":"Ready","status":"True"}]}}"#,
    ]);
    let wide = lab.ok(&["get", "pods", "-n", "demo", "-o", "wide"]);
    assert!(
        wide.contains("STATUS") && wide.contains("Running") && wide.contains("10.244.0.5"),
        "{wide}"
    );
    let slices = lab.ok(&[
        "get",
        "endpointslices",
        "-n",
        "demo",
        "-l",
        "kubernetes.io/service-name=web",
        "-o",
        "name",
    ]);
    assert!(
        slices.contains("endpointslice.discovery.k8s.io/web-"),
        "{slices}"
    );

    // Server-side apply through kubectl.
    let w2 = lab.write("w2.yaml", &WIDGET.replace("size: 3", "size: 4"));
    assert!(
        lab.ok(&["apply", "--server-side", "-f", s(&w2)])
            .contains("serverside-applied")
    );
    assert_eq!(
        lab.ok(&[
            "get",
            "widget",
            "w1",
            "-n",
            "demo",
            "-o",
            "jsonpath={.spec.size}"
        ]),
        "4"
    );

    // A bad name is refused by the server with its reason; nothing else changes.
    let bad = lab.write(
        "bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Bad_Name, namespace: demo}\n",
    );
    let out = lab.kubectl(&["apply", "-f", s(&bad)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is invalid") && err.contains("metadata.name"),
        "{err}"
    );

    // Re-apply unchanged, then changed (strategic merge patch from kubectl).
    assert!(
        lab.ok(&["apply", "-f", s(&m)])
            .contains("pod/web-1 unchanged")
    );
    let m2 = lab.write("m2.yaml", &MANIFESTS.replace("IMAGE", "echo:2"));
    assert!(
        lab.ok(&["apply", "-f", s(&m2)])
            .contains("pod/web-1 configured")
    );
    assert_eq!(
        lab.ok(&[
            "get",
            "pod",
            "web-1",
            "-n",
            "demo",
            "-o",
            "jsonpath={.spec.containers[0].image}"
        ]),
        "echo:2"
    );

    lab.ok(&["annotate", "pod", "web-1", "-n", "demo", "owner=meshwork"]);
    assert_eq!(
        lab.ok(&[
            "get",
            "pod",
            "web-1",
            "-n",
            "demo",
            "-o",
            "jsonpath={.metadata.annotations.owner}"
        ]),
        "meshwork"
    );
    lab.ok(&["annotate", "widget", "w1", "-n", "demo", "owner=meshwork"]);
    assert_eq!(
        lab.ok(&[
            "get",
            "widget",
            "w1",
            "-n",
            "demo",
            "-o",
            "jsonpath={.metadata.annotations.owner}"
        ]),
        "meshwork"
    );

    // get -w: the current pod, then a newly created one.
    let mut watch = Killed(
        lab.kubectl
            .command()
            .args(["get", "pods", "-n", "demo", "-w", "--no-headers"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = watch.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("kubectl get -w prints the existing pod");
    assert!(first.starts_with("web-1"), "{first}");
    let p2 = lab.write(
        "p2.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web-2, namespace: demo}\nspec: {containers: [{name: c, image: x}]}\n",
    );
    lab.ok(&["create", "-f", s(&p2)]);
    let second = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("kubectl get -w prints the new pod");
        if line.starts_with("web-2") {
            break line;
        }
    };
    assert!(second.starts_with("web-2"));
    drop(watch);

    // Server-side dry run: answered, validated, not stored.
    let dry = lab.write(
        "dry.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: dry, namespace: demo}\ndata: {a: b}\n",
    );
    assert!(
        lab.ok(&["apply", "--dry-run=server", "-f", s(&dry)])
            .contains("configmap/dry created (server dry run)")
    );
    assert!(
        !lab.kubectl(&["get", "cm", "dry", "-n", "demo"])
            .status
            .success(),
        "dry run stored nothing"
    );
    let out = lab.kubectl(&["apply", "--dry-run=server", "-f", s(&bad)]);
    assert!(!out.status.success(), "dry run still validates");

    // Typed create commands (kubectl sends protobuf for these).
    lab.ok(&["create", "namespace", "typed"]);
    lab.ok(&[
        "create",
        "configmap",
        "c1",
        "-n",
        "typed",
        "--from-literal=a=b",
    ]);
    lab.ok(&[
        "create",
        "secret",
        "generic",
        "s1",
        "-n",
        "typed",
        "--from-literal=pw=hunter2",
    ]);
    assert_eq!(
        lab.ok(&["get", "cm", "c1", "-n", "typed", "-o", "jsonpath={.data.a}"]),
        "b"
    );
    assert_eq!(
        lab.ok(&[
            "get",
            "secret",
            "s1",
            "-n",
            "typed",
            "-o",
            "jsonpath={.data.pw}"
        ]),
        "aHVudGVyMg=="
    );
    lab.ok(&["delete", "namespace", "typed"]);

    // Delete: one object, then everything; the namespace goes with its content.
    assert!(
        lab.ok(&["delete", "secret", "creds", "-n", "demo"])
            .contains("secret \"creds\" deleted")
    );
    let out = lab.kubectl(&["get", "secret", "creds", "-n", "demo"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NotFound"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lab.ok(&["delete", "-f", s(&w)]);
    lab.ok(&["delete", "-f", s(&m2), "--ignore-not-found"]);
    let out = lab.kubectl(&["get", "namespace", "demo"]);
    assert!(!out.status.success(), "namespace demo is gone");
    assert!(!lab.ok(&["get", "crd"]).contains("widgets.example.com"));
}

#[test]
fn binary_refuses_a_service_cidr_too_small_to_allocate_from() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BINARY)
        .args(["--service-cidr", "10.96.0.0/30", "--kubeconfig-out"])
        .arg(dir.path().join("kc"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("service CIDR 10.96.0.0/30") && err.contains("/28 or shorter"),
        "{err}"
    );
    assert!(!dir.path().join("kc").exists(), "nothing written");
    let out = Command::new(BINARY)
        .args([
            "--service-cidr",
            "not-a-cidr",
            "--kubeconfig-out",
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--service-cidr"));
}

/// A kube-rs client from the kubeconfig the binary wrote.
async fn kube_client(lab: &Lab) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc =
        kube::config::Kubeconfig::read_from(&lab.server.kubeconfig).expect("kubeconfig parses");
    let opts = kube::config::KubeConfigOptions {
        context: Some("lab-c1".into()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .expect("kubeconfig loads");
    kube::Client::try_from(config).expect("client builds")
}

/// The lines of `kubectl describe`'s `Events:` section.
fn events_section(describe: &str) -> Vec<&str> {
    describe
        .lines()
        .skip_while(|l| !l.starts_with("Events:"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_describe_and_get_events_show_a_warning_recorded_through_events_k8s_io() {
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let lab = start_binary();
    let svc = lab.write(
        "svc.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {ports: [{port: 80}]}\n",
    );
    lab.ok(&["apply", "-f", s(&svc)]);
    let message = "service.meshwork.io/global: \"yes-please\" is not true or false";
    let quiet = lab.ok(&["describe", "svc", "web", "-n", "shop"]);
    assert!(
        events_section(&quiet).concat().contains("<none>"),
        "no events yet:\n{quiet}"
    );

    // The Warning as the mesh-apiserver sends it: kube-rs' Recorder, which
    // creates an events.k8s.io/v1 Event and merge-patches its series on a repeat.
    let client = kube_client(&lab).await;
    let services: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(client.clone(), "shop");
    let web = services.get("web").await.unwrap();
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "mesh-apiserver".into(),
            instance: Some("mesh-apiserver-0".into()),
        },
    );
    let warning = Event {
        type_: EventType::Warning,
        reason: "MeshworkInvalidConfig".into(),
        note: Some(message.into()),
        action: "Export".into(),
        secondary: None,
    };
    let reference = kube::Resource::object_ref(&web, &());
    recorder.publish(&warning, &reference).await.unwrap();
    recorder.publish(&warning, &reference).await.unwrap();

    // kubectl describe lists core/v1 Events with the Service's name,
    // namespace, kind and uid as field selectors.
    let described = lab.ok(&["describe", "svc", "web", "-n", "shop"]);
    let section = events_section(&described);
    let line = section
        .iter()
        .find(|l| l.contains("MeshworkInvalidConfig"))
        .unwrap_or_else(|| panic!("describe shows the Warning:\n{described}"));
    for want in ["Warning", message, "mesh-apiserver", "(x2 over"] {
        assert!(line.contains(want), "{want:?} in {line:?}\n{described}");
    }
    assert!(
        section[1].split_whitespace().collect::<Vec<_>>()
            == ["Type", "Reason", "Age", "From", "Message"],
        "{described}"
    );

    // kubectl get events: kube-apiserver's columns, through both APIs.
    for resource in ["events", "events.events.k8s.io"] {
        let table = lab.ok(&["get", resource, "-n", "shop"]);
        let mut lines = table.lines();
        let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
        assert_eq!(
            header,
            ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
            "{table}"
        );
        let row = lines.next().unwrap_or("");
        for want in ["Warning", "MeshworkInvalidConfig", "service/web", message] {
            assert!(row.contains(want), "{want:?} in {resource} row:\n{table}");
        }
    }
    let wide = lab.ok(&["get", "events", "-n", "shop", "-o", "wide"]);
    assert!(
        wide.contains("mesh-apiserver, mesh-apiserver-0") && wide.contains(" 2 "),
        "SOURCE and COUNT columns:\n{wide}"
    );
    let warnings = lab.ok(&[
        "get",
        "events",
        "-n",
        "shop",
        "--field-selector",
        "type=Warning,involvedObject.kind=Service",
        "-o",
        "name",
    ]);
    assert!(warnings.trim().starts_with("event/web."), "{warnings}");
    let normal = lab.kubectl(&[
        "get",
        "events",
        "-n",
        "shop",
        "--field-selector",
        "type=Normal",
    ]);
    let (out, err) = (
        String::from_utf8_lossy(&normal.stdout),
        String::from_utf8_lossy(&normal.stderr),
    );
    assert!(
        normal.status.success() && out.is_empty() && err.contains("No resources found"),
        "no Normal events: {out}{err}"
    );
}
