//! Running commands with errors that say what ran and what it printed.

use std::process::{Command, Output};

/// Runs `program args…`, returning its output whatever the exit status.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot start {program} {}: {e}", args.join(" ")))
}

/// Runs the command and panics with its stderr unless it succeeds; returns stdout.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {} failed ({}): {}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the command; `true` when it exited 0.
pub fn run_status(program: &str, args: &[&str]) -> bool {
    run(program, args).status.success()
}
