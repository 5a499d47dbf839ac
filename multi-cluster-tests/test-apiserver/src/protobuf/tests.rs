use super::*;

fn field(n: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![((n << 3) | 2) as u8, payload.len() as u8];
    out.extend_from_slice(payload);
    out
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
            "Deployment",
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
