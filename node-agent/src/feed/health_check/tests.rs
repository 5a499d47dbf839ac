use super::*;
use serde_json::json;

fn lb(policy: &str, hc: Option<u16>) -> Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": "shop", "name": "web"},
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": policy,
                 "healthCheckNodePort": hc, "clusterIP": "10.96.0.10",
                 "ports": [{"port": 80}]}
    }))
    .unwrap()
}

fn slice() -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"namespace": "shop", "name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.1.1.5"], "nodeName": "n1"},
            {"addresses": ["10.1.1.6"], "nodeName": "n1", "conditions": {"ready": false}},
            {"addresses": ["10.1.2.5"], "nodeName": "n2"}
        ]
    }))
    .unwrap()
}

#[test]
fn only_local_load_balancers_with_a_port_are_checked_counting_ready_local_endpoints() {
    let checks = health_checks(&[lb("Local", Some(31000))], &[slice()], "n1");
    assert_eq!(checks[&31000].local_endpoints, 1, "ready and on n1");
    let on_n3 = health_checks(&[lb("Local", Some(31000))], &[slice()], "n3");
    assert_eq!(on_n3[&31000].local_endpoints, 0);
    assert!(health_checks(&[lb("Cluster", Some(31000))], &[slice()], "n1").is_empty());
    assert!(health_checks(&[lb("Local", None)], &[slice()], "n1").is_empty());
}

#[test]
fn the_answer_is_200_with_local_endpoints_and_503_without() {
    let mut c = HealthCheck {
        namespace: "shop".into(),
        name: "web".into(),
        local_endpoints: 2,
    };
    let (status, body) = response(Some(&c));
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["localEndpoints"], 2);
    assert_eq!(v["service"]["name"], "web");
    c.local_endpoints = 0;
    assert_eq!(response(Some(&c)).0, 503);
    assert_eq!(response(None).0, 503);
}

#[tokio::test]
async fn ports_open_answer_over_http_and_close_when_the_service_goes() {
    let server = HealthCheckServer::new();
    let check = |n| HealthCheck {
        namespace: "shop".into(),
        name: "web".into(),
        local_endpoints: n,
    };
    // A port below the ephemeral range that is free (tried in turn).
    let start = 21000 + (std::process::id() % 2000) as u16;
    let port = (start..start + 100)
        .find(|p| {
            server.set([(*p, check(1))].into_iter().collect());
            server.ports() == [*p]
        })
        .expect("a free port");
    let get = || async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
        let mut text = String::new();
        s.read_to_string(&mut text).await?;
        Ok::<String, std::io::Error>(text)
    };
    let text = get().await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"localEndpoints\":1"), "{text}");
    server.set([(port, check(0))].into_iter().collect());
    assert!(get().await.unwrap().starts_with("HTTP/1.1 503"));
    server.set(BTreeMap::new());
    assert!(server.ports().is_empty());
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(get().await.is_err(), "closed with the Service");
}
