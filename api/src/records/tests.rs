use super::*;

#[test]
fn wireguard_keys() {
    let k: WireGuardKey = "YGKVUeEXq6KnD4tWIHcIb8AsGq3XlPYBUSHMZ1iEUFE="
        .parse()
        .unwrap();
    assert_eq!(
        k.to_string(),
        "YGKVUeEXq6KnD4tWIHcIb8AsGq3XlPYBUSHMZ1iEUFE="
    );
    let err = "not base64!"
        .parse::<WireGuardKey>()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not base64") && err.contains("44 characters"),
        "{err}"
    );
    let err = "AAAA".parse::<WireGuardKey>().unwrap_err().to_string();
    assert!(err.contains("32 bytes"), "{err}");
}

#[test]
fn ports_and_protocols() {
    assert_eq!(port("svc/http", 80).unwrap(), 80);
    for bad in [0, -1, 65536] {
        let err = port("default/web port http", bad).unwrap_err().to_string();
        assert!(
            err.contains("default/web port http") && err.contains("1-65535"),
            "{err}"
        );
    }
    assert_eq!("UDP".parse::<Protocol>().unwrap(), Protocol::Udp);
    assert_eq!("".parse::<Protocol>().unwrap(), Protocol::Tcp);
    assert!(
        "ICMP"
            .parse::<Protocol>()
            .unwrap_err()
            .to_string()
            .contains("ICMP")
    );
    assert_eq!(Protocol::Sctp.number(), 132);
}
