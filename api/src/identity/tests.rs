use super::*;

#[test]
fn cluster_bits() {
    let c = ClusterId::new(3).unwrap();
    let id = Identity::new(c, 300).unwrap();
    assert_eq!(id.get(), (3 << 16) | 300);
    assert_eq!(id.cluster(), Some(c));
    assert_eq!(id.local(), 300);
    assert!(!id.is_reserved());
    assert_eq!(Identity::from_u32(id.get()).unwrap(), id);
    assert_eq!(id.to_string(), "196908 (cluster 3, local 300)");
}

#[test]
fn reserved() {
    for r in ReservedIdentity::ALL {
        let id = Identity::from_u32(r as u32).unwrap();
        assert!(id.is_reserved());
        assert_eq!(id.reserved(), Some(r));
        assert_eq!(id.cluster(), None);
    }
    assert_eq!(
        ReservedIdentity::World.identity().to_string(),
        "2 (reserved:world)"
    );
}

#[test]
fn rejects_malformed_numbers() {
    for (v, why) in [
        (0, "0 is not"),
        (100, "not assigned"),
        (1 << 24, "node-local identity 0"),
        (1 << 25, "bits 25-31"),
        (256, "cluster id"),
        ((5 << 16) | 10, "start at 256"),
    ] {
        let err = Identity::from_u32(v).unwrap_err().to_string();
        assert!(err.contains(why), "{v}: {err}");
    }
    assert!(Identity::new(ClusterId::new(1).unwrap(), 255).is_err());
}

#[test]
fn node_local_cidr_identities() {
    let id = Identity::node_local(70_000).unwrap();
    assert!(id.is_node_local() && !id.is_reserved());
    assert_eq!(
        id.cluster(),
        None,
        "no cluster even when bits 16-23 are set"
    );
    assert_eq!(Identity::from_u32(id.get()).unwrap(), id);
    assert_eq!(
        id.to_string(),
        format!("{} (node-local CIDR)", (1u32 << 24) | 70_000)
    );
    assert!(Identity::node_local(0).is_err());
    assert!(Identity::node_local(1 << 24).is_err());
    assert!(
        !Identity::new(ClusterId::new(3).unwrap(), 300)
            .unwrap()
            .is_node_local()
    );
}
