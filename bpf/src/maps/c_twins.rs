//! The C headers in `bpf/include/` and their Rust twins agree.
//!
//! Every numeric constant a header defines (`#define NAME <number>` and
//! enum entries) is read by a small parser below. Each one is either paired
//! with its Rust twin (same name, same value, compared both ways: a C name
//! without a Rust twin fails, and so does a Rust variant without a C name),
//! or listed in [`C_ONLY`] with the reason nothing in Rust mirrors it. So a
//! drop reason, verdict, identity or flag added on one side only fails this
//! test, and so does a new family of constants nobody has classified.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use mesh_api::{Identity, ReservedIdentity};

use super::policy::{Direction, PolicyAction};
use super::{CtDirection, DropReason, FlowObservation, FlowVerdict};

/// Constants (by name prefix, or whole name) that only the C side uses,
/// and why no Rust twin exists.
const C_ONLY: &[(&str, &str)] = &[
    (
        "REASON_MAX",
        "size of the mw_metrics array; every DropReason code must be below it (checked below)",
    ),
    (
        "CT_FLAG_",
        "conntrack entry state only the datapath reads and writes",
    ),
    (
        "CT_LIFETIME_",
        "conntrack timeouts the datapath applies; the agent never expires entries",
    ),
    ("TCP_FLAG_", "bits of the TCP header (kernel ABI)"),
    ("ICMP_ECHO_", "ICMP message types (RFC 792)"),
    (
        "NODEPORT_PATH_",
        "return codes of a C helper (where a NodePort backend is reached)",
    ),
    ("PARSE_", "return codes of the C packet parser"),
    ("NAT_", "argument of the C address rewrite helper"),
    (
        "IP_MF",
        "the more-fragments bit of the IPv4 header (RFC 791)",
    ),
    (
        "IP_OFFSET",
        "the fragment-offset mask of the IPv4 header (RFC 791)",
    ),
    ("__always_inline", "a compiler attribute, not a constant"),
];

/// A constant read from a header.
#[derive(Debug, Clone)]
struct CConst {
    header: String,
    /// None: the definition is not a number (e.g. an attribute macro).
    value: Option<i64>,
}

fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("/*") {
            let end = r.find("*/").expect("unterminated /* comment");
            // Keep line structure so #define lines stay lines.
            out.extend(r[..end].chars().filter(|c| *c == '\n'));
            rest = &r[end + 2..];
        } else if let Some(r) = rest.strip_prefix("//") {
            rest = r.find('\n').map_or("", |i| &r[i..]);
        } else {
            let c = rest.chars().next().expect("non-empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// Evaluates a constant expression of integer literals (decimal or hex,
/// with U/L suffixes), parentheses, unary minus, `*`, `+`, `-`, `<<`, `|`.
/// None when it is anything else.
fn eval(expr: &str) -> Option<i64> {
    #[derive(Debug, Clone, PartialEq)]
    enum Tok {
        Num(i64),
        Op(&'static str),
    }
    let mut toks = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_alphanumeric() {
                i += 1;
            }
            let lit = expr[start..i].trim_end_matches(['u', 'U', 'l', 'L']);
            let n = match lit.strip_prefix("0x").or_else(|| lit.strip_prefix("0X")) {
                Some(hex) => i64::from_str_radix(hex, 16).ok()?,
                None => lit.parse().ok()?,
            };
            toks.push(Tok::Num(n));
        } else if expr[i..].starts_with("<<") {
            toks.push(Tok::Op("<<"));
            i += 2;
        } else {
            let op = ["(", ")", "*", "+", "-", "|"]
                .into_iter()
                .find(|op| op.as_bytes()[0] == c)?;
            toks.push(Tok::Op(op));
            i += 1;
        }
    }
    // Precedence climbing: | < << < + - < * < unary.
    fn binary(t: &[Tok], pos: &mut usize, level: usize) -> Option<i64> {
        const LEVELS: [&[&str]; 4] = [&["|"], &["<<"], &["+", "-"], &["*"]];
        if level == LEVELS.len() {
            return unary(t, pos);
        }
        let mut v = binary(t, pos, level + 1)?;
        while let Some(Tok::Op(op)) = t.get(*pos) {
            if !LEVELS[level].contains(op) {
                break;
            }
            *pos += 1;
            let r = binary(t, pos, level + 1)?;
            v = match *op {
                "|" => v | r,
                "<<" => v.checked_shl(u32::try_from(r).ok()?)?,
                "+" => v.checked_add(r)?,
                "-" => v.checked_sub(r)?,
                _ => v.checked_mul(r)?,
            };
        }
        Some(v)
    }
    fn unary(t: &[Tok], pos: &mut usize) -> Option<i64> {
        match t.get(*pos)? {
            Tok::Num(n) => {
                *pos += 1;
                Some(*n)
            }
            Tok::Op("-") => {
                *pos += 1;
                unary(t, pos).map(|v| -v)
            }
            Tok::Op("(") => {
                *pos += 1;
                let v = binary(t, pos, 0)?;
                (t.get(*pos)? == &Tok::Op(")")).then_some(())?;
                *pos += 1;
                Some(v)
            }
            Tok::Op(_) => None,
        }
    }
    let mut pos = 0;
    let v = binary(&toks, &mut pos, 0)?;
    (pos == toks.len()).then_some(v)
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

/// The constants of one header: object-like `#define`s with a body
/// (include guards have none; function-like macros are skipped), and the
/// entries of every `enum` (implicit values count up from the previous).
fn parse_header(header: &str, src: &str, out: &mut BTreeMap<String, CConst>) {
    let src = strip_comments(src);
    let mut add = |name: &str, value: Option<i64>| {
        let prev = out.insert(
            name.to_string(),
            CConst {
                header: header.to_string(),
                value,
            },
        );
        if let Some(p) = prev {
            panic!("{name} is defined in both {} and {header}", p.header);
        }
    };
    for line in src.lines() {
        let Some(def) = line.trim_start().strip_prefix("#define") else {
            continue;
        };
        let def = def.trim_start();
        let end = def
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(def.len());
        let (name, body) = def.split_at(end);
        if body.starts_with('(') {
            continue;
        }
        let body = body.trim();
        if !body.is_empty() {
            add(name, eval(body));
        }
    }
    let mut rest = src.as_str();
    while let Some(at) = rest.find("enum ") {
        let after = &rest[at + 5..];
        rest = after;
        // `enum name {` defines; `enum name field;` only uses one.
        let tag_end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let body = after[tag_end..].trim_start();
        let Some(body) = body.strip_prefix('{') else {
            continue;
        };
        let close = body
            .find('}')
            .unwrap_or_else(|| panic!("{header}: unterminated enum"));
        let mut next = 0;
        for entry in body[..close].split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let (name, value) = match entry.split_once('=') {
                Some((n, v)) => (n.trim(), eval(v.trim())),
                None => (entry, Some(next)),
            };
            assert!(is_ident(name), "{header}: cannot read enum entry {entry:?}");
            add(name, value);
            next = value.map_or(next, |v| v + 1);
        }
        rest = &body[close..];
    }
}

fn c_constants() -> BTreeMap<String, CConst> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let mut out = BTreeMap::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "h"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no headers in {}", dir.display());
    for f in files {
        let src = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let name = f
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        parse_header(&name, &src, &mut out);
    }
    out
}

/// The C name of each Rust twin. The matches are exhaustive, so a variant
/// added in Rust must be named here (and then must exist in C); the lists
/// iterated are each type's `ALL`, the same lists the decoders use.
fn drop_reason(r: DropReason) -> String {
    format!("REASON_{}", r.name().to_ascii_uppercase())
}

fn reserved_identity(r: ReservedIdentity) -> String {
    format!(
        "IDENTITY_{}",
        r.name().to_ascii_uppercase().replace('-', "_")
    )
}

fn flow_verdict(v: FlowVerdict) -> &'static str {
    match v {
        FlowVerdict::Forwarded => "FLOW_VERDICT_FORWARDED",
        FlowVerdict::Dropped => "FLOW_VERDICT_DROPPED",
        FlowVerdict::Translated => "FLOW_VERDICT_TRANSLATED",
        FlowVerdict::Audit => "FLOW_VERDICT_AUDIT",
        FlowVerdict::Unknown(c) => panic!("FlowVerdict::ALL holds Unknown({c})"),
    }
}

fn flow_observation(o: FlowObservation) -> &'static str {
    match o {
        FlowObservation::FromPod => "FLOW_OBS_FROM_POD",
        FlowObservation::ToPod => "FLOW_OBS_TO_POD",
        FlowObservation::Socket => "FLOW_OBS_SOCK",
        FlowObservation::FromNetdev => "FLOW_OBS_FROM_NETDEV",
        FlowObservation::ToNetdev => "FLOW_OBS_TO_NETDEV",
        FlowObservation::Unknown(c) => panic!("FlowObservation::ALL holds Unknown({c})"),
    }
}

