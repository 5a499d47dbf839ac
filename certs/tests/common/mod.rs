//! Helpers shared by the certificate integration tests.
#![allow(dead_code)]

use std::io;
use std::sync::{Arc, Mutex};

use mesh_api::{ClusterName, NodeName};
use mesh_certs::{CertificateAuthority, IssuedCert, SpiffeId, TlsIdentity, TrustDomain, Validity};
use time::{Duration, OffsetDateTime};

pub fn td() -> TrustDomain {
    TrustDomain::default()
}

pub fn new_ca() -> CertificateAuthority {
    CertificateAuthority::create(td(), Validity::days(30).unwrap()).unwrap()
}

pub fn cluster_id(name: &str) -> SpiffeId {
    SpiffeId::cluster(td(), ClusterName::new(name).unwrap())
}

pub fn node_id(cluster: &str, node: &str) -> SpiffeId {
    SpiffeId::node(
        td(),
        ClusterName::new(cluster).unwrap(),
        NodeName::new(node).unwrap(),
    )
}

pub fn identity(issued: &IssuedCert) -> TlsIdentity {
    TlsIdentity::from_pem(&issued.cert_pem, &issued.key_pem, "cert", "key").unwrap()
}

/// Valid for `from_days`..`to_days` relative to now.
pub fn window(from_days: i64, to_days: i64) -> Validity {
    let now = OffsetDateTime::now_utc();
    Validity::between(
        now + Duration::days(from_days),
        now + Duration::days(to_days),
    )
    .unwrap()
}

/// Captures what tracing logs on this thread.
#[derive(Debug, Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let me = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || me.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }
}

impl io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
