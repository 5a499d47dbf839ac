//! A real handshake over loopback, shared by the mTLS test binaries.
#![allow(dead_code)]

use std::sync::Arc;

use mesh_api::ClusterName;
use mesh_certs::tls::{self, AccessPolicy, Authorizer};
use mesh_certs::{CertificateAuthority, Refusal, SpiffeId, TrustBundle, Validity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::common::*;

/// Runs one handshake between a server and a client over loopback and
/// returns the server's verdict.
pub async fn handshake(
    server: rustls::ServerConfig,
    authorizer: &Authorizer,
    client: rustls::ClientConfig,
) -> Result<SpiffeId, Refusal> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let auth = authorizer.clone();
    let server_task = tokio::spawn(async move {
        let (tcp, peer) = listener.accept().await.unwrap();
        match acceptor.accept(tcp).await {
            Ok(mut tls) => {
                let id = tls::peer_spiffe_id(tls.get_ref().1.peer_certificates());
                tls.write_all(b"welcome").await.unwrap();
                tls.shutdown().await.ok();
                id.ok_or(Refusal::NoSpiffeId)
            }
            Err(e) => Err(auth.record_handshake_error(&e, &peer.to_string())),
        }
    });
    let connector = TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let client_saw_welcome = match connector
        .connect(tls::server_name("localhost").unwrap(), tcp)
        .await
    {
        Ok(mut tls) => {
            let mut buf = Vec::new();
            tls.read_to_end(&mut buf).await.is_ok() && buf == b"welcome"
        }
        Err(_) => false,
    };
    let verdict = server_task.await.unwrap();
    assert_eq!(
        client_saw_welcome,
        verdict.is_ok(),
        "the client must get data exactly when the server accepted it ({verdict:?})"
    );
    verdict
}

/// The cluster whose mesh-apiserver [`server`] plays.
pub const SERVER_CLUSTER: &str = "c1";

/// One handshake judged from the client's side: Ok when the client accepted
/// the server, else the client's refusal.
pub async fn client_verdict(
    server: rustls::ServerConfig,
    client: rustls::ClientConfig,
) -> Result<(), Refusal> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        if let Ok(mut tls) = acceptor.accept(tcp).await {
            tls.write_all(b"welcome").await.ok();
            tls.shutdown().await.ok();
        }
    });
    let connector = TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let verdict = match connector
        .connect(tls::server_name("localhost").unwrap(), tcp)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => Err(e
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
            .map(Refusal::from_tls_error)
            .unwrap_or_else(|| Refusal::Other {
                detail: e.to_string(),
            })),
    };
    server_task.await.unwrap();
    verdict
}

pub struct Server {
    pub config: rustls::ServerConfig,
    pub authorizer: Authorizer,
}

pub fn server(ca: &CertificateAuthority, bundle: &TrustBundle, policy: AccessPolicy) -> Server {
    let cert = ca
        .issue_cluster_server(
            &cluster_id(SERVER_CLUSTER),
            &["localhost".into(), "127.0.0.1".into()],
            Validity::days(5).unwrap(),
        )
        .unwrap();
    let authorizer = Authorizer::new(td(), policy);
    let config = tls::server_config(identity(&cert), bundle, authorizer.clone()).unwrap();
    Server { config, authorizer }
}

pub fn client(
    issuer: &CertificateAuthority,
    id: &SpiffeId,
    validity: Validity,
    trust: &TrustBundle,
) -> rustls::ClientConfig {
    let cert = issuer.issue_client(id, validity).unwrap();
    tls::client_config(identity(&cert), trust, &cluster_id(SERVER_CLUSTER)).unwrap()
}

pub fn allow(names: &[&str]) -> AccessPolicy {
    AccessPolicy::clusters(names.iter().map(|n| ClusterName::new(*n).unwrap()))
}