fn ct_direction(d: CtDirection) -> &'static str {
    match d {
        CtDirection::Out => "CT_DIR_OUT",
        CtDirection::In => "CT_DIR_IN",
        CtDirection::Service => "CT_DIR_SVC",
        CtDirection::NodePort => "CT_DIR_NODEPORT",
    }
}

fn policy_direction(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "POLICY_DIR_INGRESS",
        Direction::Egress => "POLICY_DIR_EGRESS",
    }
}

fn policy_action(a: PolicyAction) -> &'static str {
    match a {
        PolicyAction::Allow => "POLICY_ALLOW",
        PolicyAction::Deny => "POLICY_DENY",
    }
}

/// One family of twins: the C constants whose names start with `prefix`
/// (and no longer prefix of another family) against the Rust values.
struct Family {
    prefix: &'static str,
    rust: Vec<(String, i64)>,
}

fn families() -> Vec<Family> {
    let fam = |prefix, rust: Vec<(String, i64)>| Family { prefix, rust };
    vec![
        fam(
            "REASON_",
            DropReason::ALL
                .iter()
                .map(|r| (drop_reason(*r), i64::from(r.code())))
                .collect(),
        ),
        fam(
            "IDENTITY_",
            ReservedIdentity::ALL
                .iter()
                .map(|r| (reserved_identity(*r), i64::from(r.identity().get())))
                // 0 is no identity: mesh-api refuses it (checked below).
                .chain([("IDENTITY_UNKNOWN".to_string(), 0)])
                .chain([(
                    "IDENTITY_CLUSTER_PEERS".to_string(),
                    i64::from(Identity::CLUSTER_PEERS.get()),
                )])
                .collect(),
        ),
        fam(
            "FLOW_VERDICT_",
            FlowVerdict::ALL
                .iter()
                .map(|v| (flow_verdict(*v).to_string(), i64::from(v.code())))
                .collect(),
        ),
        fam(
            "FLOW_OBS_",
            FlowObservation::ALL
                .iter()
                .map(|o| (flow_observation(*o).to_string(), i64::from(o.code())))
                .collect(),
        ),
        fam(
            "CT_DIR_",
            CtDirection::ALL
                .iter()
                .map(|d| (ct_direction(*d).to_string(), i64::from(d.code())))
                .collect(),
        ),
        fam(
            "POLICY_DIR_",
            Direction::ALL
                .iter()
                .map(|d| (policy_direction(*d).to_string(), i64::from(d.code())))
                .collect(),
        ),
        fam(
            "POLICY_",
            PolicyAction::ALL
                .iter()
                .map(|a| (policy_action(*a).to_string(), i64::from(a.code())))
                .chain([
                    (
                        "POLICY_ICMP_PORT_BASE".to_string(),
                        i64::from(super::policy::ICMP_PORT_BASE),
                    ),
                    (
                        "POLICY_HOST_ENDPOINT".to_string(),
                        i64::from(super::policy::HOST_ENDPOINT),
                    ),
                ])
                .collect(),
        ),
        fam(
            "IPCACHE_FLAG_",
            vec![(
                "IPCACHE_FLAG_ENCRYPT".into(),
                i64::from(super::ipcache::FLAG_ENCRYPT),
            )],
        ),
        fam(
            "ENCRYPT_CFG_",
            vec![(
                "ENCRYPT_CFG_STRICT".into(),
                i64::from(super::encrypt::CFG_STRICT),
            )],
        ),
        fam(
            "SVC_FLAG_",
            vec![
                (
                    "SVC_FLAG_MAGLEV".into(),
                    i64::from(super::lb::SVC_FLAG_MAGLEV),
                ),
                (
                    "SVC_FLAG_AFFINITY".into(),
                    i64::from(super::lb::SVC_FLAG_AFFINITY),
                ),
            ],
        ),
        fam(
            "MAGLEV_TABLE_SIZE",
            vec![(
                "MAGLEV_TABLE_SIZE".into(),
                i64::try_from(super::raw::MAGLEV_TABLE_SIZE).expect("fits"),
            )],
        ),
        fam(
            "SNAT_DIR_",
            vec![
                (
                    "SNAT_DIR_OUT".into(),
                    i64::from(super::masquerade::SNAT_DIR_OUT),
                ),
                (
                    "SNAT_DIR_IN".into(),
                    i64::from(super::masquerade::SNAT_DIR_IN),
                ),
            ],
        ),
        fam(
            "SNAT_FLAG_",
            vec![
                (
                    "SNAT_FLAG_REPLIED".into(),
                    i64::from(super::masquerade::SNAT_FLAG_REPLIED),
                ),
                (
                    "SNAT_FLAG_CLOSING".into(),
                    i64::from(super::masquerade::SNAT_FLAG_CLOSING),
                ),
            ],
        ),
        fam(
            "MASQ_CFG_",
            vec![(
                "MASQ_CFG_MASQUERADE".into(),
                i64::from(super::masquerade::MASQ_CFG_MASQUERADE),
            )],
        ),
        fam(
            "MASQ_PORT_TRIES",
            vec![(
                "MASQ_PORT_TRIES".into(),
                i64::from(super::masquerade::MASQ_PORT_TRIES),
            )],
        ),
        // The family the encryption map's keys carry (the kernel's AF_INET).
        fam(
            "MW_AF_INET",
            vec![("MW_AF_INET".into(), i64::from(libc::AF_INET))],
        ),
    ]
}

