use super::*;

#[test]
fn greetings_parse_and_garbage_does_not() {
    let id = Identity {
        pod: "shop/web-1".into(),
        node: "c1-n1".into(),
        cluster: "c1".into(),
    };
    let a = parse_greeting(&id.line("10.1.1.5:4000".parse().unwrap())).unwrap();
    assert_eq!(
        (
            a.pod.as_str(),
            a.node.as_str(),
            a.cluster.as_str(),
            a.peer.as_str()
        ),
        ("shop/web-1", "c1-n1", "c1", "10.1.1.5")
    );
    assert!(parse_greeting("HTTP/1.1 200 OK").is_none());
    assert!(parse_greeting("pod=x node=y").is_none());
}

#[test]
fn server_answers_tcp_udp_and_echoes_a_stream_on_loopback() {
    // Bind to a free port first, then serve on it (loopback only).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let id = Identity {
        pod: "t/p".into(),
        node: "n".into(),
        cluster: "c9".into(),
    };
    std::thread::spawn(move || serve(id, port));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let answer = loop {
        match ask_tcp(addr, Duration::from_secs(1)) {
            Ok(a) => break a,
            Err(e) => assert!(Instant::now() < deadline, "server never answered: {e}"),
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(answer.cluster, "c9");
    let (udp, from) = ask_udp(addr, Duration::from_secs(2)).unwrap();
    assert_eq!((udp.pod.as_str(), from), ("t/p", addr));
    let r = stream(addr, Duration::from_millis(300), Duration::from_millis(100));
    assert!(
        !r.broken && r.verified_bytes > 0 && r.new_attempts >= 2 && r.new_failures == 0,
        "{r:?}"
    );
}
