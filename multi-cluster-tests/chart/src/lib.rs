//! Rendering the chart with Helm's own engine (Helm v4 as a library, through
//! `helm/render.py` and the PyPI package helm-python-sdk that `make setup`
//! installs) and splitting the result into objects.
//!
//! What it is for: the chart tests, and the lab, which installs each
//! cluster's configuration from the rendered objects. What it is not for:
//! talking to a cluster.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `helm/render.py <action> --values <json>`; `Ok(stdout)` or `Err(stderr)`.
pub fn helm(action: &str, values: &serde_json::Value) -> Result<String, String> {
    let out = Command::new("python3")
        .arg(repo().join("helm/render.py"))
        .arg(action)
        .arg("--values")
        .arg(values.to_string())
        .output()
        .expect("python3 must be installed (make setup)");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains("No module named 'helm_python'"),
        "helm-python-sdk is missing: run `make setup` (it installs Helm's engine from PyPI)"
    );
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(stderr)
    }
}

/// One rendered Kubernetes object.
#[derive(Debug, Clone)]
pub struct Object {
    /// The template it came from.
    pub template: String,
    /// `kind`.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// The object.
    pub value: serde_json::Value,
}

/// Renders the chart with `values` and returns every object.
pub fn render(values: &serde_json::Value) -> Result<Vec<Object>, String> {
    let manifests: BTreeMap<String, String> = serde_json::from_str(&helm("render", values)?)
        .map_err(|e| format!("render.py output: {e}"))?;
    let mut out = Vec::new();
    for (template, text) in manifests {
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: serde_json::Value = serde::Deserialize::deserialize(doc)
                .map_err(|e| format!("{template}: not YAML: {e}"))?;
            if value.is_null() {
                continue;
            }
            out.push(Object {
                kind: value["kind"].as_str().unwrap_or_default().to_string(),
                name: value["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                template: template.clone(),
                value,
            });
        }
    }
    Ok(out)
}

/// The `data` of the ConfigMap `name`.
pub fn config_map(objects: &[Object], name: &str) -> BTreeMap<String, String> {
    let cm = objects
        .iter()
        .find(|o| o.kind == "ConfigMap" && o.name == name)
        .unwrap_or_else(|| panic!("no ConfigMap {name} rendered"));
    serde_json::from_value(cm.value["data"].clone()).expect("ConfigMap data is string → string")
}
