//! PEM text and the files that hold it.
//!
//! Every write is atomic: the bytes go to a temporary file in the target's
//! directory, are synced, get their mode, and only then replace the target,
//! so a crash or a full disk never leaves a half-written key or bundle.
//! Private keys are written 0600 and refused when others (not the owner or
//! its group) can read or write them. Group read is allowed: Kubernetes
//! projects Secret volumes group-owned by the pod's `fsGroup`, which is how a
//! non-root container reads its key.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// Mode of private key files.
pub const KEY_MODE: u32 = 0o600;
/// Mode of certificate and bundle files.
pub const CERT_MODE: u32 = 0o644;

/// Reads a whole text file, naming it in the error.
pub fn read_text(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a private key file after checking that others cannot read or write
/// it (owner and group may).
pub fn read_key_file(path: &Path) -> Result<String> {
    let meta = fs::metadata(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o007 != 0 {
        return Err(Error::KeyFilePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    read_text(path)
}

/// Writes `contents` to `path` atomically with the given mode.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.unwrap_or_default(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(contents)?;
        // The mode given to open() is filtered by the umask; set it exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Ok(d) = fs::File::open(&dir) {
            // Persist the rename itself; best effort on filesystems that refuse.
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// Parses every certificate in PEM text. `what` names the input in errors.
pub fn parse_certs(text: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|source| Error::MalformedPem {
            what: what.to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(Error::NoPem {
            what: what.to_string(),
            expected: "CERTIFICATE",
        });
    }
    for der in &certs {
        x509_parser::parse_x509_certificate(der).map_err(|e| Error::BadCertificate {
            what: what.to_string(),
            detail: e.to_string(),
        })?;
    }
    Ok(certs)
}

/// Parses the first private key in PEM text for rustls.
pub fn parse_private_key(text: &str, what: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|source| match source {
        pem::Error::NoItemsFound => Error::NoPem {
            what: what.to_string(),
            expected: "PRIVATE KEY",
        },
        source => Error::MalformedPem {
            what: what.to_string(),
            source,
        },
    })
}

/// Parses a private key for signing with rcgen.
pub fn parse_key_pair(text: &str, what: &str) -> Result<rcgen::KeyPair> {
    // Distinguish "not PEM at all" from "PEM but not a usable key".
    parse_private_key(text, what)?;
    rcgen::KeyPair::from_pem(text).map_err(|source| Error::BadKey {
        what: what.to_string(),
        source,
    })
}

/// Encodes DER certificates as PEM text.
pub fn certs_to_pem(certs: &[CertificateDer<'_>]) -> String {
    let mut out = String::new();
    for c in certs {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = BASE64.encode(c.as_ref());
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

#[cfg(test)]
mod tests;
