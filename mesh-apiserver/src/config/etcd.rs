//! How the mesh-apiserver reaches etcd: plaintext `http://` endpoints, or
//! `https://` endpoints with a CA bundle that etcd's server certificate must
//! chain to and, for etcd's `--client-cert-auth`, a client certificate.
//!
//! [`EtcdFlags::plan`] checks the flags against each other and touches no
//! file (table-tested); [`EtcdPlan::load`] then reads and parses the files
//! it names. Both run at start-up, before anything is served, and fail
//! closed: nothing here falls back to plaintext or to an unverified server.

use std::path::{Path, PathBuf};

use rustls_pki_types::ServerName;

use crate::error::{Error, Result};
use crate::store::{EtcdClientPem, EtcdConnection, EtcdTls};

/// The etcd flags as given (`--etcd-*`). Empty values count as not given
/// (the flag parser refuses empty paths before they get here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdFlags {
    /// `--etcd-endpoints`.
    pub endpoints: Vec<String>,
    /// `--etcd-ca`.
    pub ca: Option<PathBuf>,
    /// `--etcd-cert`.
    pub cert: Option<PathBuf>,
    /// `--etcd-key`.
    pub key: Option<PathBuf>,
    /// `--etcd-server-name`.
    pub server_name: Option<String>,
}

/// The checked flags: what to read and how to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdPlan {
    /// The endpoints, all `http://` (then `tls` is `None`) or all `https://`.
    pub endpoints: Vec<String>,
    /// TLS, for `https://` endpoints.
    pub tls: Option<TlsPlan>,
}

/// The TLS files of an [`EtcdPlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPlan {
    /// `--etcd-ca`.
    pub ca: PathBuf,
    /// `--etcd-cert` and `--etcd-key`, when a client certificate is used.
    pub client: Option<(PathBuf, PathBuf)>,
    /// `--etcd-server-name`.
    pub server_name: Option<String>,
}

