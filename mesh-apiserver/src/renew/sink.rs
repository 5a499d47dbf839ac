//! Where a renewed importer certificate is written back: the clustermesh
//! entry it came from (the Secret's key, or the config directory's file).

use std::path::PathBuf;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use mesh_api::ClusterName;
use mesh_api::clustermesh::RemoteClusterConfig;

use crate::error::{Error, Result};

/// Stores a renewed client certificate in a remote's clustermesh entry.
#[async_trait::async_trait]
pub trait EntrySink: Send + Sync + std::fmt::Debug {
    /// Replaces the entry's client certificate and key, leaving the rest
    /// of the entry as it is now.
    async fn store_client_cert(&self, remote: &ClusterName, cert: &str, key: &str) -> Result<()>;
}

fn with_cert(entry: &str, remote: &ClusterName, cert: &str, key: &str) -> Result<String> {
    let mut config =
        RemoteClusterConfig::parse(remote.as_str(), entry).map_err(|e| Error::RemoteConfig {
            entry: remote.to_string(),
            reason: format!("cannot store the renewed certificate: the entry does not parse: {e}"),
        })?;
    config.client_cert = cert.to_string();
    config.client_key = key.to_string();
    Ok(config.to_yaml())
}

/// The config directory (`--clustermesh-config-dir`): one file per remote.
#[derive(Debug, Clone)]
pub struct DirectoryEntries(pub PathBuf);

#[async_trait::async_trait]
impl EntrySink for DirectoryEntries {
    async fn store_client_cert(&self, remote: &ClusterName, cert: &str, key: &str) -> Result<()> {
        let path = self.0.join(remote.as_str());
        let io = |e| Error::Io {
            what: "clustermesh entry",
            addr: path.display().to_string(),
            source: e,
        };
        let entry = std::fs::read_to_string(&path).map_err(io)?;
        let text = with_cert(&entry, remote, cert, key)?;
        mesh_certs::pem::write_atomic(&path, text.as_bytes(), 0o600)
            .map_err(|e| Error::certs(format!("writing {}", path.display()), e))
    }
}

/// The `meshwork-clustermesh` Secret: the remote's key is replaced with
/// optimistic concurrency (a concurrent edit makes it retry, not lose it).
#[derive(Clone)]
pub struct SecretEntries {
    /// The Secrets of the install namespace.
    pub api: Api<Secret>,
    /// The Secret's name.
    pub name: String,
}

impl std::fmt::Debug for SecretEntries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretEntries")
            .field("name", &self.name)
            .finish()
    }
}

#[async_trait::async_trait]
impl EntrySink for SecretEntries {
    async fn store_client_cert(&self, remote: &ClusterName, cert: &str, key: &str) -> Result<()> {
        let kube = |what: &str| {
            let what = format!("Secret {} ({what})", self.name);
            move |e| Error::Kube {
                what,
                source: Box::new(e),
            }
        };
        let mut secret = self.api.get(&self.name).await.map_err(kube("read"))?;
        let entry = secret
            .data
            .as_ref()
            .and_then(|d| d.get(remote.as_str()))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .ok_or_else(|| Error::RemoteConfig {
                entry: remote.to_string(),
                reason: format!("no key {remote} in Secret {}: removed meanwhile", self.name),
            })?;
        let text = with_cert(&entry, remote, cert, key)?;
        secret
            .data
            .get_or_insert_default()
            .insert(remote.to_string(), ByteString(text.into_bytes()));
        self.api
            .replace(&self.name, &PostParams::default(), &secret)
            .await
            .map_err(kube("write the renewed client certificate"))?;
        Ok(())
    }
}
