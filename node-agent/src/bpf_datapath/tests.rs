use super::*;

#[test]
fn mac_text_round_trips_and_bad_macs_are_none() {
    let mac = [0x0a, 0x58, 0xff, 0x00, 0x01, 0xbe];
    assert_eq!(mac_text(mac), "0a:58:ff:00:01:be");
    assert_eq!(parse_mac("0a:58:ff:00:01:be"), Some(mac));
    assert_eq!(parse_mac("0a:58:ff:00:01"), None);
    assert_eq!(parse_mac("zz:58:ff:00:01:be"), None);
}

#[test]
fn sctp_and_ipv6_are_refused_with_the_reason() {
    let e = to_bpf_proto(Protocol::Sctp, "service 10.96.0.1:80/SCTP").unwrap_err();
    assert!(e.to_string().contains("10.96.0.1:80/SCTP"), "{e}");
    let e = v4("fd00::1".parse().unwrap(), "frontend").unwrap_err();
    assert!(format!("{e:?}").contains("IPv4-only"), "{e:?}");
    assert_eq!(
        to_bpf_proto(Protocol::Udp, "x").unwrap(),
        mesh_bpf::Protocol::Udp
    );
    // ICMP comes back (policy entries carry it); other protocols do not.
    assert_eq!(
        from_bpf_proto(mesh_bpf::Protocol::Icmp),
        Some(Protocol::Icmp)
    );
    assert_eq!(from_bpf_proto(mesh_bpf::Protocol::Other(47)), None);
}

#[test]
fn the_icmp_type_port_base_is_the_datapaths() {
    assert_eq!(
        crate::datapath::ICMP_TYPE_PORT_BASE,
        mesh_bpf::ICMP_PORT_BASE
    );
}

#[test]
fn frontend_kinds_are_read_from_frontends_json_or_an_older_nodeports_json() {
    let dir = tempfile::tempdir().unwrap();
    let (file, legacy) = (
        dir.path().join("frontends.json"),
        dir.path().join("nodeports.json"),
    );
    assert!(read_kinds(&file, &legacy).unwrap().is_empty());
    std::fs::write(&legacy, r#"[["192.0.2.1",30080,"TCP"]]"#).unwrap();
    let kinds = read_kinds(&file, &legacy).unwrap();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        [(
            ("192.0.2.1".parse().unwrap(), 30080, Protocol::Tcp),
            FrontendKind::NodePort
        )]
    );
    std::fs::write(&file, r#"[[["198.51.100.7",80,"TCP"],"external-ip"]]"#).unwrap();
    let kinds = read_kinds(&file, &legacy).unwrap();
    assert_eq!(
        kinds.values().collect::<Vec<_>>(),
        [&FrontendKind::ExternalIp]
    );
    std::fs::write(&file, "{").unwrap();
    let e = read_kinds(&file, &legacy).unwrap_err().to_string();
    assert!(
        e.contains("frontends.json") && e.contains("move it away"),
        "{e}"
    );
}