fn config_err(key: &str, value: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Config {
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

fn given(p: &Option<PathBuf>) -> Option<&Path> {
    p.as_deref().filter(|p| !p.as_os_str().is_empty())
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

impl EtcdFlags {
    /// Checks the flags against each other; reads nothing.
    pub fn plan(&self) -> Result<EtcdPlan> {
        let endpoints: Vec<String> = self
            .endpoints
            .iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(config_err(
                "etcd-endpoints",
                "",
                "no endpoint: list etcd's client URLs, e.g. https://etcd-0:2379,https://etcd-1:2379",
            ));
        }
        let mut https = Vec::new();
        let mut http = Vec::new();
        for e in &endpoints {
            if e.starts_with("https://") {
                https.push(e.as_str());
            } else if e.starts_with("http://") {
                http.push(e.as_str());
            } else {
                return Err(config_err(
                    "etcd-endpoints",
                    e.as_str(),
                    "no scheme: write http://host:port (plaintext) or https://host:port (TLS, with --etcd-ca)",
                ));
            }
        }
        if !https.is_empty() && !http.is_empty() {
            return Err(config_err(
                "etcd-endpoints",
                endpoints.join(","),
                format!(
                    "mixes https:// and http:// endpoints: {} would be plaintext; write every endpoint as https://",
                    http.join(",")
                ),
            ));
        }
        let ca = given(&self.ca);
        let cert = given(&self.cert);
        let key = given(&self.key);
        let server_name = self
            .server_name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty());
        if https.is_empty() {
            // Plaintext: a TLS flag here would be ignored, and the
            // operator who set it believes the connection is protected.
            let set = [
                ("etcd-ca", ca.map(show)),
                ("etcd-cert", cert.map(show)),
                ("etcd-key", key.map(show)),
                ("etcd-server-name", server_name.map(str::to_string)),
            ];
            if let Some((flag, Some(value))) = set.into_iter().find(|(_, v)| v.is_some()) {
                return Err(config_err(
                    flag,
                    value,
                    format!(
                        "given with plaintext endpoints ({}): the connection would not be encrypted; write the endpoints as https://",
                        http.join(",")
                    ),
                ));
            }
            return Ok(EtcdPlan {
                endpoints,
                tls: None,
            });
        }
        let Some(ca) = ca else {
            return Err(config_err(
                "etcd-ca",
                "",
                "required with https:// endpoints: the PEM bundle of the CA that issued etcd's server certificate (without it the server cannot be verified)",
            ));
        };
        let client = match (cert, key) {
            (Some(c), Some(k)) => Some((c.to_path_buf(), k.to_path_buf())),
            (None, None) => None,
            (Some(c), None) => {
                return Err(config_err(
                    "etcd-key",
                    "",
                    format!(
                        "required with --etcd-cert={}: the client certificate's private key (PEM)",
                        show(c)
                    ),
                ));
            }
            (None, Some(k)) => {
                return Err(config_err(
                    "etcd-cert",
                    "",
                    format!(
                        "required with --etcd-key={}: the client certificate (PEM) that key belongs to",
                        show(k)
                    ),
                ));
            }
        };
        if let Some(name) = server_name {
            ServerName::try_from(name).map_err(|e| {
                config_err(
                    "etcd-server-name",
                    name,
                    format!("not a DNS name or IP address ({e}): give a name etcd's server certificate carries"),
                )
            })?;
        }
        Ok(EtcdPlan {
            endpoints,
            tls: Some(TlsPlan {
                ca: ca.to_path_buf(),
                client,
                server_name: server_name.map(str::to_string),
            }),
        })
    }
}

impl EtcdPlan {
    /// Reads and parses the files of the plan: the CA bundle must hold CA
    /// certificates, the client certificate must parse and its key must
    /// belong to it (and not be readable by others). Errors name the flag
    /// and the path.
    pub fn load(&self) -> Result<EtcdConnection> {
        let Some(tls) = &self.tls else {
            return Ok(EtcdConnection {
                endpoints: self.endpoints.clone(),
                tls: None,
            });
        };
        let file_err = |flag: &str, path: &Path, what: &str, e: mesh_certs::Error| {
            config_err(
                flag,
                show(path),
                format!(
                    "{}: give a readable PEM file holding {what}",
                    mesh_api::report(&e)
                ),
            )
        };
        let ca_pem = mesh_certs::pem::read_text(&tls.ca)
            .map_err(|e| file_err("etcd-ca", &tls.ca, "the CA certificates", e))?;
        mesh_certs::TrustBundle::from_pem(&ca_pem, &show(&tls.ca))
            .map_err(|e| file_err("etcd-ca", &tls.ca, "the CA certificates", e))?;
        let client = match &tls.client {
            None => None,
            Some((cert, key)) => {
                let cert_pem = mesh_certs::pem::read_text(cert)
                    .map_err(|e| file_err("etcd-cert", cert, "the client certificate", e))?;
                mesh_certs::pem::parse_certs(&cert_pem, &show(cert))
                    .map_err(|e| file_err("etcd-cert", cert, "the client certificate", e))?;
                let key_pem = mesh_certs::pem::read_key_file(key)
                    .map_err(|e| file_err("etcd-key", key, "the private key", e))?;
                mesh_certs::pem::parse_private_key(&key_pem, &show(key))
                    .map_err(|e| file_err("etcd-key", key, "the private key", e))?;
                mesh_certs::TlsIdentity::from_pem(&cert_pem, &key_pem, &show(cert), &show(key))
                    .map_err(|e| {
                        config_err(
                            "etcd-key",
                            show(key),
                            format!(
                                "{}: give the key of --etcd-cert={}",
                                mesh_api::report(&e),
                                show(cert)
                            ),
                        )
                    })?;
                Some(EtcdClientPem { cert_pem, key_pem })
            }
        };
        Ok(EtcdConnection {
            endpoints: self.endpoints.clone(),
            tls: Some(EtcdTls {
                ca_pem,
                client,
                server_name: tls.server_name.clone(),
            }),
        })
    }
}

#[cfg(test)]
mod tests;
