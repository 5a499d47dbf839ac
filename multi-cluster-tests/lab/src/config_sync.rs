//! The kubelet's ConfigMap volume, for the lab: keeps a config directory
//! equal to a ConfigMap, one file per key, as a mounted ConfigMap is kept
//! (each changed key written to a temporary file and renamed over the old
//! one; keys removed from the ConfigMap removed from the directory). The
//! node-agents read that directory as `--config-dir` and re-read it while
//! running, so `kubectl edit configmap meshwork-config` reaches them as it
//! does on a real cluster.
//!
//! What it is not for: anything outside the lab (the kubelet does this).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
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

/// Follows ConfigMap `namespace/name` of the cluster behind `context` in
/// `kubeconfig` into `dir` until killed. A failed read keeps the directory
/// as it is (as the kubelet does) and is retried.
pub async fn run(
    kubeconfig: &Path,
    context: &str,
    namespace: &str,
    name: &str,
    dir: &Path,
) -> anyhow::Result<()> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let opts = kube::config::KubeConfigOptions {
        context: Some(context.to_string()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kc, &opts).await?;
    let api: Api<ConfigMap> = Api::namespaced(kube::Client::try_from(config)?, namespace);
    loop {
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
