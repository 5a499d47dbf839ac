//! The kubelet's ConfigMap volume, for the lab: keeps a config directory
//! equal to a ConfigMap, one file per key, as a mounted ConfigMap is kept
//! (each changed key written to a temporary file and renamed over the old
//! one; keys removed from the ConfigMap removed from the directory). The
//! node-agents read that directory as `--config-dir` and re-read it while
//! running, so `kubectl edit configmap meshwork-config` reaches them as it
//! does on a real cluster.
//!
//! It also plays the kubelet's Secret volume for the TLS material: each
//! [`SecretFile`] projection keeps one file equal to one key of a Secret
//! (written atomically, key files mode 0600), so `meshctl ca rotate`
//! reaches the lab's mesh-apiserver and node-agents through their files, as
//! it reaches pods through mounted Secrets.
//!
//! What it is not for: anything outside the lab (the kubelet does this).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;

/// How often the ConfigMap is read.
pub const PERIOD: Duration = Duration::from_secs(1);

/// Makes `dir` hold exactly `data` (one file per key); returns the keys
/// written or removed. Files starting with `.` (temporaries) are left alone.
pub fn apply(dir: &Path, data: &BTreeMap<String, String>) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut changed = Vec::new();
    for (k, v) in data {
        anyhow::ensure!(
            !k.is_empty() && !k.starts_with('.') && !k.contains('/'),
            "ConfigMap key {k:?} is not a usable file name"
        );
        let path = dir.join(k);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(v.as_str()) {
            continue;
        }
        let tmp = dir.join(format!(".{k}.tmp"));
        std::fs::write(&tmp, v)?;
        std::fs::rename(&tmp, &path)?;
        changed.push(k.clone());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || data.contains_key(&name) || !entry.file_type()?.is_file() {
            continue;
        }
        std::fs::remove_file(entry.path())?;
        changed.push(name);
    }
    Ok(changed)
}

/// One Secret key projected into one file: `SECRET/KEY=PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFile {
    /// The Secret's name.
    pub secret: String,
    /// The key.
    pub key: String,
    /// The file kept equal to it.
    pub path: PathBuf,
}

impl std::str::FromStr for SecretFile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("{s:?}: expected SECRET/KEY=PATH, e.g. meshwork-ca/bundle.crt=/tmp/ca.crt");
        let (left, path) = s.split_once('=').ok_or_else(bad)?;
        let (secret, key) = left.split_once('/').ok_or_else(bad)?;
        if secret.is_empty() || key.is_empty() || path.is_empty() {
            return Err(bad());
        }
        Ok(SecretFile {
            secret: secret.into(),
            key: key.into(),
            path: path.into(),
        })
    }
}

/// Writes each projection whose Secret (in `secrets`, by name) holds its
/// key and differs from the file; returns the paths written. A missing
/// Secret or key leaves the file as it is (as the kubelet keeps a volume).
pub fn project(
    files: &[SecretFile],
    secrets: &BTreeMap<String, BTreeMap<String, Vec<u8>>>,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for f in files {
        let Some(value) = secrets.get(&f.secret).and_then(|d| d.get(&f.key)) else {
            continue;
        };
        if std::fs::read(&f.path).ok().as_deref() == Some(value.as_slice()) {
            continue;
        }
        let mode = if f.key.ends_with(".key") {
            mesh_certs::pem::KEY_MODE
        } else {
            mesh_certs::pem::CERT_MODE
        };
        mesh_certs::pem::write_atomic(&f.path, value, mode)?;
        written.push(f.path.clone());
    }
    Ok(written)
}

/// Follows ConfigMap `namespace/name` of the cluster behind `context` in
/// `kubeconfig` into `dir` until killed. A failed read keeps the directory
/// as it is (as the kubelet does) and is retried.
pub async fn run(
    kubeconfig: &Path,
    context: &str,
    namespace: &str,
    name: &str,
    dir: &Path,
    secret_files: &[SecretFile],
) -> anyhow::Result<()> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let opts = kube::config::KubeConfigOptions {
        context: Some(context.to_string()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kc, &opts).await?;
    let client = kube::Client::try_from(config)?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let secret_api: Api<Secret> = Api::namespaced(client, namespace);
    let secret_names: std::collections::BTreeSet<&str> =
        secret_files.iter().map(|f| f.secret.as_str()).collect();
    loop {
        let mut secrets = BTreeMap::new();
        for s in &secret_names {
            match secret_api.get_opt(s).await {
                Ok(Some(secret)) => {
                    let data = secret
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect();
                    secrets.insert((*s).to_string(), data);
                }
                Ok(None) => {}
                Err(e) => eprintln!("config-sync: read Secret {namespace}/{s}: {e}"),
            }
        }
        match project(secret_files, &secrets) {
            Ok(written) if !written.is_empty() => {
                eprintln!("config-sync: Secrets → {written:?}")
            }
            Ok(_) => {}
            Err(e) => eprintln!("config-sync: cannot project Secrets: {e:#}"),
        }
        match api.get_opt(name).await {
            Ok(Some(cm)) => {
                let data = cm.data.unwrap_or_default();
                match apply(dir, &data) {
                    Ok(changed) if !changed.is_empty() => {
                        eprintln!(
                            "config-sync: {namespace}/{name} → {}: {changed:?}",
                            dir.display()
                        )
                    }
                    Ok(_) => {}
                    Err(e) => eprintln!("config-sync: cannot write {}: {e:#}", dir.display()),
                }
            }
            Ok(None) => {}
            Err(e) => eprintln!("config-sync: read {namespace}/{name}: {e}"),
        }
        tokio::time::sleep(PERIOD).await;
    }
}

#[cfg(test)]
mod tests;
