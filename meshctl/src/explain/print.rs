//! Printing an explain report for people (`-o json` prints the report as
//! it is).

use meshctl::report::{ExplainReport, Hop};

/// Prints `r` as hops, backends, flows and the verdict.
pub fn print(r: &ExplainReport) {
    println!("{} → {}", r.source, r.destination);
    println!();
    let width = r
        .hops
        .iter()
        .chain(r.backends.iter().flat_map(|b| b.hops.iter()))
        .map(|h| h.step.len())
        .max()
        .unwrap_or(0);
    let line = |indent: &str, h: &Hop| {
        println!(
            "{indent}{} {:<width$}  {}",
            h.status.mark(),
            h.step,
            h.detail
        );
    };
    for h in &r.hops {
        line("", h);
    }
    for b in &r.backends {
        println!();
        println!(
            "{} backend {}:{}{}{}{}",
            if b.ok { "✔" } else { "✘" },
            b.ip,
            b.port,
            b.pod.as_ref().map(|p| format!("  {p}")).unwrap_or_default(),
            b.cluster
                .as_ref()
                .map(|c| format!("  cluster {c}"))
                .unwrap_or_default(),
            b.node
                .as_ref()
                .map(|n| format!("  node {n}"))
                .unwrap_or_default(),
        );
        for h in &b.hops {
            line("  ", h);
        }
    }
    println!();
    if r.flows.is_empty() {
        println!("no recent flows between them");
    } else {
        println!("last flows:");
        crate::observe::print_table(&r.flows);
    }
    println!();
    println!("{} {}", if r.ok { "✔" } else { "✘" }, r.summary);
}