/// Which family or C-only entry claims `name`: the longest prefix wins, so
/// `POLICY_DIR_INGRESS` belongs to `POLICY_DIR_`, not `POLICY_`.
fn claim(name: &str, families: &[Family]) -> Option<&'static str> {
    families
        .iter()
        .map(|f| f.prefix)
        .chain(C_ONLY.iter().map(|(p, _)| *p))
        .filter(|p| name.starts_with(p))
        .max_by_key(|p| p.len())
}

#[test]
fn every_c_constant_has_its_rust_twin_and_every_twin_its_c_constant() {
    let c = c_constants();
    let families = families();
    let mut problems = Vec::new();
    for (name, k) in &c {
        if claim(name, &families).is_none() {
            problems.push(format!(
                "{}: {name} has no Rust twin here and is not listed as C-only: pair it with the Rust value in `families()`, or add it to C_ONLY with the reason",
                k.header
            ));
        }
    }
    for f in &families {
        let rust: BTreeMap<&str, i64> = f.rust.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        assert_eq!(
            rust.len(),
            f.rust.len(),
            "{}: a C name is given twice",
            f.prefix
        );
        let in_c: BTreeSet<&str> = c
            .keys()
            .map(String::as_str)
            .filter(|n| claim(n, &families) == Some(f.prefix))
            .collect();
        for name in &in_c {
            let k = &c[*name];
            match (rust.get(name), k.value) {
                (None, _) => problems.push(format!(
                    "{}: {name} has no Rust twin (add it to the Rust type of {}*)",
                    k.header, f.prefix
                )),
                (Some(_), None) => problems.push(format!(
                    "{}: {name} is not a number this test can read",
                    k.header
                )),
                (Some(r), Some(v)) if *r != v => {
                    problems.push(format!("{}: {name} is {v} in C but {r} in Rust", k.header))
                }
                _ => {}
            }
        }
        for name in rust.keys() {
            if !in_c.contains(name) {
                problems.push(format!(
                    "{name} is a Rust twin with no C constant in bpf/include/ (add the #define or enum entry)"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "C and Rust disagree:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_few_c_only_facts_that_rust_relies_on_hold() {
    let c = c_constants();
    let max = c["REASON_MAX"].value.expect("REASON_MAX is a number");
    for r in DropReason::ALL {
        assert!(
            i64::from(r.code()) < max,
            "{r:?} has code {} but mw_metrics has REASON_MAX = {max} slots",
            r.code()
        );
    }
    assert!(
        Identity::from_u32(0).is_err(),
        "IDENTITY_UNKNOWN (0) must stay no identity in mesh-api"
    );
}

#[test]
fn the_parser_reads_defines_enums_and_expressions() {
    let mut out = BTreeMap::new();
    parse_header(
        "t.h",
        "#ifndef T_H\n#define T_H\n#define A 0x10 /* a */\n#define B (2ULL * 3ULL)\n\
         #define F(x) (x)\n#define N -1\n#define S (1 << 4 | 1)\n#define W inline __attr__\n\
         enum e {\n\tX = 4, // x\n\tY,\n\tZ = 9,\n};\n#endif\n",
        &mut out,
    );
    let got: Vec<(&str, Option<i64>)> = out.iter().map(|(n, k)| (n.as_str(), k.value)).collect();
    assert_eq!(
        got,
        vec![
            ("A", Some(16)),
            ("B", Some(6)),
            ("N", Some(-1)),
            ("S", Some(17)),
            ("W", None),
            ("X", Some(4)),
            ("Y", Some(5)),
            ("Z", Some(9)),
        ]
    );
}
