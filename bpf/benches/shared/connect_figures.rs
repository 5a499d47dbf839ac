//! What the connection benchmarks share: the probe's `connect` figures.

/// One `mesh-bpf-probe connect` run.
#[derive(Debug, Default, Clone, Copy)]
pub struct Figures {
    pub p50_us: f64,
    pub p99_us: f64,
    pub conn_per_s: f64,
    pub failed: u64,
}

/// Reads the probe's `key=value` line (panics, with its output, when the
/// probe failed).
pub fn parse(out: &std::process::Output) -> Figures {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "probe failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut f = Figures::default();
    for kv in text.split_whitespace() {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let v: f64 = v.parse().unwrap_or(f64::NAN);
        match k {
            "p50_us" => f.p50_us = v,
            "p99_us" => f.p99_us = v,
            "conn_per_s" => f.conn_per_s = v,
            "failed" => f.failed = v as u64,
            _ => {}
        }
    }
    f
}
