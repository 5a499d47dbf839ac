use super::*;

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// Length-delimited field `n`.
fn field(n: u64, payload: &[u8]) -> Vec<u8> {
    [
        varint((n << 3) | 2),
        varint(payload.len() as u64),
        payload.to_vec(),
    ]
    .concat()
}

/// Varint field `n`.
fn varint_field(n: u64, v: u64) -> Vec<u8> {
    [varint(n << 3), varint(v)].concat()
}

fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let tm = [field(1, api_version.as_bytes()), field(2, kind.as_bytes())].concat();
    let unknown = [field(1, &tm), field(2, raw)].concat();
    [b"k8s\0".to_vec(), unknown].concat()
}

#[test]
fn decodes_a_configmap_with_labels_and_data() {
    let label = [field(1, b"app"), field(2, b"web")].concat();
    let meta = [field(1, b"cfg"), field(3, b"demo"), field(11, &label)].concat();
    let entry = [field(1, b"k"), field(2, b"v")].concat();
    let raw = [field(1, &meta), field(2, &entry)].concat();
    let obj = decode(&envelope("v1", "ConfigMap", &raw)).unwrap();
    assert_eq!(
        obj,
        json!({ "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": { "name": "cfg", "namespace": "demo", "labels": { "app": "web" } },
                "data": { "k": "v" } })
    );
}

#[test]
fn secret_data_is_base64_and_unknown_kinds_are_refused() {
    let entry = [field(1, b"pw"), field(2, b"hunter2")].concat();
    let raw = [
        field(1, &field(1, b"s")),
        field(2, &entry),
        field(3, b"Opaque"),
    ]
    .concat();
    let obj = decode(&envelope("v1", "Secret", &raw)).unwrap();
    assert_eq!(obj["data"]["pw"], "aHVudGVyMg==");
    assert_eq!(obj["type"], "Opaque");
    assert!(
        decode(&envelope(
            "apps/v1",
            "DaemonSet",
            &[field(1, &field(1, b"d")), field(2, b"x")].concat()
        ))
        .is_none()
    );
    assert!(decode(b"not protobuf").is_none());
    assert!(
        decode(b"k8s\0\xff\xff").is_none(),
        "truncated input is refused, not a panic"
    );
}

/// What `kubectl create deployment web --image=img:1 --replicas=3
/// --port=8080 -- serve` sends, with the empty fields Go's encoder writes.
fn kubectl_deployment(extra_container_field: &[u8]) -> Vec<u8> {
    let labels = field(11, &[field(1, b"app"), field(2, b"web")].concat());
    let meta = [
        field(1, b"web"),
        field(2, b""),
        field(3, b""),
        labels.clone(),
    ]
    .concat();
    let port = [
        field(1, b""),
        varint_field(2, 0),
        varint_field(3, 8080),
        field(4, b""),
    ]
    .concat();
    let container = [
        field(1, b"img"),
        field(2, b"img:1"),
        field(3, b"serve"),
        field(5, b""),
        field(6, &port),
        field(8, b""),
        field(13, b""),
        field(14, b""),
        varint_field(16, 0),
        extra_container_field.to_vec(),
    ]
    .concat();
    let pod_spec = [
        field(2, &container),
        field(3, b""),
        field(6, b""),
        varint_field(11, 0),
    ]
    .concat();
    let template = [
        field(
            1,
            &[
                labels,
                field(8, &[varint_field(1, 0), varint_field(2, 0)].concat()),
            ]
            .concat(),
        ),
        field(2, &pod_spec),
    ]
    .concat();
    let selector = field(1, &[field(1, b"app"), field(2, b"web")].concat());
    let spec = [
        varint_field(1, 3),
        field(2, &selector),
        field(3, &template),
        field(4, &field(1, b"")),
        varint_field(5, 0),
        varint_field(7, 0),
    ]
    .concat();
    let raw = [field(1, &meta), field(2, &spec), field(3, b"")].concat();
    envelope("apps/v1", "Deployment", &raw)
}

#[test]
fn decodes_the_deployment_kubectl_create_sends() {
    let obj = decode(&kubectl_deployment(&[])).unwrap();
    assert_eq!(
        obj,
        json!({ "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": "web", "labels": { "app": "web" } },
            "spec": {
                "replicas": 3,
                "selector": { "matchLabels": { "app": "web" } },
                "template": {
                    "metadata": { "labels": { "app": "web" } },
                    "spec": { "containers": [{ "name": "img", "image": "img:1", "command": ["serve"],
                        "ports": [{ "containerPort": 8080 }], "resources": {} }] },
                },
                "strategy": {},
            } })
    );
}

#[test]
fn a_deployment_field_with_a_value_this_server_does_not_know_is_refused() {
    // Field 10 of a Container is its livenessProbe: empty is nothing to
    // lose; set, the body is refused (415) rather than stored without it.
    assert!(decode(&kubectl_deployment(&field(10, b""))).is_some());
    assert!(decode(&kubectl_deployment(&field(10, &field(1, b"x")))).is_none());
}
