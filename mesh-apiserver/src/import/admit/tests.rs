use super::*;
use mesh_api::{ClusterId, ClusterName, NodeName, NodeRecord};

fn cn(s: &str) -> ClusterName {
    ClusterName::new(s).unwrap()
}

fn scope() -> RemoteScope {
    RemoteScope {
        cluster: cn("c2"),
        id: ClusterId::new(2).unwrap(),
        pod_cidrs: vec!["10.2.0.0/16".parse().unwrap()],
        foreign: vec![(cn("c1"), vec!["10.1.0.0/16".parse().unwrap()])],
    }
}

fn node(name: &str, cidr: &str) -> Record {
    Record::Node(NodeRecord {
        cluster: cn("c2"),
        name: NodeName::new(name).unwrap(),
        ips: vec!["192.168.77.20".parse().unwrap()],
        pod_cidrs: vec![cidr.parse().unwrap()],
        wireguard_key: None,
    })
}

fn written(v: &Verdict) -> bool {
    matches!(v, Verdict::Write(_))
}

#[test]
fn valid_records_pass_and_refused_ones_are_counted_by_kind_and_reason() {
    let mut a = Admission::new(scope(), Quotas::default());
    assert!(written(&a.upsert(node("n1", "10.2.1.0/24"))));
    assert_eq!(a.upsert(node("evil", "128.0.0.0/1")), Verdict::Nothing);
    assert_eq!(a.upsert(node("evil2", "10.1.0.0/24")), Verdict::Nothing);
    assert_eq!(a.refused_now().nodes, 2);
    let totals = a.totals();
    assert_eq!(totals.len(), 2, "{totals:?}");
    assert!(
        totals
            .iter()
            .any(|t| t.code == RefusalCode::OutsidePodCidrs && t.count == 1)
    );
    assert!(
        totals
            .iter()
            .any(|t| t.code == RefusalCode::ForeignAddress && t.count == 1)
    );
    assert_eq!(a.recent().len(), 2);
    assert_eq!(a.recent()[0].key, "evil");
    // Deleting a refused record writes nothing and clears it from "now".
    assert_eq!(a.delete(Kind::Node, "evil".into()), Verdict::Nothing);
    assert_eq!(a.refused_now().nodes, 1);
    assert!(written(&a.delete(Kind::Node, "n1".into())));
    assert_eq!(a.bytes(), 0);
    assert!(a.degraded().is_none());
}

#[test]
fn a_kept_record_that_turns_invalid_is_withdrawn() {
    let mut a = Admission::new(scope(), Quotas::default());
    assert!(written(&a.upsert(node("n1", "10.2.1.0/24"))));
    assert_eq!(
        a.upsert(node("n1", "128.0.0.0/1")),
        Verdict::Withdraw(BatchOp::Delete(Kind::Node, "n1".into()))
    );
    assert_eq!(a.bytes(), 0);
    // Valid again: cached again.
    assert!(written(&a.upsert(node("n1", "10.2.1.0/24"))));
    assert_eq!(a.refused_now().nodes, 0);
}

#[test]
fn over_quota_degrades_keeps_what_fits_and_admits_again_after_room_is_made() {
    let quotas = Quotas {
        nodes: 2,
        ..Quotas::default()
    };
    let mut a = Admission::new(scope(), quotas);
    assert!(written(&a.upsert(node("n1", "10.2.1.0/24"))));
    assert!(written(&a.upsert(node("n2", "10.2.2.0/24"))));
    // An update of a kept record is not a new record.
    assert!(written(&a.upsert(node("n2", "10.2.3.0/24"))));
    assert_eq!(a.upsert(node("n3", "10.2.4.0/24")), Verdict::Nothing);
    let why = a.degraded().expect("degraded");
    assert!(
        why.contains("over quota") && why.contains("clustermesh.quotas"),
        "{why}"
    );
    assert!(written(&a.delete(Kind::Node, "n1".into())));
    assert!(written(&a.upsert(node("n3", "10.2.4.0/24"))));
    assert!(a.degraded().is_none());
}

#[test]
fn the_byte_quota_counts_every_kept_record() {
    let one = state::encode(&node("n1", "10.2.1.0/24")).len();
    let quotas = Quotas {
        bytes: one * 2,
        ..Quotas::default()
    };
    let mut a = Admission::new(scope(), quotas);
    assert!(written(&a.upsert(node("n1", "10.2.1.0/24"))));
    assert!(written(&a.upsert(node("n2", "10.2.2.0/24"))));
    assert_eq!(a.bytes(), one * 2);
    assert_eq!(a.upsert(node("n3", "10.2.3.0/24")), Verdict::Nothing);
    assert!(a.degraded().unwrap().contains("bytes"));
}
