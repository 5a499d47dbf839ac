use super::*;

fn pool(text: &str) -> Pool {
    Pool::parse(text).unwrap()
}

fn svc(key: &str, current: &[&str]) -> ServiceView {
    ServiceView {
        key: key.into(),
        ours: true,
        requested: None,
        current: current.iter().map(|c| c.parse().unwrap()).collect(),
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn pools_parse_and_bad_ones_say_what_to_write() {
    let p = pool("lab=192.168.77.176/30,10.0.0.8/31");
    assert_eq!(p.name, "lab");
    assert_eq!(
        p.addresses().collect::<Vec<_>>(),
        [
            ip("192.168.77.177"),
            ip("192.168.77.178"),
            ip("10.0.0.8"),
            ip("10.0.0.9")
        ],
        "no network or broadcast address of the /30; both of the /31"
    );
    for (bad, says) in [
        ("192.168.77.176/30", "NAME=CIDR"),
        ("lab=192.168.77.177/30", "did you mean 192.168.77.176/30"),
        ("lab=fd00::/64", "not an IPv4 CIDR"),
        ("l b=10.0.0.0/30", "pool name"),
    ] {
        let e = Pool::parse(bad).unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
    assert!(
        check_pools(&[pool("a=10.0.0.0/29"), pool("b=10.0.0.4/30")])
            .unwrap_err()
            .contains("overlap")
    );
    assert!(
        check_pools(&[pool("a=10.0.0.0/30"), pool("a=10.0.1.0/30")])
            .unwrap_err()
            .contains("twice")
    );
}

#[test]
fn services_get_the_lowest_free_address_and_keep_it() {
    let pools = [pool("lab=192.168.77.176/30")];
    let d = plan(
        &pools,
        &[svc("a/one", &[]), svc("a/two", &["192.168.77.177"])],
    );
    assert_eq!(
        d.into_iter().collect::<Vec<_>>(),
        [(
            "a/one".to_string(),
            Decision::Assign {
                ip: ip("192.168.77.178"),
                pool: "lab".into()
            }
        )],
        "two keeps its address, one gets the next"
    );
}

#[test]
fn an_exhausted_pool_leaves_the_service_pending_naming_the_pool_and_changes_nothing_else() {
    let pools = [pool("lab=192.168.77.176/30")];
    let services = [
        svc("a/one", &["192.168.77.177"]),
        svc("a/two", &["192.168.77.178"]),
        svc("a/three", &[]),
    ];
    let d = plan(&pools, &services);
    assert_eq!(d.len(), 1, "{d:?}");
    let Decision::Pending(why) = &d["a/three"] else {
        panic!("{d:?}")
    };
    assert!(why.contains("pool lab") && why.contains("2 of 2"), "{why}");
    // One is deleted: three gets its address.
    let d = plan(&pools, &services[1..]);
    assert_eq!(
        d["a/three"],
        Decision::Assign {
            ip: ip("192.168.77.177"),
            pool: "lab".into()
        }
    );
}

#[test]
fn requested_addresses_duplicates_others_addresses_and_former_load_balancers() {
    let pools = [pool("lab=192.168.77.176/29")];
    let mut wants = svc("a/wants", &[]);
    wants.requested = Some(ip("192.168.77.180"));
    let mut outside = svc("a/outside", &[]);
    outside.requested = Some(ip("10.9.9.9"));
    let mut former = svc("a/former", &["192.168.77.181"]);
    former.ours = false;
    let mut classed = svc("a/classed", &[]);
    classed.ours = false;
    let theirs = svc("a/theirs", &["203.0.113.5"]); // set by another controller
    let d = plan(
        &pools,
        &[
            wants,
            outside,
            former,
            classed,
            theirs,
            svc("b/first", &["192.168.77.177"]),
            svc("b/second", &["192.168.77.177"]),
        ],
    );
    assert_eq!(
        d["a/wants"],
        Decision::Assign {
            ip: ip("192.168.77.180"),
            pool: "lab".into()
        }
    );
    assert!(matches!(&d["a/outside"], Decision::Pending(w) if w.contains("in no pool (lab)")));
    assert_eq!(d["a/former"], Decision::Release);
    assert!(!d.contains_key("a/classed") && !d.contains_key("a/theirs"));
    assert!(!d.contains_key("b/first"), "the first holder keeps it");
    assert_eq!(
        d["b/second"],
        Decision::Assign {
            ip: ip("192.168.77.178"),
            pool: "lab".into()
        },
        "a duplicate gets a free address"
    );
}

#[test]
fn without_pools_nothing_is_assigned() {
    assert!(plan(&[], &[svc("a/one", &[])]).is_empty());
}
