use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, UNIX_EPOCH};

use super::*;

fn resolver() -> Resolver {
    Resolver {
        node: "c1-n1".into(),
        cluster: "c1".into(),
        pods: vec![(
            "10.1.1.5".parse().unwrap(),
            Some("shop".into()),
            Some("client".into()),
        )],
        cidrs: vec![
            ("10.1.1.0/24".parse().unwrap(), "c1".into(), "c1-n1".into()),
            (
                "10.2.0.0/16".parse().unwrap(),
                "c2".into(),
                "c2-wide".into(),
            ),
            ("10.2.1.0/24".parse().unwrap(), "c2".into(), "c2-n1".into()),
        ],
    }
}

fn event(verdict: mesh_bpf::FlowVerdict, reason: mesh_bpf::DropReason) -> mesh_bpf::FlowEvent {
    mesh_bpf::FlowEvent {
        ts_ns: 42,
        saddr: Ipv4Addr::new(10, 1, 1, 5),
        daddr: Ipv4Addr::new(10, 2, 1, 9),
        sport: 40000,
        dport: 8080,
        proto: mesh_bpf::Protocol::Tcp,
        verdict,
        observation: mesh_bpf::FlowObservation::FromPod,
        reason,
        src_identity: 0x1_0100,
        dst_identity: 0x2_0100,
        ifindex: 7,
        svc_id: 0,
        rule_id: 0,
    }
}

#[test]
fn records_name_local_pods_and_the_cluster_and_node_of_remote_addresses() {
    let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    let r = resolver().record(
        &event(
            mesh_bpf::FlowVerdict::Forwarded,
            mesh_bpf::DropReason::Forwarded,
        ),
        t,
    );
    assert_eq!(r.time_unix_ms, 1_700_000_000_123);
    assert_eq!(r.verdict, Verdict::Forwarded);
    assert_eq!(r.drop_reason, None);
    assert_eq!(r.observation, "from-pod");
    assert_eq!(r.protocol, "tcp");
    assert_eq!(r.source.display_name(), "shop/client");
    assert_eq!(r.source.cluster.as_deref(), Some("c1"));
    assert_eq!(r.source.node.as_deref(), Some("c1-n1"));
    // The longest prefix names the node.
    assert_eq!(r.destination.cluster.as_deref(), Some("c2"));
    assert_eq!(r.destination.node.as_deref(), Some("c2-n1"));
    assert_eq!(r.destination.pod, None);
    assert_eq!(r.destination.display_name(), "10.2.1.9");
    assert_eq!(r.destination.port, 8080);
}

#[test]
fn dropped_records_carry_the_reason_name_and_unknown_addresses_stay_unnamed() {
    let mut ev = event(
        mesh_bpf::FlowVerdict::Dropped,
        mesh_bpf::DropReason::PolicyDefaultDeny,
    );
    ev.daddr = Ipv4Addr::new(192, 0, 2, 1);
    ev.saddr = Ipv4Addr::UNSPECIFIED;
    let r = resolver().record(&ev, UNIX_EPOCH);
    assert_eq!(r.verdict, Verdict::Dropped);
    assert_eq!(r.drop_reason.as_deref(), Some("policy_default_deny"));
    assert_eq!(r.source.ip, None);
    assert_eq!(r.source.display_name(), "-");
    assert_eq!(r.destination.cluster, None);
    assert_eq!(
        r.destination.ip,
        Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)))
    );
    let unknown = resolver().record(
        &event(
            mesh_bpf::FlowVerdict::Dropped,
            mesh_bpf::DropReason::Unknown(31),
        ),
        UNIX_EPOCH,
    );
    assert_eq!(unknown.drop_reason.as_deref(), Some("unknown_31"));
}

fn flow(verdict: Verdict, ms: u64) -> FlowRecord {
    let mut r = resolver().record(
        &event(
            mesh_bpf::FlowVerdict::Forwarded,
            mesh_bpf::DropReason::Forwarded,
        ),
        UNIX_EPOCH + Duration::from_millis(ms),
    );
    r.verdict = verdict;
    r
}

