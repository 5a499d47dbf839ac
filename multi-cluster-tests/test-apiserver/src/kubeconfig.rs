//! The kubeconfig the server writes for its clients.

use base64::Engine as _;
use serde_json::json;

/// A kubeconfig (YAML) with one cluster, one user (bearer token) and one
/// context, all named after `context`, the CA inline.
pub fn render(context: &str, server_url: &str, ca_pem: &str, token: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let user = format!("{context}-admin");
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "current-context": context,
        "clusters": [{
            "name": context,
            "cluster": {
                "server": server_url,
                "certificate-authority-data": b64.encode(ca_pem.as_bytes()),
            },
        }],
        "users": [{ "name": user, "user": { "token": token } }],
        "contexts": [{
            "name": context,
            "context": { "cluster": context, "user": user, "namespace": "default" },
        }],
    });
    serde_yaml::to_string(&doc).expect("a JSON value always serialises to YAML")
}
