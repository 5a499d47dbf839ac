use mesh_proto::pb::watch_event::Event;

use super::*;
use crate::store::KeyValue;

#[test]
fn wire_revisions_carry_the_epoch() {
    let w = wire_revision(0xbeef, 12345);
    assert_eq!(split_wire_revision(w), (0xbeef, 12345));
    assert_ne!(wire_revision(1, 5), wire_revision(2, 5));
}

fn put(record: &Record, revision: u64) -> StoreEvent {
    StoreEvent::Put(KeyValue {
        key: state::key_of(record),
        value: state::encode(record),
        mod_revision: revision,
        create_revision: revision,
    })
}

fn svc(global: bool, shared: bool) -> Record {
    Record::Service(mesh_api::ServiceRecord {
        cluster: mesh_api::ClusterName::new("b").unwrap(),
        namespace: "default".into(),
        name: "web".into(),
        cluster_ips: vec![],
        ports: vec![],
        backends: vec![mesh_api::Backend {
            ip: "10.2.1.5".parse().unwrap(),
            ports: vec![],
            ready: true,
            node: None,
            zone: None,
        }],
        options: mesh_api::ServiceMeshOptions {
            global,
            shared,
            ..Default::default()
        },
    })
}

#[test]
fn remote_watchers_see_only_global_services_and_shared_backends() {
    let remote = Scope::Remote { local: "b".into() };
    let all = Kind::ALL.to_vec();
    // Not global: a deletion for remotes (it may have been global before).
    match export_event(&remote, &all, &put(&svc(false, true), 7))
        .unwrap()
        .event
    {
        Some(Event::Delete(d)) => assert_eq!(d.key, "b/default/web"),
        other => panic!("{other:?}"),
    }
    // Local node-agents see it as it is.
    assert!(matches!(
        export_event(&Scope::Local, &all, &put(&svc(false, true), 7))
            .unwrap()
            .event,
        Some(Event::Upsert(_))
    ));
    // Not shared: exported without backends.
    match export_event(&remote, &all, &put(&svc(true, false), 8))
        .unwrap()
        .event
    {
        Some(Event::Upsert(u)) => match u.record {
            Some(mesh_proto::pb::upsert::Record::Service(s)) => assert!(s.backends.is_empty()),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    // Kinds not asked for and markers are skipped.
    assert!(export_event(&remote, &[Kind::Node], &put(&svc(true, true), 9)).is_none());
    let marker = StoreEvent::Put(KeyValue {
        key: state::synced_key("b", Kind::Node),
        value: b"true".to_vec(),
        mod_revision: 10,
        create_revision: 10,
    });
    assert!(export_event(&remote, &all, &marker).is_none());
}