#[test]
fn filters_match_either_side_and_every_given_field() {
    let f = flow(Verdict::Forwarded, 1000);
    let cases: Vec<(FlowFilter, bool)> = vec![
        (FlowFilter::default(), true),
        (
            FlowFilter {
                namespace: Some("shop".into()),
                ..Default::default()
            },
            true,
        ),
        (
            FlowFilter {
                namespace: Some("other".into()),
                ..Default::default()
            },
            false,
        ),
        (
            FlowFilter {
                pod: Some("client".into()),
                ..Default::default()
            },
            true,
        ),
        (
            FlowFilter {
                pod: Some("shop/client".into()),
                ..Default::default()
            },
            true,
        ),
        (
            FlowFilter {
                pod: Some("other/client".into()),
                ..Default::default()
            },
            false,
        ),
        (
            FlowFilter {
                identity: Some(0x2_0100),
                ..Default::default()
            },
            true,
        ),
        (
            FlowFilter {
                identity: Some(5),
                ..Default::default()
            },
            false,
        ),
        (
            FlowFilter {
                cluster: Some("c2".into()),
                ..Default::default()
            },
            true,
        ),
        (
            FlowFilter {
                cluster: Some("c3".into()),
                ..Default::default()
            },
            false,
        ),
        (
            FlowFilter {
                verdict: Some(Verdict::Dropped),
                ..Default::default()
            },
            false,
        ),
        (
            FlowFilter {
                since: Some(1000),
                ..Default::default()
            },
            true,
        ),
        (
            FlowFilter {
                since: Some(1001),
                ..Default::default()
            },
            false,
        ),
        (
            FlowFilter {
                namespace: Some("shop".into()),
                verdict: Some(Verdict::Forwarded),
                cluster: Some("c3".into()),
                ..Default::default()
            },
            false,
        ),
    ];
    for (filter, want) in cases {
        assert_eq!(filter.matches(&f), want, "{filter:?}");
    }
}

#[test]
fn the_log_is_bounded_and_last_keeps_the_newest_matches() {
    let log = FlowLog::new(3);
    for i in 0..5 {
        let v = if i % 2 == 0 {
            Verdict::Forwarded
        } else {
            Verdict::Dropped
        };
        log.push(flow(v, i));
    }
    assert_eq!(log.total(), 5);
    let all = log.query(&FlowFilter::default());
    assert_eq!(
        all.iter().map(|f| f.time_unix_ms).collect::<Vec<_>>(),
        [2, 3, 4]
    );
    let last = log.query(&FlowFilter {
        last: Some(1),
        verdict: Some(Verdict::Forwarded),
        ..Default::default()
    });
    assert_eq!(last.iter().map(|f| f.time_unix_ms).collect::<Vec<_>>(), [4]);
}

#[test]
fn followers_get_flows_pushed_after_they_subscribe() {
    let log = FlowLog::new(10);
    log.push(flow(Verdict::Forwarded, 1));
    let mut rx = log.subscribe();
    log.push(flow(Verdict::Dropped, 2));
    assert_eq!(rx.try_recv().unwrap().time_unix_ms, 2);
    assert!(rx.try_recv().is_err());
}

#[test]
fn the_query_string_round_trips_through_the_api_parser() {
    let filter = FlowFilter {
        namespace: Some("shop".into()),
        pod: Some("shop/web 1".into()),
        identity: Some(65792),
        verdict: Some(Verdict::Dropped),
        cluster: Some("c2".into()),
        since: Some(17),
        last: Some(5),
        follow: true,
    };
    let q = filter.query();
    assert!(
        q.starts_with('?') && q.contains("pod=shop%2Fweb%201"),
        "{q}"
    );
    let uri: axum::http::Uri = format!("/v1/flows{q}").parse().unwrap();
    let parsed = axum::extract::Query::<FlowFilter>::try_from_uri(&uri)
        .unwrap()
        .0;
    assert_eq!(parsed, filter);
    assert_eq!(FlowFilter::default().query(), "");
    assert_eq!("DROPPED".parse::<Verdict>(), Ok(Verdict::Dropped));
    assert!(
        "sideways"
            .parse::<Verdict>()
            .unwrap_err()
            .contains("forwarded")
    );
}
