//! Shared helpers: start a server (in process, or the binary as the lab
//! runs it: [`binary`]), a kube-rs client for it, kubectl against it
//! ([`kubectl`]), and bounded waits.

#![allow(dead_code)]

pub mod binary;
pub mod kubectl;

use std::time::Duration;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use mesh_test_apiserver::{Config, TestApiServer};

/// Starts a server with `tweak` applied to the local defaults.
pub async fn start(tweak: impl FnOnce(&mut Config)) -> (TestApiServer, Client) {
    let mut cfg = Config::local("lab-c1");
    tweak(&mut cfg);
    let server = TestApiServer::start(cfg).await.expect("server starts");
    let client = client_for(&server).await;
    (server, client)
}

/// A kube-rs client built from the server's kubeconfig, as any user would.
pub async fn client_for(server: &TestApiServer) -> Client {
    let kc = Kubeconfig::from_yaml(&server.kubeconfig()).expect("kubeconfig parses");
    let opts = KubeConfigOptions {
        context: Some(server.context().to_string()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .expect("kubeconfig loads");
    Client::try_from(config).expect("client builds")
}

/// Polls `f` until it returns true or `timeout` passes; panics with `what`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    mesh_testbed::eventually_async(what, timeout, f).await;
}
